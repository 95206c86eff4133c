"""The Prometheus exporter of the worker and relay processes, which serve no HTTP API.

`rewards worker` (and `rewards relay`) keep every counter of theirs and of their Dramatiq processes in
prometheus-client's multiprocess mode: one folder (PROMETHEUS_MULTIPROC_DIR), files per process,
added up when scraped; Dramatiq's own Prometheus middleware writes its per-message metrics there too
(its own HTTP server stays off: this exporter serves everything on METRICS_PORT). Beside those, the
exporter computes the state of the operation from SQL and Redis: outbox backlog and the age of its
oldest row, messages per Dramatiq queue, SMS in doubt, webhook events given up, codes available per
sku, budget spent per program. These are cheap (index ranges, one Redis pipeline) and cached for
METRICS_CACHE_SECONDS, so several Prometheus servers scraping cost the database one computation."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import lru_cache
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg.rows import scalar_row

from service.balances.service import budgets, stock
from service.kit import health
from service.kit.config import get_settings
from service.kit.db.engine import driver, one, transaction
from service.kit.messaging import jobs

log = structlog.get_logger("metrics")
QUEUES = (jobs.SMS_QUEUE, jobs.BULK_SMS_QUEUE, jobs.CAMPAIGN_QUEUE, jobs.WEBHOOK_QUEUE)
BACKLOG_CAP = 1_000_000  # the backlog is counted up to this many rows, so a scrape stays bounded
IN_DOUBT_AFTER_SECONDS = 5  # an attempt younger than this is being recorded, not in doubt


@lru_cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url or "", socket_timeout=2, socket_connect_timeout=2)


class OperationsCollector(Collector):
    """Gauges of the operation's state, from SQL and Redis, computed at most every `cache_seconds`."""

    def __init__(self, cache_seconds: float):
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._at = float("-inf")
        self._metrics: list[Metric] = []

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if time.monotonic() - self._at >= self.cache_seconds:
                self._metrics = self._compute()
                self._at = time.monotonic()
            return iter(self._metrics)

    def _compute(self) -> list[Metric]:
        started = time.perf_counter()
        metrics: list[Metric] = []
        up = GaugeMetricFamily(
            "rewards_operations_up", "1 when the last computation of these gauges worked", labels=["source"]
        )
        for source, compute in (("database", self._database), ("redis", self._redis)):
            try:
                metrics.extend(compute())
                up.add_metric([source], 1)
            except Exception as exc:  # noqa: BLE001 - a scrape must answer; the gauge says what failed
                log.warning("metrics_unavailable", source=source, error=f"{type(exc).__name__}: {exc}")
                up.add_metric([source], 0)
        metrics.append(up)
        took = GaugeMetricFamily("rewards_operations_collect_seconds", "Time the last computation took")
        took.add_metric([], time.perf_counter() - started)
        metrics.append(took)
        return metrics

    def _database(self) -> list[Metric]:
        now = datetime.now(UTC)
        with transaction() as session:
            db = driver(session)
            db.execute("SET LOCAL statement_timeout = '5s'")
            counts = db.cursor(row_factory=scalar_row)
            backlog = one(
                counts.execute(
                    "SELECT count(*) FROM (SELECT 1 FROM outbox WHERE published_at IS NULL LIMIT %(cap)s) b",
                    {"cap": BACKLOG_CAP},
                ).fetchone()
            )
            # None: no row waiting (LIMIT 1 of nothing); the age itself is never NULL.
            oldest = counts.execute(
                "SELECT extract(epoch FROM %(now)s - created_at) FROM outbox WHERE published_at IS NULL"
                " ORDER BY id LIMIT 1",
                {"now": now},
            ).fetchone()
            in_doubt = one(
                counts.execute(
                    "SELECT count(*) FROM sms_messages WHERE status = 'submitting'"
                    " AND submit_started_at < %(now)s - make_interval(secs => %(seconds)s)",
                    {"now": now, "seconds": IN_DOUBT_AFTER_SECONDS},
                ).fetchone()
            )
            given_up = one(
                counts.execute(
                    "SELECT count(*) FROM webhook_events"
                    " WHERE given_up_at IS NOT NULL AND delivered_at IS NULL"
                ).fetchone()
            )
            lines = stock(db, now)
            spent = budgets(db, now)
        metrics: list[Metric] = []
        for name, doc, value in (
            ("rewards_outbox_backlog", "Outbox rows not yet published to the broker", backlog),
            (
                "rewards_outbox_oldest_unpublished_age_seconds",
                "Age of the oldest outbox row not yet published (0: none waiting)",
                float(oldest) if oldest is not None else 0.0,
            ),
            ("rewards_sms_in_doubt", "SMS attempts whose outcome was never recorded (in doubt)", in_doubt),
            (
                "rewards_webhook_events_given_up",
                "Webhook events given up after 24 hours of retries and not replayed since",
                given_up,
            ),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], value)
            metrics.append(gauge)
        available = GaugeMetricFamily(
            "rewards_codes_available", "Codes available per sku (not expired)", labels=["sku", "partner"]
        )
        threshold = GaugeMetricFamily(
            "rewards_codes_low_stock_threshold", "The low-stock threshold per sku", labels=["sku"]
        )
        for line in lines:
            available.add_metric([line.sku, line.partner or ""], line.available)
            threshold.add_metric([line.sku], line.threshold)
        budget = GaugeMetricFamily(
            "rewards_program_budget_minor",
            "A program's monthly budget, in minor units",
            labels=["program", "currency"],
        )
        used = GaugeMetricFamily(
            "rewards_program_budget_spent_minor",
            "What a program spent of its budget this month (its time zone), in minor units",
            labels=["program", "currency"],
        )
        for b in spent:
            budget.add_metric([b.program, b.currency], b.budget_minor)
            used.add_metric([b.program, b.currency], b.spent_minor)
        return [*metrics, available, threshold, budget, used]

    def _redis(self) -> list[Metric]:
        client = _redis()
        pipe = client.pipeline(transaction=False)
        for queue in QUEUES:
            key = f"dramatiq:{queue}"
            pipe.llen(key)
            pipe.hlen(f"{key}.msgs")
            pipe.hlen(f"{key}.DQ.msgs")
            pipe.zcard(f"{key}.XQ")
        answers = pipe.execute()
        gauge = GaugeMetricFamily(
            "rewards_queue_messages",
            "Messages per Dramatiq queue: waiting, unacked (fetched by a worker), delayed (retries"
            " waiting for their time), dead (dead-lettered)",
            labels=["queue", "state"],
        )
        for i, queue in enumerate(QUEUES):
            waiting, held, delayed, dead = answers[4 * i : 4 * i + 4]
            gauge.add_metric([queue, "waiting"], waiting)
            gauge.add_metric([queue, "unacked"], max(held - waiting, 0))
            gauge.add_metric([queue, "delayed"], delayed)
            gauge.add_metric([queue, "dead"], dead)
        return [gauge]


def registry(cache_seconds: float | None = None) -> CollectorRegistry:
    """What the exporter serves: every process's counters from the multiprocess folder, and the
    operation's gauges."""
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    reg.register(
        OperationsCollector(get_settings().metrics_cache_seconds if cache_seconds is None else cache_seconds)
    )
    return reg


class Probes:
    """/healthz and /readyz of a worker or relay process, beside /metrics on its port: liveness reads
    what the background checks found (never waits on a dependency), readiness checks the database and
    Redis afresh (a worker or relay needs both), and `details` adds what the process runs (the
    Dramatiq commands `rewards worker` supervises, the relay thread)."""

    def __init__(self, board: health.Board, details: Callable[[], dict[str, Any]] | None = None):
        self.board = board
        self.details = details

    def healthz(self) -> tuple[int, dict[str, Any]]:
        components: dict[str, Any] = dict(self.board.snapshot())
        if self.details is not None:
            components.update(self.details())
        return 200, {"status": "ok", "components": components}

    def readyz(self) -> tuple[int, dict[str, Any]]:
        health.check_worker(self.board)
        views = self.board.snapshot()
        checks = {
            name: "ok" if v["state"] == "up" else (v["detail"] or v["state"]) for name, v in views.items()
        }
        ready = all(v == "ok" for v in checks.values())
        return (200 if ready else 503), {"status": "ready" if ready else "unready", "checks": checks}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def _app(metrics: Callable, probes: Probes | None) -> Callable:
    def app(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if probes is None or path not in ("/healthz", "/readyz"):
            return metrics(environ, start_response)
        status, body = probes.healthz() if path == "/healthz" else probes.readyz()
        data = json.dumps(body).encode()
        reason = "OK" if status == 200 else "Service Unavailable"
        start_response(
            f"{status} {reason}", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        )
        return [data]

    return app


def start_exporter(port: int | None = None, host: str | None = None, probes: Probes | None = None) -> Any:
    """Serves /metrics (and, given `probes`, /healthz and /readyz) on a daemon thread (METRICS_PORT;
    0: not at all); returns the server."""
    settings = get_settings()
    port = settings.metrics_port if port is None else port
    if not port:
        return None
    try:
        server = make_server(
            host or settings.metrics_host, port, _app(make_wsgi_app(registry()), probes), _Server, _Quiet
        )
    except OSError as exc:  # the port is taken: the workers matter more than their metrics
        log.error("metrics_exporter_not_started", port=port, error=str(exc))
        return None
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics-exporter").start()
    log.info("metrics_exporter", port=server.server_port)
    return server
