"""Time-driven upkeep that every worker runs once a minute, and the one schema head it relies on."""
from __future__ import annotations

from sqlalchemy import text

from service.db import new_session, transaction
from tests.conftest import post_redemption


def test_the_migrations_have_one_head():
    from alembic.script import ScriptDirectory

    from service.migrate import alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == ["0004"]


def test_housekeeping_purges_expired_idempotency_keys_and_keeps_live_ones(client, keys):
    from service.outbox import housekeeping

    post_redemption(client, keys, offer="gift-card-5000", points=5000, key="old-key")
    post_redemption(client, keys, offer="gift-card-5000", points=5000, key="live-key", msisdn="87015556677")
    with transaction() as s:
        s.execute(text("UPDATE idempotency_keys SET expires_at = now() - interval '1 minute' WHERE key = 'old-key'"))
    assert housekeeping()["idempotency_keys_purged"] == 1
    with new_session() as s:
        assert s.execute(text("SELECT key FROM idempotency_keys")).scalars().all() == ["live-key"]


def test_housekeeping_expires_cards_past_their_date_with_breakage(client, keys):
    from service.outbox import housekeeping

    post_redemption(client, keys, offer="gift-card-5000", points=5000)
    with transaction() as s:
        s.execute(text("UPDATE cards SET expires_at = now() - interval '1 day'"))
    assert housekeeping()["cards_expired"] == 1
    with new_session() as s:
        assert s.execute(text("SELECT status FROM cards")).scalar_one() == "expired"
        assert s.execute(text("SELECT count(*) FROM reconciliation_records WHERE type = 'breakage'")).scalar_one() == 1
    assert housekeeping()["cards_expired"] == 0  # idempotent
