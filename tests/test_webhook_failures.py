"""A receiver that is down is a normal state for a webhook consumer (issue 26): every failed attempt is
one structured warning (the event, the attempt number, the receiver's status or the error's class,
the next try), never a traceback, and the next try is kept with the attempt for the console and the
events API."""

from __future__ import annotations

import io
import json
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy import text

from service.events import webhooks
from service.events.webhooks import attempt_events, retry_delay
from service.kit.db.engine import new_session
from service.kit.observability.logging import configure_logging
from tests.conftest import post_redemption
from tests.harness.delivery import WebhookReceiver, Worker, flush_queues, point_webhooks_at, wait_until


def _closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hooks"  # nothing listens there once the socket is closed


@pytest.fixture
def logs():
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    yield lambda event: [json.loads(line) for line in stream.getvalue().splitlines() if f'"{event}"' in line]
    configure_logging("INFO", json=True)


def _cancelled_event(client, keys) -> uuid.UUID:
    made = post_redemption(client, keys, offer="gift-card-5000", points=5000).json()
    assert (
        client.post(f"/v1/redemptions/{made['id']}/cancel", headers=keys.header("loyalty")).status_code == 200
    )
    with new_session() as s:
        return s.execute(
            text("SELECT id FROM webhook_events WHERE type = 'redemption.cancelled'")
        ).scalar_one()


def _attempts(event_id: uuid.UUID) -> list:
    with new_session() as s:
        return s.execute(
            text(
                "SELECT attempted_at, status_code, error, next_attempt_at FROM webhook_attempts"
                " WHERE event_id = :id ORDER BY id"
            ),
            {"id": event_id},
        ).all()


def test_the_backoff_starts_at_5_s_and_doubles_up_to_an_hour_with_jitter():
    for attempt, ceiling in ((1, 5), (2, 10), (3, 20), (10, 2560), (11, 3600), (30, 3600)):
        delays = [retry_delay(attempt) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling


def test_an_unreachable_receiver_is_one_warning_per_attempt_with_the_next_try(client, keys, logs):
    point_webhooks_at(_closed_url())
    event_id = _cancelled_event(client, keys)
    now = datetime.now(UTC)
    first = attempt_events([event_id], now=now)[event_id]
    second = attempt_events([event_id], now=now + timedelta(seconds=10))[event_id]
    assert first.result.startswith("retry") and 2_500 <= first.next_attempt_in_ms <= 5_000
    assert 5_000 <= second.next_attempt_in_ms <= 10_000
    lines = logs("webhook_attempt_failed")
    assert [line["attempt"] for line in lines] == [1, 2]
    for line, attempted in zip(lines, (first, second), strict=True):
        assert line["level"] == "warning" and line["event_id"] == str(event_id)
        assert line["error"] == "ConnectionRefusedError" and line["status"] is None
        assert line["type"] == "redemption.cancelled" and line["program"] == "mobile-bonus"
        assert abs(line["next_attempt_in_s"] * 1000 - attempted.next_attempt_in_ms) <= 100
        assert "exception" not in line and "exc_info" not in line
    rows = _attempts(event_id)
    assert [r.error for r in rows] == ["ConnectionRefusedError"] * 2
    assert abs((rows[0].next_attempt_at - now).total_seconds() * 1000 - first.next_attempt_in_ms) < 1000


def test_a_receiver_that_answers_an_error_is_logged_with_its_status(client, keys, logs):
    receiver = WebhookReceiver(failures_left=1).start()
    try:
        point_webhooks_at(receiver.url)
        webhooks._secrets_cache.clear()
        event_id = _cancelled_event(client, keys)
        assert attempt_events([event_id])[event_id].result == "retry: receiver answered 503"
        (line,) = logs("webhook_attempt_failed")
        assert line["status"] == 503 and line["error"] is None and line["attempt"] == 1
        assert attempt_events([event_id])[event_id].result == "delivered"
        assert _attempts(event_id)[-1].next_attempt_at is None  # delivered: nothing more to try
    finally:
        receiver.stop()


def test_the_events_api_shows_when_the_next_attempt_is_due(client, keys):
    point_webhooks_at(_closed_url())
    event_id = _cancelled_event(client, keys)
    attempt_events([event_id])
    (item,) = client.get("/v1/webhooks/events", headers=keys.header("support")).json()["items"]
    assert item["last_attempt"]["error"] == "ConnectionRefusedError"
    assert item["last_attempt"]["next_attempt_at"] is not None


def test_a_worker_retries_an_unreachable_receiver_without_a_traceback(
    client, keys, services, tmp_path, monkeypatch
):
    """The whole path: the relay publishes the event, a real Dramatiq worker posts it twice to a
    receiver that is down; its log holds one warning per attempt and no traceback."""
    from workers.relay import Relay

    flush_queues()
    point_webhooks_at(_closed_url())
    log_file = tmp_path / "worker.log"
    env = {
        **os.environ,
        "SMS_PROVIDER": "file",
        "SMS_FILE": str(tmp_path / "sms.jsonl"),
        "LOG_LEVEL": "INFO",
    }
    monkeypatch.setenv("WORKER_LOG", str(log_file))  # where the harness's worker writes its output
    worker = Worker(env).start()
    relay = Relay(RedisBroker(url=services.redis_url)).start()
    try:
        event_id = _cancelled_event(client, keys)
        wait_until(lambda: len(_attempts(event_id)) >= 2, 90, every=0.5, what="two attempts")
    finally:
        relay.stop()
        worker.stop()
    output = log_file.read_text()
    lines = [json.loads(line) for line in output.splitlines() if "webhook_attempt_failed" in line]
    attempts = [line for line in lines if line["event_id"] == str(event_id)]
    assert [a["attempt"] for a in attempts][:2] == [1, 2]
    assert all(a["error"] == "ConnectionRefusedError" and a["next_attempt_at"] for a in attempts)
    assert "Traceback" not in output and "unhandled exception" not in output
