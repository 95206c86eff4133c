"""Error classes: permanent errors fail at once, transient and throttled ones are retried with a
bounded, doubling backoff up to a cap of attempts per class, and a provider that cannot be reached
is retried until the deadline; all per provider in the settings (SMS_RETRY_SMPP, SMS_RETRY_HTTP,
SMPP_ERROR_CLASSES)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import text

from service.delivery.providers import (
    HttpProvider,
    SmppProvider,
    SmppSession,
    build_provider,
    error_class_overrides,
)
from service.delivery.service import Job, apply_smpp_receipts, backoff_ms, deliver_many
from service.delivery.smsc import TestSmsc
from service.kit.config import RetryClass, SmsRetry, get_settings, reset_settings_cache
from service.kit.db.engine import new_session
from tests.conftest import import_codes_for, post_redemption
from tests.harness.delivery import point_webhooks_at


@pytest.fixture
def smsc():
    server = TestSmsc(receipt_delay=3600).start()
    yield server
    server.stop()


def _session(smsc: TestSmsc, **options) -> SmppSession:
    return SmppSession(smsc.host, smsc.port, "rewards", "", on_receipts=apply_smpp_receipts, **options)


def _job(client, keys) -> Job:
    point_webhooks_at("http://127.0.0.1:9/hooks")
    import_codes_for("ARAY-CINEMA-2000", 1)
    made = post_redemption(client, keys, msisdn="87015551234")
    assert made.status_code == 201, made.text
    return Job(uuid.UUID(made.json()["id"]), 0)


def _row():
    with new_session() as s:
        return s.execute(
            text(
                "SELECT m.status, m.attempts, m.failures, m.error_code, m.last_error, r.status AS redemption,"
                " r.status_reason FROM sms_messages m JOIN redemptions r ON r.id = m.redemption_id"
            )
        ).one()


def _attempts_until_settled(job: Job, provider, start: datetime, most: int = 60) -> list:
    """Runs the job as its retries would, each at the time its outcome asked for."""
    outcomes, now = [], start
    for _ in range(most):
        outcome = deliver_many([job], provider=provider, now=now)[job]
        outcomes.append(outcome)
        if outcome.result != "retry":
            return outcomes
        now += timedelta(milliseconds=outcome.retry_ms)
    return outcomes


def test_a_transient_error_is_retried_with_a_doubling_backoff_and_fails_at_the_cap(
    client, keys, smsc, monkeypatch
):
    """ESME_RSYSERR (0x08) every time: five attempts 2, 4, 8, 16 s apart (a fifth of jitter), then the
    redemption fails with the reason, long before the 24-hour deadline."""
    job = _job(client, keys)
    smsc.throttle(3600, status=0x08)
    session = _session(smsc)
    try:
        outcomes = _attempts_until_settled(job, SmppProvider(session), datetime.now(UTC))
    finally:
        session.close()
    assert [o.result for o in outcomes] == ["retry"] * 4 + ["failed"]
    for delay, expected in zip([o.retry_ms for o in outcomes[:4]], [2000, 4000, 8000, 16000], strict=True):
        assert expected * 0.8 <= delay <= expected * 1.2
    row = _row()
    assert (row.status, row.redemption, row.attempts, row.error_code) == ("failed", "failed", 5, "0x08")
    assert row.status_reason.startswith("gave up after 5 transient errors") and "0x08" in row.status_reason
    assert row.failures == {"transient": 4}


def test_throttling_is_retried_more_patiently_than_other_errors(client, keys, smsc):
    job = _job(client, keys)
    smsc.throttle(3600, status=0x58)
    session = _session(smsc)
    try:
        outcomes = _attempts_until_settled(job, SmppProvider(session), datetime.now(UTC))
    finally:
        session.close()
    policy = get_settings().sms_retry_smpp.throttled
    assert [o.result for o in outcomes] == ["retry"] * (policy.max_attempts - 1) + ["failed"]
    assert max(o.retry_ms for o in outcomes[:-1]) <= policy.max_delay_seconds * 1000 * 1.2
    assert _row().failures == {"throttled": policy.max_attempts - 1}


def test_the_caps_and_delays_are_the_providers_settings(client, keys, smsc, monkeypatch):
    monkeypatch.setattr(
        get_settings(),
        "sms_retry_smpp",
        SmsRetry(transient=RetryClass(max_attempts=2, first_delay_seconds=7, max_delay_seconds=7)),
    )
    job = _job(client, keys)
    smsc.throttle(3600, status=0x45)
    session = _session(smsc)
    try:
        outcomes = _attempts_until_settled(job, SmppProvider(session), datetime.now(UTC))
    finally:
        session.close()
    assert [o.result for o in outcomes] == ["retry", "failed"]
    assert 5600 <= outcomes[0].retry_ms <= 8400


def test_a_status_can_be_made_permanent_by_the_settings(client, keys, smsc):
    job = _job(client, keys)
    smsc.throttle(3600, status=0x45)
    session = _session(smsc, error_classes=error_class_overrides({"0x45": "permanent"}))
    try:
        assert deliver_many([job], provider=SmppProvider(session))[job].result == "failed"
    finally:
        session.close()
    assert _row().error_code == "0x45" and smsc.submits == 2  # one attempt: its two parts


def test_an_unreachable_smsc_is_retried_until_the_deadline_not_capped(client, keys):
    """No session with the provider is no fault of the message: retried (backoff bounded at 30 s)
    however many times, until the program's deadline fails it."""
    job = _job(client, keys)
    nowhere = TestSmsc()
    port = nowhere.port
    nowhere.stop()
    session = SmppSession(
        "127.0.0.1", port, "rewards", "", on_receipts=apply_smpp_receipts, connect_timeout=0.2
    )
    try:
        start = datetime.now(UTC)
        delays = []
        for i in range(8):
            outcome = deliver_many([job], provider=SmppProvider(session), now=start + timedelta(minutes=i))[
                job
            ]
            assert outcome.result == "retry"
            delays.append(outcome.retry_ms)
        assert max(delays) <= 30_000 * 1.2
        late = deliver_many([job], provider=SmppProvider(session), now=start + timedelta(hours=25))[job]
    finally:
        session.close()
    assert late.result == "failed"
    row = _row()
    assert row.failures == {"unavailable": 8} and row.status_reason.startswith("undelivered by the deadline")


def _answering(status: int) -> ThreadingHTTPServer:
    """A gateway that answers every submit with `status`."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize("status,kind", [(429, "throttled"), (503, "transient"), (408, "transient")])
def test_the_http_gateways_answers_have_classes_too(client, keys, status, kind):
    """429 is throttling, 408 and 5xx transient errors; each counts against its own class."""
    server = _answering(status)
    try:
        job = _job(client, keys)
        outcome = deliver_many(
            [job], provider=HttpProvider(f"http://127.0.0.1:{server.server_address[1]}/sms", "t")
        )[job]
    finally:
        server.shutdown()
    assert outcome.result == "retry"
    row = _row()
    assert row.failures == {kind: 1} and row.error_code == f"http {status}"


def test_the_http_providers_retry_policy_is_its_own_setting_and_it_fails_at_its_cap(
    client, keys, monkeypatch
):
    """SMS_RETRY_HTTP caps transient errors at 3 attempts, 1 s apart, while SMPP keeps its 5: the
    gateway's provider, built from the settings, gives up at its own cap."""
    server = _answering(503)
    monkeypatch.setenv("SMS_PROVIDER", "http")
    monkeypatch.setenv("SMS_HTTP_URL", f"http://127.0.0.1:{server.server_address[1]}/sms")
    monkeypatch.setenv(
        "SMS_RETRY_HTTP",
        json.dumps({"transient": {"max_attempts": 3, "first_delay_seconds": 1, "max_delay_seconds": 1}}),
    )
    reset_settings_cache()
    try:
        assert get_settings().sms_retry_smpp.transient.max_attempts == 5
        provider = build_provider(on_receipts=apply_smpp_receipts)
        assert isinstance(provider, HttpProvider)
        job = _job(client, keys)
        outcomes = _attempts_until_settled(job, provider, datetime.now(UTC))
    finally:
        server.shutdown()
        reset_settings_cache()
    assert [o.result for o in outcomes] == ["retry", "retry", "failed"]
    assert all(800 <= o.retry_ms <= 1200 for o in outcomes[:2])
    row = _row()
    assert (row.status, row.redemption, row.attempts, row.error_code) == ("failed", "failed", 3, "http 503")
    assert row.status_reason.startswith("gave up after 3 transient errors")
    assert row.failures == {"transient": 2}


@pytest.mark.parametrize("failures,expected", [(1, 2000), (2, 4000), (3, 8000), (6, 60000), (20, 60000)])
def test_the_backoff_doubles_to_its_cap(failures, expected):
    policy = RetryClass(max_attempts=30, first_delay_seconds=2, max_delay_seconds=60)
    delays = [backoff_ms(policy, failures) for _ in range(200)]
    assert expected * 0.8 <= min(delays) and max(delays) <= expected * 1.2
