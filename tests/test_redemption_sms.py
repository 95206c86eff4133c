"""The API shows delivery: a redemption read alone, in a list or in a subscriber's list carries its
SMS (the first and each resend) with provider, status, parts, submissions, times, receipt state and
error code; at the cost of one indexed query, whatever the size of the page."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import pytest
from sqlalchemy import text

from service.delivery.providers import SmppProvider, SmppSession
from service.delivery.service import Job, apply_smpp_receipts, deliver_many
from service.delivery.smsc import TestSmsc
from service.kit.db.engine import new_session
from tests.conftest import import_codes_for, post_redemption
from tests.harness.delivery import point_webhooks_at, wait_until


@pytest.fixture
def smsc():
    server = TestSmsc(receipt_delay=0.1).start()
    yield server
    server.stop()


@pytest.fixture
def smpp(smsc):
    session = SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts)
    yield SmppProvider(session)
    session.close()


def _redeem(client, keys, count: int, msisdn: str | None = None) -> list[Job]:
    point_webhooks_at("http://127.0.0.1:9/hooks")
    import_codes_for("ARAY-CINEMA-2000", count)
    jobs = []
    for i in range(count):
        made = post_redemption(client, keys, msisdn=msisdn or f"8701999{i:04d}")
        assert made.status_code == 201, made.text
        assert made.json()["sms"] == []  # nothing tried yet
        jobs.append(Job(uuid.UUID(made.json()["id"]), 0))
    return jobs


def _delivered(count: int) -> bool:
    with new_session() as s:
        return (
            s.execute(text("SELECT count(*) FROM sms_messages WHERE status = 'delivered'")).scalar() == count
        )


def test_a_redemption_shows_its_sms_with_provider_status_parts_times_and_receipt(client, keys, smsc, smpp):
    (job,) = _redeem(client, keys, 1)
    smsc.refuse_part(2, 0x58)  # the first attempt throttled on part 2
    deliver_many([job], provider=smpp)
    pending = client.get(f"/v1/redemptions/{job.redemption_id}", headers=keys.header("loyalty")).json()
    (first,) = pending["sms"]
    assert (first["status"], first["attempts"], first["error_code"]) == ("pending", 1, "0x58")
    assert "0x58" in first["error"] and first["provider"] == "smpp" and first["sent_at"] is None
    deliver_many([job], provider=smpp)  # the retry
    wait_until(lambda: _delivered(1), 10, what="the receipts")
    body = client.get(f"/v1/redemptions/{job.redemption_id}", headers=keys.header("support")).json()
    (sms,) = body["sms"]
    assert body["status"] == "delivered"
    assert {k: sms[k] for k in ("send", "provider", "status", "segments", "attempts", "receipt_state")} == {
        "send": 0,
        "provider": "smpp",
        "status": "delivered",
        "segments": smsc.received[0].segments,
        "attempts": 2,
        "receipt_state": "DELIVRD",
    }
    assert sms["error_code"] is None and sms["error"] is None
    submitted, sent, receipt = (
        datetime.fromisoformat(sms[k]) for k in ("submitted_at", "sent_at", "receipt_at")
    )
    assert submitted <= sent <= receipt


def test_a_failed_sms_shows_the_error_code_and_a_resend_appears_as_a_second_sms(client, keys, smsc, smpp):
    (job,) = _redeem(client, keys, 1, msisdn="87014440000")
    smsc.invalid_destinations.add("77014440000")
    deliver_many([job], provider=smpp)
    resent = client.post(f"/v1/redemptions/{job.redemption_id}/resend", headers=keys.header("loyalty"))
    assert resent.status_code == 202
    sms = resent.json()["sms"]
    assert [(m["send"], m["status"], m["error_code"]) for m in sms] == [(0, "failed", "0x0B")]
    smsc.invalid_destinations.clear()
    deliver_many([Job(job.redemption_id, 1)], provider=smpp)
    wait_until(lambda: _delivered(1), 10, what="the resend's receipt")
    listed = client.get("/v1/subscribers/87014440000/redemptions", headers=keys.header("support")).json()
    (item,) = listed["items"]
    assert [(m["send"], m["status"]) for m in item["sms"]] == [(0, "failed"), (1, "delivered")]


@pytest.fixture
def statements(monkeypatch) -> list[str]:
    """Every statement the process sends to PostgreSQL (SQLAlchemy's and psycopg's own)."""
    import psycopg

    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def recording(self, query, *args, **kwargs):
        sent.append(query if isinstance(query, str) else str(query))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    return sent


def test_reading_a_redemption_costs_one_query_more_and_a_list_of_50_too(client, keys, smsc, smpp, statements):
    """No query per redemption: a page of 50, each with its SMS, costs one statement on sms_messages,
    and so does one redemption. Printed: how long the page of 50 takes."""
    jobs = _redeem(client, keys, 50)
    deliver_many(jobs, provider=smpp)
    wait_until(lambda: _delivered(50), 20, what="every receipt")
    statements.clear()
    one = client.get(f"/v1/redemptions/{jobs[0].redemption_id}", headers=keys.header("support"))
    reads_one = [s for s in statements if "redemptions" in s or "sms_messages" in s]
    statements.clear()
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        page = client.get("/v1/redemptions?limit=50", headers=keys.header("loyalty"))
        timings.append(time.perf_counter() - started)
    reads_page = [s for s in statements if "redemptions" in s or "sms_messages" in s]
    assert one.status_code == page.status_code == 200
    assert len(one.json()["sms"]) == 1
    items = page.json()["items"]
    assert len(items) == 50 and all(
        len(i["sms"]) == 1 and i["sms"][0]["status"] == "delivered" for i in items
    )
    # the redemption's own query and one for its SMS; the page's own query and one for all their SMS
    assert [("FROM sms_messages" in s) for s in reads_one] == [False, True], reads_one
    assert [("FROM sms_messages" in s) for s in reads_page] == [False, True] * 5, reads_page
    print(
        f"a page of 50 redemptions with their SMS: {min(timings) * 1000:.1f} ms at best,"
        f" {max(timings) * 1000:.1f} ms at worst of 5 (TestClient, in process);"
        f" {len(reads_page) // 5} SELECTs a page"
    )


def test_the_sms_of_a_page_are_read_through_the_index(client, keys, smsc, smpp):
    from service.delivery.attempts import SMS_ATTEMPTS

    jobs = _redeem(client, keys, 3)
    deliver_many(jobs, provider=smpp)
    with new_session() as s:
        s.execute(text("SET LOCAL enable_seqscan = off"))  # the table is tiny here: ask what it would use
        db = s.connection().connection.driver_connection
        plan = db.execute("EXPLAIN (FORMAT JSON) " + SMS_ATTEMPTS, {"ids": [j.redemption_id for j in jobs]})
        node = plan.fetchone()[0][0]["Plan"]
    found = []

    def walk(n):
        found.append(n)
        for child in n.get("Plans", []):
            walk(child)

    walk(node)
    assert not [n for n in found if n["Node Type"] == "Seq Scan"], found
    assert any(n.get("Index Name") == "uq_sms_messages_redemption_id_send" for n in found), found


@pytest.mark.parametrize(
    "expires_at,ru,kk",
    [
        (None, "Срок действия не ограничен.", "Жарамдылық мерзімі шектелмеген."),
        ("2027-01-31T18:00:00Z", "Действует до 31.01.2027.", "31.01.2027 дейін жарамды."),
    ],
)
def test_the_sms_of_a_code_with_and_without_expiry_reads_right(client, keys, smsc, smpp, expires_at, ru, kk):
    point_webhooks_at("http://127.0.0.1:9/hooks")
    import_codes_for("ARAY-CINEMA-2000", 2, expires_at=expires_at)
    jobs = []
    for locale, msisdn in (("ru", "87011110001"), ("kk", "87011110002")):
        made = post_redemption(client, keys, msisdn=msisdn, locale=locale)
        jobs.append(Job(uuid.UUID(made.json()["id"]), 0))
    deliver_many(jobs, provider=smpp)
    texts = {m.to: m.text for m in smsc.received}
    assert texts["+77011110001"].endswith(ru) and texts["+77011110002"].endswith(kk)
