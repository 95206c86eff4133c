"""Readiness by role (issue 26). The API is ready when it can take a redemption: the database answers
and an outbox row can be written; Redis away makes it degraded (200, in the body and a metric), not
unready. /healthz lists each component with the time of its last change and never waits on one.
Workers and the relay answer /healthz and /readyz (database and Redis) on their metrics port."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import psycopg
import pytest

from service.kit import health
from service.kit.db.engine import libpq_url
from tests.conftest import assert_problem, import_codes_for, post_redemption
from tests.harness.live import free_port


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free, and nothing listens on it once closed


@pytest.fixture
def pointed(monkeypatch):
    """A fresh app of a process whose database or Redis is elsewhere (set by the test)."""
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.kit.runtime import _reset_caches

    clients = []

    def make(**env: str) -> TestClient:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        _reset_caches()
        health.reset()
        client = TestClient(create_app(), raise_server_exceptions=False)
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
    monkeypatch.undo()
    _reset_caches()
    health.reset()


def _metric(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} not exported"
    return values[-1]


def test_the_api_is_ready_when_it_can_take_a_redemption(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "outbox": "ok", "broker": "ok"}


def test_redis_away_makes_the_api_degraded_not_unready(pointed, keys):
    client = pointed(REDIS_URL=f"redis://127.0.0.1:{_closed_port()}/0")
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["broker"].startswith("error") and body["checks"]["database"] == "ok"
    assert _metric(client.get("/metrics").text, "rewards_api_degraded") == 1
    # and it does take redemptions: the outbox holds the work until Redis is back
    import_codes_for("ARAY-CINEMA-2000", 1)
    assert post_redemption(client, keys).status_code == 201


def test_the_api_is_unready_while_the_outbox_cannot_be_written(client, services):
    locked, release = threading.Event(), threading.Event()

    def hold_the_outbox() -> None:
        with psycopg.connect(libpq_url(services.database_url)) as conn:
            conn.execute("LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_outbox)
    holder.start()
    try:
        assert locked.wait(10)
        body = assert_problem(client.get("/readyz"), 503, "not_ready")
        assert "database: ok" in body["detail"] and "outbox: error: LockNotAvailable" in body["detail"]
        assert _metric(client.get("/metrics").text, "rewards_api_degraded") == 0
    finally:
        release.set()
        holder.join()
    assert client.get("/readyz").status_code == 200


def test_healthz_never_waits_on_a_database_that_is_away(pointed):
    client = pointed(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{_closed_port()}/rewards")
    started = time.monotonic()
    response = client.get("/healthz")
    assert response.status_code == 200 and time.monotonic() - started < 1
    assert response.json()["status"] == "ok"
    deadline = time.monotonic() + 10  # the background check finds it away
    while client.get("/healthz").json()["components"]["database"]["state"] != "down":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert client.get("/healthz").json()["components"]["database"]["detail"] == "error: OperationalError"


def test_a_state_keeps_the_time_it_last_changed():
    board = health.Board(["database"])
    assert board.snapshot()["database"]["state"] == "unknown"
    board.set("database", "up")
    since = board.snapshot()["database"]["since"]
    time.sleep(0.01)
    board.set("database", "up")
    assert board.snapshot()["database"]["since"] == since  # the same state: no change
    board.set("database", "down", "error: OperationalError")
    changed = board.snapshot()["database"]
    assert changed["state"] == "down" and changed["since"] > since and changed["detail"]


def test_healthz_lists_each_process_rewards_serve_supervises(client, tmp_path, monkeypatch):
    state = {
        "supervisor": {"name": "serve", "pid": 7, "state": "running", "since": "2026-01-01T00:00:00+00:00"},
        "components": {
            "postgres": {
                "state": "restarting",
                "since": "2026-01-01T00:00:05+00:00",
                "pid": None,
                "restarts": 2,
                "detail": "exited with 1: FATAL: could not write lock file; restart 2 of 5 in 0.50 s",
            },
            "api": {"state": "running", "since": "2026-01-01T00:00:01+00:00", "pid": 9, "restarts": 0},
        },
    }
    path = tmp_path / "serve-state.json"
    path.write_text(json.dumps(state))
    monkeypatch.setenv("REWARDS_SUPERVISOR_STATE", str(path))
    components = client.get("/healthz").json()["components"]
    assert components["postgres"]["state"] == "restarting" and components["postgres"]["restarts"] == 2
    assert "FATAL" in components["postgres"]["detail"]
    assert components["postgres"]["since"] == "2026-01-01T00:00:05+00:00"
    assert components["serve"]["state"] == "running"
    assert {"database", "outbox", "broker"} <= set(components)


# --- workers and the relay ---------------------------------------------------------------------------


@pytest.fixture
def exporter(services, tmp_path, monkeypatch):
    from workers.exporter import Probes, start_exporter

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # as `rewards worker` sets it
    servers = []

    def start(details=None) -> str:
        board = health.worker_board()
        server = start_exporter(port=free_port(), host="127.0.0.1", probes=Probes(board, details))
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
    health.reset()


def test_a_worker_is_ready_on_its_metrics_port_when_it_reaches_the_database_and_redis(exporter):
    base = exporter(
        lambda: {"sms": {"state": "running", "since": "2026-01-01T00:00:00+00:00", "restarts": 1}}
    )
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ready",
        "checks": {"database": "ok", "broker": "ok"},
    }
    components = httpx.get(f"{base}/healthz").json()["components"]
    assert components["database"]["state"] == "up" and components["broker"]["state"] == "up"
    assert components["sms"]["restarts"] == 1
    assert "# HELP" in httpx.get(f"{base}/metrics").text  # the metrics stay where they were


def test_a_worker_without_redis_is_unready_and_still_alive(exporter, monkeypatch):
    from service.kit.runtime import _reset_caches

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    _reset_caches()
    health.reset()
    base = exporter()
    try:
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 503
        assert (
            ready.json()["checks"]["broker"].startswith("error")
            and ready.json()["checks"]["database"] == "ok"
        )
        assert httpx.get(f"{base}/healthz").status_code == 200  # liveness: a restart would not help
    finally:
        monkeypatch.undo()
        _reset_caches()
