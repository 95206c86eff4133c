"""Fixtures of the console tests: staff accounts made by the same function as `rewards staff create`."""

from __future__ import annotations

import pytest

from tests.console.helpers import PASSWORD, StaffAccounts


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
