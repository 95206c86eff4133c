"""Time-driven upkeep that every worker runs once a minute, and the one schema head it relies on."""

from __future__ import annotations

from sqlalchemy import text

from service.kit.db.engine import new_session, transaction
from tests.conftest import post_redemption


def _status(made) -> str:
    with new_session() as s:
        return s.execute(
            text("SELECT status FROM redemptions WHERE id = :id"), {"id": made.json()["id"]}
        ).scalar_one()


def test_the_migrations_have_one_head():
    from alembic.script import ScriptDirectory

    from service.kit.db.migrate import alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_heads() == ["0017_holders"]


def test_the_migrations_build_the_schema_the_models_describe(services):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from service.kit.db.engine import Base, get_engine

    with get_engine().connect() as conn:
        assert (
            compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            == []
        )


def test_migration_0005_indexes_the_provider_ids_of_sms_sent_before_it(client, keys):
    """Receipts for SMS sent before the upgrade still find them."""
    from alembic import command

    from service.delivery.service import apply_receipt
    from service.kit.db.migrate import alembic_config
    from tests.conftest import import_codes_for

    import_codes_for("ARAY-CINEMA-2000", 1)
    made = post_redemption(client, keys, offer="cinema-2000", points=2000)
    with transaction() as s:  # as the code before 0005 left a sent message: the ids in the array only
        s.execute(
            text(
                "INSERT INTO sms_messages (redemption_id, send, msisdn, status, provider,"
                " provider_message_ids,"
                " segments, deadline_at) SELECT id, 0, msisdn, 'sent', 'smpp', '{A1,A2}', 2, now() + interval"
                " '1 day' FROM redemptions"
            )
        )
        s.execute(text("UPDATE redemptions SET status = 'sent'"))
    config = alembic_config()  # the test database, from DATABASE_URL
    try:
        command.downgrade(config, "0004")
    finally:
        command.upgrade(config, "heads")
    with new_session() as s:
        assert s.execute(
            text("SELECT provider, provider_message_id FROM sms_provider_messages ORDER BY 2")
        ).all() == [("smpp", "A1"), ("smpp", "A2")]
    apply_receipt("smpp", "A1", "DELIVRD")
    apply_receipt("smpp", "A2", "DELIVRD")
    assert _status(made) == "delivered"


def test_an_sms_a_worker_of_the_previous_release_recorded_sent_still_takes_its_receipts(client, keys):
    """During a rolling upgrade, workers that predate sms_provider_messages write only the array."""
    from service.delivery.service import apply_receipt
    from tests.conftest import import_codes_for

    import_codes_for("ARAY-CINEMA-2000", 1)
    made = post_redemption(client, keys, offer="cinema-2000", points=2000)
    with transaction() as s:
        s.execute(
            text(
                "INSERT INTO sms_messages (redemption_id, send, msisdn, status, segments, deadline_at)"
                " SELECT id, 0, msisdn, 'submitting', 1, now() + interval '1 day' FROM redemptions"
            )
        )
        s.execute(
            text("UPDATE sms_messages SET status = 'sent', provider = 'smpp', provider_message_ids = '{B7}'")
        )
        s.execute(text("UPDATE redemptions SET status = 'sent'"))
    apply_receipt("smpp", "B7", "DELIVRD")
    assert _status(made) == "delivered"


def test_housekeeping_purges_expired_idempotency_keys_and_keeps_live_ones(client, keys):
    from workers.housekeeping import housekeeping

    post_redemption(client, keys, offer="gift-card-5000", points=5000, key="old-key")
    post_redemption(client, keys, offer="gift-card-5000", points=5000, key="live-key", msisdn="87015556677")
    with transaction() as s:
        s.execute(
            text("UPDATE idempotency_keys SET expires_at = now() - interval '1 minute' WHERE key = 'old-key'")
        )
    assert housekeeping()["idempotency_keys_purged"] == 1
    with new_session() as s:
        assert s.execute(text("SELECT key FROM idempotency_keys")).scalars().all() == ["live-key"]


def test_housekeeping_expires_cards_past_their_date_with_breakage(client, keys):
    from workers.housekeeping import housekeeping

    post_redemption(client, keys, offer="gift-card-5000", points=5000)
    with transaction() as s:
        s.execute(text("UPDATE cards SET expires_at = now() - interval '1 day'"))
    assert housekeeping()["cards_expired"] == 1
    with new_session() as s:
        assert s.execute(text("SELECT status FROM cards")).scalar_one() == "expired"
        assert (
            s.execute(
                text("SELECT count(*) FROM reconciliation_records WHERE type = 'breakage'")
            ).scalar_one()
            == 1
        )
    assert housekeeping()["cards_expired"] == 0  # idempotent
