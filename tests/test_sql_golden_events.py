"""Golden tests of the events package's statements (service/events/sql/*.sql): each one runs against
PostgreSQL with realistic parameters, and the rows or the row count it gives are the ones it should.
The loader (service/kit/db/sqlfiles.py) is held to its rules too."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from service.kit.db import sqlfiles
from service.kit.db.engine import batch, driver, transaction

SQL = sqlfiles.load("service.events")
NOW = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
URL = "https://loyalty.example/hooks/rewards"


@dataclass
class Ctx:
    db: psycopg.Connection[Any]
    program_id: int
    program_code: str


@pytest.fixture
def ctx(demo_catalog: object) -> Iterator[Ctx]:
    with transaction() as session:
        db = driver(session)
        row = db.execute(
            "UPDATE programs SET webhook_url = %(url)s WHERE code = 'mobile-bonus' RETURNING id, code",
            {"url": URL},
        ).fetchone()
        assert row is not None
        yield Ctx(db, row[0], row[1])


def _rows(db: psycopg.Connection[Any], sql: str, params: dict[str, object]) -> list[dict[str, Any]]:
    return db.cursor(row_factory=dict_row).execute(sql, params).fetchall()


def _secret(ctx: Ctx, secret: bytes, *, created: datetime, expires: datetime | None = None) -> None:
    ctx.db.execute(
        "INSERT INTO program_webhook_secrets (program_id, secret_enc, key_id, created_at, expires_at)"
        " VALUES (%(p)s, %(s)s, 'k1', %(c)s, %(e)s)",
        {"p": ctx.program_id, "s": secret, "c": created, "e": expires},
    )


def _event(
    ctx: Ctx, *, created: datetime, type_: str = "redemption.sent", sandbox: bool = False
) -> uuid.UUID:
    event_id = uuid.uuid4()
    payload = {"id": str(event_id), "type": type_, "created_at": created.isoformat(), "data": {"n": 1}}
    ctx.db.execute(
        "INSERT INTO webhook_events (id, program_id, sandbox, type, payload, created_at)"
        " VALUES (%(id)s, %(p)s, %(sandbox)s, %(type)s, %(payload)s::jsonb, %(c)s)",
        {
            "id": event_id,
            "p": ctx.program_id,
            "sandbox": sandbox,
            "type": type_,
            "payload": json.dumps(payload),
            "c": created,
        },
    )
    return event_id


def _attempt(
    ctx: Ctx, event_id: uuid.UUID, at: datetime, status: int | None, error: str | None = None
) -> None:
    ctx.db.execute(
        "INSERT INTO webhook_attempts (event_id, attempted_at, status_code, error, duration_ms)"
        " VALUES (%(e)s, %(at)s, %(s)s, %(err)s, 12)",
        {"e": event_id, "at": at, "s": status, "err": error},
    )


def test_the_loader_reads_every_statement_of_the_package() -> None:
    files = {p.stem for p in (Path(__file__).parents[1] / "service/events/sql").glob("*.sql")}
    assert set(SQL) == files
    assert all(SQL[name] == SQL[name].strip() and "%s" not in SQL[name] for name in SQL)
    assert sqlfiles.load("service.events") is SQL  # read once


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("SELECT 1 WHERE id = %s", "named placeholders"),
        ("-- 100 % sure\nSELECT 1", "comment with a % sign"),
        ("", "empty"),
    ],
)
def test_the_loader_refuses_positional_placeholders_percent_signs_in_comments_and_empty_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, refused: str
) -> None:
    package = tmp_path / f"golden_pkg_{uuid.uuid4().hex}"
    (package / "sql").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sql" / "bad.sql").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(sqlfiles.SqlFileError, match=refused):
        sqlfiles.load(package.name)


def test_first_secret_stores_one_and_only_when_the_program_has_none(ctx: Ctx) -> None:
    params = {"program_id": ctx.program_id, "secret_enc": b"sealed-1", "key_id": "k1", "now": NOW}
    assert ctx.db.execute(SQL["first_secret"], params).rowcount == 1
    assert ctx.db.execute(SQL["first_secret"], {**params, "secret_enc": b"sealed-2"}).rowcount == 0
    rows = _rows(ctx.db, "SELECT secret_enc, key_id, created_at, expires_at FROM program_webhook_secrets", {})
    assert rows == [{"secret_enc": b"sealed-1", "key_id": "k1", "created_at": NOW, "expires_at": None}]


def test_secrets_in_force_are_the_open_ones_and_those_in_their_overlap_newest_first(ctx: Ctx) -> None:
    _secret(ctx, b"expired", created=NOW - timedelta(days=30), expires=NOW - timedelta(seconds=1))
    _secret(ctx, b"overlap", created=NOW - timedelta(days=2), expires=NOW + timedelta(hours=1))
    _secret(ctx, b"current", created=NOW - timedelta(hours=1))
    _secret(ctx, b"ends-now", created=NOW - timedelta(days=40), expires=NOW)
    rows = _rows(ctx.db, SQL["secrets_in_force"], {"program_id": ctx.program_id, "now": NOW})
    assert rows == [{"secret_enc": b"current", "key_id": "k1"}, {"secret_enc": b"overlap", "key_id": "k1"}]
    assert _rows(ctx.db, SQL["secrets_in_force"], {"program_id": ctx.program_id + 1000, "now": NOW}) == []


def test_expire_secrets_ends_the_ones_in_force_at_the_overlap_and_keeps_sooner_ends(ctx: Ctx) -> None:
    until = NOW + timedelta(hours=24)
    _secret(ctx, b"open", created=NOW - timedelta(days=3))
    _secret(ctx, b"later", created=NOW - timedelta(days=2), expires=NOW + timedelta(hours=48))
    _secret(ctx, b"sooner", created=NOW - timedelta(days=1), expires=NOW + timedelta(hours=2))
    cursor = ctx.db.execute(SQL["expire_secrets"], {"program_id": ctx.program_id, "until": until})
    assert cursor.rowcount == 2
    rows = _rows(ctx.db, "SELECT secret_enc, expires_at FROM program_webhook_secrets ORDER BY created_at", {})
    assert rows == [
        {"secret_enc": b"open", "expires_at": until},
        {"secret_enc": b"later", "expires_at": until},
        {"secret_enc": b"sooner", "expires_at": NOW + timedelta(hours=2)},
    ]


def test_new_secret_stores_an_open_secret(ctx: Ctx) -> None:
    params = {"program_id": ctx.program_id, "secret_enc": b"sealed", "key_id": "k2", "now": NOW}
    assert ctx.db.execute(SQL["new_secret"], params).rowcount == 1
    rows = _rows(
        ctx.db,
        "SELECT program_id, secret_enc, key_id, created_at, expires_at FROM program_webhook_secrets",
        {},
    )
    assert rows == [
        {
            "program_id": ctx.program_id,
            "secret_enc": b"sealed",
            "key_id": "k2",
            "created_at": NOW,
            "expires_at": None,
        }
    ]


def test_insert_events_writes_a_batch_from_one_json_document(ctx: Ctx) -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    events = [
        {
            "id": ids[0],
            "program_id": ctx.program_id,
            "redemption_id": None,
            "sandbox": False,
            "type": "stock.low",
            "payload": {
                "id": str(ids[0]),
                "type": "stock.low",
                "data": {"sku": "cinema-2000", "available": 3},
            },
        },
        {
            "id": ids[1],
            "program_id": ctx.program_id,
            "redemption_id": None,
            "sandbox": True,
            "type": "card.expired",
            "payload": {"id": str(ids[1]), "type": "card.expired", "data": {"sandbox": True}},
        },
    ]
    assert ctx.db.execute(SQL["insert_events"], {"now": NOW, "events": batch(events)}).rowcount == 2
    rows = _rows(
        ctx.db,
        "SELECT id, program_id, redemption_id, sandbox, type, payload, created_at, delivered_at, replays"
        " FROM webhook_events ORDER BY type DESC",
        {},
    )
    assert rows == [{**e, "created_at": NOW, "delivered_at": None, "replays": 0} for e in events]


def test_events_to_attempt_counts_the_attempts_of_the_current_window_only(ctx: Ctx) -> None:
    old = _event(ctx, created=NOW - timedelta(days=2))
    _attempt(ctx, old, NOW - timedelta(days=2), 500)
    _attempt(ctx, old, NOW - timedelta(days=1), 500)
    ctx.db.execute(SQL["replay"], {"now": NOW - timedelta(hours=1), "id": old})  # a new window
    _attempt(ctx, old, NOW - timedelta(minutes=30), None, "ConnectionRefusedError")
    fresh = _event(ctx, created=NOW - timedelta(minutes=5))
    _event(ctx, created=NOW)  # not asked for
    rows = _rows(ctx.db, SQL["events_to_attempt"], {"ids": [old, fresh, uuid.uuid4()]})
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {old, fresh}
    assert by_id[old]["attempts"] == 1 and by_id[old]["window_from"] == NOW - timedelta(hours=1)
    assert by_id[fresh]["attempts"] == 0 and by_id[fresh]["window_from"] == NOW - timedelta(minutes=5)
    for r in rows:
        assert (r["webhook_url"], r["program_code"], r["program_id"]) == (
            URL,
            ctx.program_code,
            ctx.program_id,
        )
        assert r["delivered_at"] is None and r["given_up_at"] is None
        assert r["payload"]["id"] == str(r["id"]) and r["payload"]["type"] == "redemption.sent"


def test_insert_attempts_writes_a_batch_from_one_json_document(ctx: Ctx) -> None:
    a, b = _event(ctx, created=NOW), _event(ctx, created=NOW)
    next_at = NOW + timedelta(seconds=7)
    attempts = [
        {"event_id": a, "status_code": 204, "error": None, "duration_ms": 15, "next_attempt_at": None},
        {
            "event_id": b,
            "status_code": None,
            "error": "TimeoutError",
            "duration_ms": 3001,
            "next_attempt_at": next_at,
        },
    ]
    assert ctx.db.execute(SQL["insert_attempts"], {"now": NOW, "attempts": batch(attempts)}).rowcount == 2
    rows = _rows(
        ctx.db,
        "SELECT event_id, attempted_at, status_code, error, duration_ms, next_attempt_at"
        " FROM webhook_attempts ORDER BY id",
        {},
    )
    assert rows == [{**x, "attempted_at": NOW} for x in attempts]


def test_event_log_gives_each_event_its_status_program_and_last_attempt(ctx: Ctx) -> None:
    pending = _event(ctx, created=NOW - timedelta(minutes=10), sandbox=True)
    _attempt(ctx, pending, NOW - timedelta(minutes=9), 500)
    ctx.db.execute(
        "UPDATE webhook_attempts SET next_attempt_at = %(at)s WHERE event_id = %(e)s",
        {"at": NOW + timedelta(seconds=10), "e": pending},
    )
    _attempt(ctx, pending, NOW - timedelta(minutes=1), None, "ConnectionResetError")
    delivered = _event(ctx, created=NOW - timedelta(minutes=5), type_="stock.low")
    ctx.db.execute(
        "UPDATE webhook_events SET delivered_at = %(at)s WHERE id = %(e)s", {"at": NOW, "e": delivered}
    )
    given_up = _event(ctx, created=NOW - timedelta(days=2))
    ctx.db.execute(
        "UPDATE webhook_events SET given_up_at = %(at)s WHERE id = %(e)s", {"at": NOW, "e": given_up}
    )
    rows = _rows(ctx.db, SQL["event_log"] + " ORDER BY e.created_at DESC, e.id DESC", {})
    assert [(r["id"], r["status"]) for r in rows] == [
        (delivered, "delivered"),
        (pending, "pending"),
        (given_up, "given_up"),
    ]
    by_id = {r["id"]: r for r in rows}
    last = by_id[pending]
    assert (last["program"], last["sandbox"], last["attempts"]) == (ctx.program_code, True, 2)
    assert (last["attempted_at"], last["status_code"], last["error"], last["next_attempt_at"]) == (
        NOW - timedelta(minutes=1),
        None,
        "ConnectionResetError",
        None,
    )
    never = by_id[delivered]
    assert never["attempts"] is None and never["attempted_at"] is None and never["type"] == "stock.low"
    one = _rows(ctx.db, SQL["event_log"] + " WHERE e.id = %(id)s", {"id": given_up})
    assert len(one) == 1 and one[0]["given_up_at"] == NOW and one[0]["replays"] == 0


def test_replay_makes_an_event_pending_with_a_new_window(ctx: Ctx) -> None:
    event_id = _event(ctx, created=NOW - timedelta(days=2))
    ctx.db.execute(
        "UPDATE webhook_events SET given_up_at = %(at)s, delivered_at = %(at)s WHERE id = %(e)s",
        {"at": NOW - timedelta(days=1), "e": event_id},
    )
    assert ctx.db.execute(SQL["replay"], {"now": NOW, "id": event_id}).rowcount == 1
    assert ctx.db.execute(SQL["replay"], {"now": NOW, "id": uuid.uuid4()}).rowcount == 0
    rows = _rows(ctx.db, "SELECT delivered_at, given_up_at, deliver_from, replays FROM webhook_events", {})
    assert rows == [{"delivered_at": None, "given_up_at": None, "deliver_from": NOW, "replays": 1}]


def test_finished_events_are_the_delivered_and_given_up_ones_before_the_cutoff_oldest_first(ctx: Ctx) -> None:
    cutoff = NOW - timedelta(days=30)
    delivered_old = _event(ctx, created=cutoff - timedelta(days=3))
    given_up_old = _event(ctx, created=cutoff - timedelta(days=2))
    pending_old = _event(ctx, created=cutoff - timedelta(days=5))
    delivered_late = _event(ctx, created=cutoff - timedelta(days=1))  # finished after the cutoff
    recent = _event(ctx, created=NOW - timedelta(days=1))
    finished = {
        delivered_old: ("delivered_at", cutoff - timedelta(days=3)),
        given_up_old: ("given_up_at", cutoff - timedelta(days=1)),
        delivered_late: ("delivered_at", cutoff + timedelta(hours=1)),
        recent: ("delivered_at", NOW),
    }
    for event_id, (column, at) in finished.items():
        ctx.db.execute(
            f"UPDATE webhook_events SET {column} = %(at)s WHERE id = %(e)s", {"at": at, "e": event_id}
        )
    rows = _rows(ctx.db, SQL["finished_events"], {"before": cutoff, "limit": 10})
    assert [r["id"] for r in rows] == [delivered_old, given_up_old]
    assert pending_old not in {r["id"] for r in rows}
    assert _rows(ctx.db, SQL["finished_events"], {"before": cutoff, "limit": 1}) == [{"id": delivered_old}]
