"""Fixtures of the console tests: staff accounts made by the same function as `rewards staff create`."""

from __future__ import annotations

import pytest

from tests.console.helpers import PASSWORD, StaffAccounts


@pytest.fixture(scope="session")
def one_hash_per_password():
    """Each test makes six accounts with one password: argon2 (about 60 ms a hash, far more on a busy
    machine) runs once per password for the whole session; the stored hash is a real argon2id hash,
    and sign-in verifies it as always."""
    from service.console import accounts

    class OneHashPerPassword:
        def __init__(self, hasher):
            self.hasher = hasher
            self.made: dict[str, str] = {}

        def hash(self, password: str, **kwargs) -> str:
            if password not in self.made:
                self.made[password] = self.hasher.hash(password, **kwargs)
            return self.made[password]

        def __getattr__(self, name: str):
            return getattr(self.hasher, name)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(accounts, "_hasher", OneHashPerPassword(accounts._hasher))
        yield


@pytest.fixture
def staff(demo_catalog, one_hash_per_password) -> StaffAccounts:
    from service.console.accounts import create_account
    from service.kit.db.engine import transaction

    accounts = StaffAccounts()
    with transaction() as s:
        create_account(s, email=accounts.support, password=PASSWORD, role="support")
        create_account(
            s, email=accounts.support_business, password=PASSWORD, role="support", programs=["business"]
        )
        create_account(s, email=accounts.finance, password=PASSWORD, role="finance")
        create_account(s, email=accounts.partner, password=PASSWORD, role="partner", partner="aray-cinema")
        create_account(
            s, email=accounts.other_partner, password=PASSWORD, role="partner", partner="kitap-books"
        )
        create_account(s, email=accounts.admin, password=PASSWORD, role="admin")
    return accounts
