"""High-volume unique keys are time-ordered (UUIDv7, issue 28): the outbox's message_id, webhook
events and their outbox rows; the database's uuid7() (migration 0021) has the helper's layout."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from sqlalchemy import text

from service.kit.db.engine import driver, new_session, transaction
from tests.conftest import import_codes_for, post_redemption


def _millis(value: uuid.UUID) -> int:
    return int.from_bytes(value.bytes[:6], "big")


def test_the_database_makes_version_7_ids_in_time_order(db):
    before = time.time_ns() // 1_000_000
    ids = []
    with new_session() as s:
        for _ in range(3):
            ids.append(s.execute(text("SELECT uuid7()")).scalar_one())
            time.sleep(0.002)
    after = time.time_ns() // 1_000_000
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert before - 1000 <= _millis(ids[0]) <= _millis(ids[-1]) <= after + 1000  # the server's clock


def test_a_redemptions_outbox_row_has_a_time_ordered_message_id(client, keys):
    import_codes_for("ARAY-CINEMA-2000", 2)
    for _ in range(2):
        assert post_redemption(client, keys).status_code == 201
        time.sleep(0.002)
    with new_session() as s:
        ids = s.execute(text("SELECT message_id FROM outbox ORDER BY id")).scalars().all()
    assert [i.version for i in ids] == [7, 7] and ids == sorted(ids)


def test_a_webhook_event_and_its_outbox_row_have_time_ordered_ids(demo_catalog):
    from service.events.webhooks import Event, emit_many

    with new_session() as s:
        program = s.execute(text("SELECT min(id) FROM programs")).scalar_one()
    with transaction() as session:
        emit_many(
            driver(session),
            [Event(program, "https://example.test/hook", None, "stock.low", {"sku": "X"})],
            now=datetime.now(UTC),
        )
    with new_session() as s:
        event_id = s.execute(text("SELECT id FROM webhook_events")).scalar_one()
        message_id = s.execute(text("SELECT message_id FROM outbox")).scalar_one()
    assert event_id.version == 7 and message_id.version == 7


def test_an_outbox_row_written_through_the_model_has_a_time_ordered_message_id(db):
    from service.kit.messaging.outbox import OutboxMessage

    with transaction() as session:
        session.add(OutboxMessage(queue="q", actor="a", payload={}))
    with new_session() as s:
        assert s.execute(text("SELECT message_id FROM outbox")).scalar_one().version == 7
