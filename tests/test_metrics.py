"""Metrics from every process: the API's /metrics and the exporter of `rewards worker` (its worker
processes' counters, Dramatiq's middleware, the relay, and the gauges of the operation from SQL and
Redis). The dashboard and the alerts query only metrics that these endpoints really serve."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from service.delivery.smsc import TestSmsc
from service.kit.db.engine import transaction
from tests.conftest import import_codes_for, redemption_body
from tests.harness.delivery import WebhookReceiver, flush_queues, point_webhooks_at, statuses, wait_until
from tests.harness.live import free_port, live_api
from tests.test_deploy_helm import (
    dashboard_expressions,
    dashboard_json,
    metric_names,
    prometheus_rule,
    rendered,
)


def exported_names(exposition: str) -> set[str]:
    """Every series name an exposition offers: its samples', and for a family without samples yet
    (a labelled counter before its first increment) the names its type gives it."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def samples(exposition: str, name: str) -> dict[tuple, float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
        if s.name == name
    }


@pytest.fixture
def stack(services, keys, tmp_path):
    """The test SMSC, a webhook receiver, `rewards worker` (relay and exporter included) and a live
    API, each a real process or server on loopback."""
    flush_queues()
    smsc = TestSmsc().start()
    receiver = WebhookReceiver().start()
    point_webhooks_at(receiver.url)
    metrics_port = free_port()
    env = {
        **os.environ,
        "SMS_PROVIDER": "smpp",
        "SMPP_HOST": smsc.host,
        "SMPP_PORT": str(smsc.port),
        "SMPP_SYSTEM_ID": "rewards",
        "SMPP_PASSWORD": "secret",
        "METRICS_PORT": str(metrics_port),
        "METRICS_HOST": "127.0.0.1",
        "METRICS_CACHE_SECONDS": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "worker",
            "--processes",
            "1",
            "--threads",
            "2",
            "--webhook-threads",
            "2",
        ],
        env=env,
        start_new_session=True,
    )
    try:
        wait_until(lambda: smsc.bound_sessions > 0, 60, what="the worker to bind to the SMSC")
        with live_api() as api:
            yield api, f"http://127.0.0.1:{metrics_port}/metrics", keys
    finally:
        os.killpg(worker.pid, 15)
        worker.wait(timeout=30)
        receiver.stop()
        smsc.stop()


def test_every_metric_the_dashboard_and_the_alerts_query_is_served_by_the_running_processes(stack):
    api, exporter, keys = stack
    import_codes_for("ARAY-CINEMA-2000", 3)
    response = httpx.post(
        f"{api}/v1/redemptions",
        json=redemption_body(),
        headers={**keys.header("loyalty"), "Idempotency-Key": str(uuid.uuid4())},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    wait_until(lambda: statuses().get("delivered") == 1, 60, what="the SMS delivered")
    wait_until(
        lambda: "rewards_webhook_deliveries_total" in httpx.get(exporter).text, 30, what="webhooks delivered"
    )
    served = exported_names(httpx.get(f"{api}/metrics").text) | exported_names(httpx.get(exporter).text)
    queried = set().union(
        *(metric_names(e) for e in dashboard_expressions(dashboard_json(rendered("production"))))
    )
    alerts = prometheus_rule()
    queried |= set().union(*(metric_names(r["expr"]) for g in alerts["spec"]["groups"] for r in g["rules"]))
    assert queried - served == set()
    # Dramatiq's own middleware is there, per actor, from the worker processes
    assert any(labels for labels in samples(httpx.get(exporter).text, "dramatiq_messages_total"))


def test_the_worker_exporter_adds_up_its_processes_and_reports_the_state_of_the_operation(stack):
    api, exporter, keys = stack
    import_codes_for("ARAY-CINEMA-2000", 5)
    for i in range(2):
        body = redemption_body(msisdn=f"8701555000{i}")
        headers = {**keys.header("loyalty"), "Idempotency-Key": str(uuid.uuid4())}
        assert httpx.post(f"{api}/v1/redemptions", json=body, headers=headers, timeout=30).status_code == 201
    wait_until(lambda: statuses().get("delivered") == 2, 60, what="both delivered")
    page = httpx.get(exporter).text
    assert samples(page, "rewards_sms_outcomes_total")[(("outcome", "delivered"),)] == 2
    bound = samples(page, "rewards_smpp_sessions_bound")
    assert list(bound.values()) == [1]  # one reward-SMS process, bound
    assert (
        samples(page, "rewards_codes_available")[(("partner", "aray-cinema"), ("sku", "ARAY-CINEMA-2000"))]
        == 3
    )
    assert (
        samples(page, "rewards_program_budget_spent_minor")[
            (("currency", "KZT"), ("program", "mobile-bonus"))
        ]
        == 400000
    )
    assert samples(page, "rewards_outbox_published_total")  # the relay's counter, from the parent process
    assert samples(page, "rewards_operations_up") == {(("source", "database"),): 1, (("source", "redis"),): 1}


def test_the_operation_gauges_count_backlog_queues_doubt_and_given_up_events(keys):
    """The collector alone, in this process, against a state built by hand."""
    import dramatiq

    from workers.broker import broker
    from workers.exporter import OperationsCollector

    flush_queues()
    now = datetime.now(UTC)
    import_codes_for("ARAY-CINEMA-2000", 1)
    with transaction() as s:
        s.execute(
            text(
                "INSERT INTO outbox (message_id, queue, actor, payload, created_at) VALUES"
                " (gen_random_uuid(), 'webhooks', 'send_webhook', '{}', :old),"
                " (gen_random_uuid(), 'webhooks', 'send_webhook', '{}', :now)"
            ),
            {"old": now - timedelta(seconds=90), "now": now},
        )
        s.execute(
            text(
                "INSERT INTO webhook_events (id, program_id, type, payload, given_up_at)"
                " SELECT gen_random_uuid(), id, 'stock.low', '{}', now() FROM programs LIMIT 2"
            )
        )
    for _ in range(3):
        broker.enqueue(
            dramatiq.Message(queue_name="webhooks", actor_name="send_webhook", args=(), kwargs={}, options={})
        )
    broker.enqueue(
        dramatiq.Message(queue_name="webhooks", actor_name="send_webhook", args=(), kwargs={}, options={}),
        delay=60_000,
    )
    metrics = {m.name: m for m in OperationsCollector(cache_seconds=0).collect()}

    def value(name: str, **labels: str) -> float:
        (sample,) = [s for s in metrics[name].samples if all(s.labels.get(k) == v for k, v in labels.items())]
        return sample.value

    assert value("rewards_outbox_backlog") == 2
    assert 85 <= value("rewards_outbox_oldest_unpublished_age_seconds") < 120
    assert value("rewards_queue_messages", queue="webhooks", state="waiting") == 3
    assert value("rewards_queue_messages", queue="webhooks", state="delayed") == 1
    assert value("rewards_queue_messages", queue="sms_transactional", state="waiting") == 0
    assert value("rewards_webhook_events_given_up") == 2
    assert value("rewards_sms_in_doubt") == 0
    assert value("rewards_codes_available", sku="ARAY-CINEMA-2000") == 1
    assert (
        value("rewards_operations_up", source="database")
        == value("rewards_operations_up", source="redis")
        == 1
    )
    flush_queues()
    broker.flush("webhooks.DQ")


def test_the_gauges_are_computed_once_per_cache_period_however_many_scrape(keys):
    from workers.exporter import OperationsCollector

    def backlog(collector: OperationsCollector) -> float:
        (metric,) = [m for m in collector.collect() if m.name == "rewards_outbox_backlog"]
        return metric.samples[0].value

    cached, fresh = OperationsCollector(cache_seconds=3600), OperationsCollector(cache_seconds=0)
    assert backlog(cached) == backlog(fresh) == 0
    with transaction() as s:
        s.execute(
            text(
                "INSERT INTO outbox (message_id, queue, actor, payload)"
                " VALUES (gen_random_uuid(), 'q', 'a', '{}')"
            )
        )
    assert (backlog(cached), backlog(fresh)) == (0, 1)
