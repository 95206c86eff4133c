"""Tracing: off unless OTEL_EXPORTER_OTLP_ENDPOINT is set, and then not merely idle but absent (no SDK,
no instrumentation loaded); on, one redemption is one trace from the API request through the outbox,
the relay and the Dramatiq message to the worker, exported by OTLP to a real receiver on loopback, and
log lines carry its trace id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import import_codes_for, redemption_body
from tests.harness.delivery import WebhookReceiver, flush_queues, point_webhooks_at, statuses, wait_until
from tests.harness.live import free_port
from tests.otlp_receiver import OtlpReceiver

SERVER, CONSUMER, PRODUCER, CLIENT = 2, 5, 4, 3  # OTLP span kinds


PROBE = """
import json, sys
import service.asgi, workers.actors
from service.kit.messaging import outbox
from service.kit.observability import tracing
from service.kit.messaging.jobs import WEBHOOK
from opentelemetry import trace
TRACING_MODULES = ("opentelemetry.sdk.trace", "opentelemetry.instrumentation", "opentelemetry.exporter")
print(json.dumps({
    "enabled": tracing.enabled(),
    # (redis-py 8 itself imports parts of opentelemetry.sdk for its own opt-in metrics: not ours)
    "loaded": sorted(m for m in sys.modules if m.startswith(TRACING_MODULES)),
    "provider": type(trace.get_tracer_provider()).__name__,
    "api_middleware": [m.cls.__name__ for m in service.asgi.app.user_middleware],
    "worker_middleware": [type(m).__name__ for m in workers.actors.broker.middleware],
    "outbox_sql": outbox.insert(WEBHOOK, payload="1", source="x"),
}))
"""


def test_without_an_endpoint_no_tracing_code_is_even_loaded(services):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    probe = json.loads(out.stdout.strip().splitlines()[-1])
    assert probe["enabled"] is False and probe["loaded"] == []
    assert probe["provider"] == "ProxyTracerProvider"  # the API's no-op default: nothing installed
    assert probe["api_middleware"] == ["RequestContext"]
    assert "Tracing" not in probe["worker_middleware"]
    assert "trace_parent" not in probe["outbox_sql"]  # the statement of the releases before tracing


def test_an_endpoint_without_the_tracing_extra_is_a_clear_error(monkeypatch):
    from service.kit.config import reset_settings_cache
    from service.kit.observability import tracing

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if `pip install .` alone
    reset_settings_cache()
    try:
        with pytest.raises(RuntimeError, match=r"pip install 'rewards\[tracing\]'"):
            tracing.setup_tracing("api")
        assert tracing.enabled() is False
    finally:
        reset_settings_cache()


def test_root_spans_of_database_and_redis_clients_are_not_sampled():
    from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
    from opentelemetry.trace import SpanKind

    from service.kit.observability.tracing import _operations_only

    sampler = _operations_only(TraceIdRatioBased(1.0))
    assert sampler.should_sample(None, 1, "SELECT", SpanKind.CLIENT).decision is Decision.DROP
    for kind in (SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.PRODUCER, SpanKind.INTERNAL):
        assert sampler.should_sample(None, 1, "op", kind).decision is Decision.RECORD_AND_SAMPLE


@pytest.fixture
def traced_stack(services, keys, tmp_path: Path):
    """The API (uvicorn) and `rewards worker` (relay included), both exporting to a receiver."""
    flush_queues()
    receiver = OtlpReceiver().start()
    hooks = WebhookReceiver().start()  # the programs' webhooks stay on loopback
    point_webhooks_at(hooks.url)
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "SMS_PROVIDER": "file",
        "SMS_FILE": str(tmp_path / "sms.jsonl"),
        "METRICS_PORT": str(free_port()),
        "METRICS_HOST": "127.0.0.1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "LOG_LEVEL": "INFO",
        "LOG_JSON": "true",
    }
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "service.asgi:app", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stderr=api_log.open("wb"),
            start_new_session=True,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--processes", "1", "--threads", "2"],
            env=env,
            stderr=worker_log.open("wb"),
            start_new_session=True,
        ),
    ]
    base = f"http://127.0.0.1:{port}"

    def api_up() -> bool:
        try:
            return httpx.get(base + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        try:
            wait_until(api_up, 120, what="the API")
        except AssertionError as slow:
            raise AssertionError(f"{slow}; its log ends: {api_log.read_text()[-3000:]}") from None
        yield base, receiver, api_log
    finally:
        for proc in procs:
            os.killpg(proc.pid, 15)
            proc.wait(timeout=30)
        receiver.stop()
        hooks.stop()


def test_a_redemption_is_one_trace_from_the_request_through_the_outbox_to_the_worker(traced_stack, keys):
    base, receiver, api_log = traced_stack
    import_codes_for("ARAY-CINEMA-2000", 1)
    response = httpx.post(
        f"{base}/v1/redemptions",
        json=redemption_body(),
        headers={**keys.header("loyalty"), "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert response.status_code == 201, (response.text, api_log.read_text()[-6000:])
    wait_until(lambda: statuses().get("sent") == 1, 60, what="the SMS sent")

    def server_span():
        return next(
            (s for s in receiver.spans if s.kind == SERVER and s.name == "POST /v1/redemptions"), None
        )

    wait_until(lambda: server_span() is not None, 30, what="the API's span")
    trace_id = server_span().trace_id

    def consumer():
        return next(
            (s for s in receiver.of_trace(trace_id) if s.kind == CONSUMER and "deliver_reward_sms" in s.name),
            None,
        )

    wait_until(lambda: consumer() is not None, 30, what="the worker's span in the same trace")
    # The relay's process exports its spans on its own schedule: its publish span may come later.
    wait_until(
        lambda: any(s.span_id == consumer().parent_span_id for s in receiver.of_trace(trace_id)),
        30,
        what="the relay's publish span",
    )
    spans = receiver.of_trace(trace_id)
    api = [s for s in spans if s.service == "rewards-api"]
    assert any(s.kind == CLIENT and "INSERT" in str(s.attributes.get("db.statement", s.name)) for s in api)
    # the relay's publish span is the consumer's parent (the webhook events the worker writes go on
    # in the same trace, through their own publish span)
    (publish,) = [s for s in spans if s.span_id == consumer().parent_span_id]
    assert publish.kind == PRODUCER and publish.name == "deliver_reward_sms_batch publish"
    assert publish.service == "rewards-worker" and publish.trace_id == trace_id
    assert consumer().service == "rewards-worker"
    # the worker's statements are children of its consumer span
    assert any(s.parent_span_id == consumer().span_id and s.kind == CLIENT for s in spans)
    logged = [json.loads(line) for line in api_log.read_text().splitlines() if line.startswith("{")]
    (request_line,) = [
        r for r in logged if r.get("event") == "request" and r.get("route") == "/v1/redemptions"
    ]
    assert request_line["trace_id"] == trace_id
    # probes and scrapes are not traced
    httpx.get(f"{base}/readyz")
    assert not any(s.name.startswith("GET /readyz") for s in receiver.spans)
