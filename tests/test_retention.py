"""Retention (issue 28): the housekeeping removes published outbox rows, delivered SMS's provider ids
and finished webhook events older than RETENTION_DAYS, in bounded batches; young and unfinished rows
stay, and reconciliation records, redemptions and cards are never removed."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from service.kit.config import reset_settings_cache
from service.kit.db.engine import new_session, transaction
from tests.conftest import import_codes_for, post_redemption, table_counts

NEVER = ("redemptions", "reconciliation_records", "cards", "codes", "sms_messages")


@pytest.fixture
def history(client, keys):
    """Two redemptions (a code and a card) made "a year ago", and beside them old and young rows of
    every kind retention looks at, finished and not."""
    import_codes_for("ARAY-CINEMA-2000", 1)
    assert post_redemption(client, keys).status_code == 201
    assert post_redemption(client, keys, offer="gift-card-5000", points=5000).status_code == 201
    with transaction() as s:
        s.execute(text("DELETE FROM outbox"))
        s.execute(text("UPDATE redemptions SET created_at = current_date - 365"))
        s.execute(text("SET LOCAL session_replication_role = replica"))  # past the append-only trigger
        s.execute(text("UPDATE reconciliation_records SET occurred_at = current_date - 365"))
        s.execute(text("SET LOCAL session_replication_role = DEFAULT"))
        s.execute(
            text(
                "INSERT INTO outbox (message_id, queue, actor, payload, created_at, published_at) VALUES"
                " (uuid7(), 'q', 'old-published', '{}', current_date - 40, current_date - 40),"
                " (uuid7(), 'q', 'young-published', '{}', current_date - 20, current_date - 20),"
                " (uuid7(), 'q', 'old-unpublished', '{}', current_date - 40, NULL)"
            )
        )
        # one redemption's SMS: delivered 40 days ago, delivered 20 days ago, sent 40 days ago (no
        # receipt yet), failed 40 days ago; each with a provider id (the trigger of 0005 indexes them)
        s.execute(
            text(
                "INSERT INTO sms_messages (redemption_id, send, msisdn, status, provider,"
                " provider_message_ids, deadline_at, done_at)"
                " SELECT r.id, v.send, r.msisdn, v.status, 'smpp', ARRAY[v.pid],"
                " now(), current_date - v.age FROM (SELECT id, msisdn FROM redemptions LIMIT 1) r,"
                " (VALUES (0, 'delivered', 'old-delivered', 40),"
                " (1, 'delivered', 'young-delivered', 20),"
                " (2, 'sent', 'old-sent', 40),"
                " (3, 'failed', 'old-failed', 40)) AS v(send, status, pid, age)"
            )
        )
        s.execute(text("UPDATE sms_messages SET done_at = NULL WHERE status = 'sent'"))
        program = s.execute(text("SELECT min(id) FROM programs")).scalar_one()
        s.execute(
            text(
                "INSERT INTO webhook_events (id, program_id, type, payload, created_at, delivered_at,"
                " given_up_at) VALUES"
                " (uuid7(), :p, 'old-delivered', '{}', current_date - 41, current_date - 40, NULL),"
                " (uuid7(), :p, 'old-given-up', '{}', current_date - 42, NULL, current_date - 41),"
                " (uuid7(), :p, 'old-pending', '{}', current_date - 40, NULL, NULL),"
                " (uuid7(), :p, 'young-delivered', '{}', current_date - 20, current_date - 20,"
                " NULL)"
            ),
            {"p": program},
        )
        s.execute(
            text(
                "INSERT INTO webhook_attempts (event_id, attempted_at, status_code)"
                " SELECT id, created_at, 200 FROM webhook_events"
            )
        )
    return table_counts(*NEVER)


def _column(sql: str) -> list:
    with new_session() as s:
        return sorted(s.execute(text(sql)).scalars().all())


def test_old_finished_rows_go_and_young_or_unfinished_ones_stay(history):
    from workers.housekeeping import housekeeping

    removed = housekeeping()
    assert (
        removed["outbox_purged"],
        removed["sms_provider_ids_purged"],
        removed["webhook_events_purged"],
    ) == (
        1,
        1,
        2,
    )
    assert _column("SELECT actor FROM outbox WHERE queue = 'q'") == ["old-unpublished", "young-published"]
    assert _column("SELECT provider_message_id FROM sms_provider_messages") == [
        "old-failed",
        "old-sent",
        "young-delivered",
    ]
    assert _column("SELECT type FROM webhook_events WHERE type NOT LIKE '%.%'") == [
        "old-pending",
        "young-delivered",
    ]
    assert len(_column("SELECT event_id FROM webhook_attempts")) == 2
    # never removed, however old: the finance's records, redemptions, cards (and codes, and the SMS
    # themselves: the redemption's history keeps its messages, only their provider ids go)
    assert table_counts(*NEVER) == history
    # a second run finds nothing more and walks past nothing it did before
    again = housekeeping()
    assert (again["outbox_purged"], again["sms_provider_ids_purged"], again["webhook_events_purged"]) == (
        0,
        0,
        0,
    )


def test_the_retention_is_a_setting(history, monkeypatch):
    from workers.housekeeping import retention

    monkeypatch.setenv("RETENTION_DAYS", "10")
    reset_settings_cache()
    try:
        assert retention() == {"outbox_purged": 2, "sms_provider_ids_purged": 2, "webhook_events_purged": 3}
    finally:
        monkeypatch.delenv("RETENTION_DAYS")
        reset_settings_cache()
    assert _column("SELECT actor FROM outbox WHERE queue = 'q'") == ["old-unpublished"]
    assert table_counts(*NEVER) == history


def test_a_run_removes_at_most_its_batches(db, monkeypatch):
    from workers.housekeeping import retention

    with transaction() as s:
        s.execute(
            text(
                "INSERT INTO outbox (message_id, queue, actor, payload, created_at, published_at)"
                " SELECT uuid7(), 'q', 'a', '{}', current_date - 60,"
                " current_date - 60 + i * interval '1 second'"
                " FROM generate_series(1, 7) AS i"
            )
        )
    monkeypatch.setenv("RETENTION_BATCH", "2")
    monkeypatch.setenv("RETENTION_BATCHES", "2")
    reset_settings_cache()
    try:
        assert [retention()["outbox_purged"] for _ in range(3)] == [4, 3, 0]
    finally:
        monkeypatch.delenv("RETENTION_BATCH")
        monkeypatch.delenv("RETENTION_BATCHES")
        reset_settings_cache()
    assert table_counts("outbox")["outbox"] == 0


def test_one_batch_is_bounded_and_oldest_first(db):
    from service.kit.messaging.outbox import purge_published

    with transaction() as s:
        s.execute(
            text(
                "INSERT INTO outbox (message_id, queue, actor, payload, published_at)"
                " SELECT uuid7(), 'q', 'a' || i, '{}', current_date - 60 + i * interval '1 second'"
                " FROM generate_series(1, 5) AS i"
            )
        )
    from datetime import UTC, datetime, timedelta

    from service.kit.db.engine import driver

    with transaction() as s:
        assert purge_published(driver(s), before=datetime.now(UTC) - timedelta(days=30), limit=2) == 2
    assert _column("SELECT actor FROM outbox WHERE queue = 'q'") == ["a3", "a4", "a5"]
