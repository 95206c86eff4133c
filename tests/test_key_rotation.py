"""Rotating the encryption key: ENCRYPTION_KEYS holds the new key first and the old one after it;
`rewards keys rotate-encryption` re-encrypts every secret at rest in batches, survives being killed
halfway and resumes; afterwards the old key can go, and every code is still redeemed, sent and
exported correctly, with fingerprints that never changed (dedupe still works)."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from service.kit.db.engine import new_session, transaction
from service.kit.security.crypto import Keyring, derive, key_id_of, parse_keys
from tests.conftest import TEST_ENCRYPTION_KEY, import_codes_for

NEW_KEY = base64.b64encode(b"n" * 32).decode()
OLD_ID, NEW_ID = key_id_of(b"k" * 32), key_id_of(b"n" * 32)
CODES = 10_000
SKU = "ARAY-CINEMA-2000"


def _codes() -> list[str]:
    return [f"ROT-{i:05d}-{uuid.uuid5(uuid.NAMESPACE_OID, str(i)).hex[:8].upper()}" for i in range(CODES)]


@pytest.fixture
def use_keys(monkeypatch):
    """Sets ENCRYPTION_KEYS for this process and the commands it starts; the test's keys leave with it."""
    from service.kit.runtime import _reset_caches

    def use(value: str) -> dict[str, str]:
        monkeypatch.setenv("ENCRYPTION_KEYS", value)
        _reset_caches()
        return {**os.environ, "ENCRYPTION_KEYS": value}

    yield use
    monkeypatch.undo()
    _reset_caches()


def _rewards(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _codes_by_key() -> dict[str | None, int]:
    with new_session() as s:
        return dict(s.execute(text("SELECT key_id, count(*) FROM codes GROUP BY key_id")).all())


def test_key_ids_are_derived_from_the_keys_and_the_first_key_is_current():
    keyring = Keyring.of(parse_keys(f"{NEW_KEY}, {TEST_ENCRYPTION_KEY}"))
    assert keyring.current == NEW_ID and keyring.ids == (NEW_ID, OLD_ID)
    blob = Keyring.of(parse_keys(TEST_ENCRYPTION_KEY)).encrypt(b"1234", b"pin")
    # read under its key id, and (a row from before key ids) by trying each key
    assert keyring.decrypt(blob, b"pin", OLD_ID) == keyring.decrypt(blob, b"pin", None) == b"1234"


@pytest.mark.parametrize("value", ["", "not-base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_key_list_is_refused(value):
    with pytest.raises(ValueError):
        parse_keys(value)


def test_an_interrupted_rotation_of_10000_codes_resumes_and_every_code_is_redeemed_and_exported(
    demo_catalog, use_keys, tmp_path: Path
):
    from service.catalog.snapshot import invalidate_snapshot
    from service.delivery.providers import FileProvider
    from service.delivery.service import Job, deliver_many
    from service.kit.security.crypto import get_vault
    from service.redemptions.schemas import RedemptionIn
    from service.redemptions.service import Scope, redeem

    codes = _codes()
    import_codes_for(SKU, codes)  # under the old key alone (ENCRYPTION_KEY of the test session)
    original_fingerprint_key = get_vault().fingerprint_key
    assert original_fingerprint_key == derive(b"k" * 32, b"fingerprint")  # what earlier releases used
    assert _codes_by_key() == {OLD_ID: CODES}

    # Phase 1 of the runbook was every pod learning the new key; now it is current.
    env = use_keys(f"{NEW_KEY},{TEST_ENCRYPTION_KEY}")
    first = _rewards("keys", "rotate-encryption", "--batch-size", "250", "--pause", "0.05", env=env)
    deadline = time.monotonic() + 120
    while _codes_by_key().get(NEW_ID, 0) < CODES // 2:
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the rotation made no progress"
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # a pod killed mid-batch: its transaction rolls back
    first.wait(timeout=10)
    halfway = _codes_by_key()
    assert set(halfway) == {OLD_ID, NEW_ID} and sum(halfway.values()) == CODES
    assert CODES // 2 <= halfway[NEW_ID] < CODES

    resumed = _rewards("keys", "rotate-encryption", "--batch-size", "1000", env=env)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["rotated"]["codes"] == halfway[OLD_ID]  # only what was left
    assert set(summary["remaining"].values()) == {0}
    assert _codes_by_key() == {NEW_ID: CODES}

    # The old key is gone from the configuration: everything must read under the new one alone.
    use_keys(NEW_KEY)
    assert get_vault().fingerprint_key == original_fingerprint_key  # re-wrapped, never replaced
    with transaction() as s:  # the budget would stop 10,000 redemptions of 2,000 in a month
        s.execute(text("UPDATE programs SET monthly_budget_minor = NULL, webhook_url = NULL"))
        s.execute(text("UPDATE offers SET limit_per_day = NULL, limit_per_month = NULL"))
    invalidate_snapshot()
    redeemed = []
    for start in range(0, CODES, 500):
        with transaction() as session:
            for i in range(start, min(start + 500, CODES)):
                request = RedemptionIn(
                    program="mobile-bonus",
                    tariff="basic",
                    offer="cinema-2000",
                    msisdn=f"8701{i:07d}",
                    points=2000,
                    external_id=f"rotation-{i}",
                )
                redeemed.append(redeem(session, request, scope=Scope(None), api_key_id=None).id)
    assert len(redeemed) == CODES

    sms_file = tmp_path / "sms.jsonl"
    provider = FileProvider(sms_file)
    for start in range(0, CODES, 200):
        outcomes = deliver_many([Job(r, 0) for r in redeemed[start : start + 200]], provider=provider)
        assert {o.result.value for o in outcomes.values()} == {"sent"}
    sent_codes = set()
    for line in sms_file.read_text(encoding="utf-8").splitlines():
        text_ = json.loads(line)["text"]
        sent_codes.update(c for c in text_.replace(".", " ").split() if c.startswith("ROT-"))
    assert sent_codes == set(codes)  # every subscriber got a code, and each code exactly once

    export = tmp_path / "records.csv"
    done = _rewards(
        "export", "--output", str(export), "--type", "issue", env={**env, "ENCRYPTION_KEYS": NEW_KEY}
    )
    assert done.wait(timeout=120) == 0, done.communicate()
    with export.open(encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    expected = {
        hmac.new(original_fingerprint_key, c.encode(), hashlib.sha256).hexdigest(): c[-4:] for c in codes
    }
    exported = {row["code_fingerprint"]: row["code_last4"] for row in rows}
    assert exported == expected

    with transaction() as s:  # the same file again: fingerprints still match, nothing is added
        from service.pools.service import RawLine, import_codes

        again = import_codes(s, SKU, [RawLine(i + 1, c) for i, c in enumerate(codes)], source="test")
    assert (again.accepted, again.duplicates) == (0, CODES)


def test_a_rotation_moves_cards_webhook_secrets_and_the_fingerprint_key_too(client, keys, use_keys):
    from service.cards.lockout import CardClient
    from service.cards.service import verify
    from service.events.webhooks import program_secret
    from service.kit.security.rotation import remaining, rotate, usage
    from tests.test_cards import issue_card

    card = issue_card(client, keys)
    secret = program_secret("mobile-bonus")
    use_keys(f"{NEW_KEY},{TEST_ENCRYPTION_KEY}")
    assert remaining()["cards"] == 1 and remaining()["program_webhook_secrets"] == 1
    done = rotate(batch_size=2)
    assert done["cards"] == 1 and done["program_webhook_secrets"] == 1 and done["vault_keys"] == 1
    assert set(remaining().values()) == {0}
    assert {key for by_key in usage().values() for key in by_key} == {NEW_ID}
    use_keys(NEW_KEY)  # the old key gone
    assert program_secret("mobile-bonus") == secret
    with transaction() as s:  # the card is found by its fingerprint and its PIN read under the new key
        checked = verify(
            s,
            card.number,
            card.pin,
            partner=None,
            now=datetime.now(UTC),
            api_key_id=None,
            client=CardClient.staff("test"),
        )
    assert checked.status == "active" and checked.balance.amount == "5000.00"
