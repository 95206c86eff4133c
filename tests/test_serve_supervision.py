"""`rewards serve` heals itself (issue 26), on the embedded default with nobody restarting anything:
a SIGKILL of a reward-SMS worker, of PostgreSQL or of Redis under load, and the service serves again
end to end (201 and the SMS) with nothing lost or doubled (external ids, codes, one SMS per
redemption, one issue record each: tests/harness/verdict.py); a PostgreSQL that cannot start is
given up after a bounded number of tries, with the reason in one log line and in /healthz, and serve
exits 1.

The recovery times are asserted with room (SLACK times the targets): the figures are
bench/faults.py's (`serve: ...` rows); these tests catch a recovery that waits for a timeout instead
of happening."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.harness.loyalty import LoyaltySystem
from tests.harness.serve import ServeResult, run_serve_fault, serve_stack
from tests.harness.verdict import check, wait_settled
from tests.test_serve import _embedded_env, _free_port, _servers_under

pytestmark = pytest.mark.faults
RATE = 10  # redemptions per second
SLACK = 2.0


@pytest.fixture(scope="module")
def served():
    with serve_stack(codes=4000) as st:
        load = LoyaltySystem(st.base, st.key, RATE).start()
        try:
            yield st, load
        finally:
            load.stop()


def survive(served, name: str) -> ServeResult:
    """The fault under load; then, with the load paused, every redemption settled and checked."""
    st, load = served
    result = run_serve_fault(st, load, name, settle=3)
    load.paused.set()
    try:
        deadline = time.monotonic() + 120
        while load.open_operations() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert wait_settled(st, 240) == 0, "redemptions still on their way 4 minutes after the fault"
        verdict = check(st, list(load.ops))
        print(*verdict.lines, sep="\n")
        assert verdict.total_lost == 0 and verdict.total_doubled == 0, verdict.lines
        assert all(op.final == 201 for op in load.ops)
    finally:
        load.paused.clear()
    print(f"{name}: recovery {result.recovery} s, answers other than 201 {result.api_errors}")
    assert result.recovery is not None and result.recovery <= SLACK * result.target
    return result


def test_the_workers_and_the_relay_answer_their_probes_on_their_metrics_ports(served):
    st, _ = served
    worker = f"http://127.0.0.1:{st.metrics_port}"
    relay = f"http://127.0.0.1:{st.metrics_port + 1}"  # serve puts the relay's exporter next to it
    for base in (worker, relay):
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "broker": "ok"}
    assert {"sms-1", "sms-2", "webhooks"} <= set(
        httpx.get(f"{worker}/healthz", timeout=5).json()["components"]
    )
    assert httpx.get(f"{relay}/healthz", timeout=5).json()["components"]["relay"]["state"] == "running"
    api = httpx.get(f"{st.base}/healthz", timeout=5).json()["components"]
    assert {
        name: api[name]["state"] for name in ("postgres", "redis", "api", "relay", "worker")
    } == dict.fromkeys(("postgres", "redis", "api", "relay", "worker"), "running")


def test_a_killed_worker_process_is_replaced_and_the_api_never_stops(served):
    st, _ = served
    result = survive(served, "serve: worker SIGKILL")
    assert result.api_errors == {}  # its siblings, the API among them, kept running
    workers = st.worker_health()["components"]
    assert sum(c["restarts"] for name, c in workers.items() if name.startswith("sms")) >= 1
    assert all(c["state"] == "running" for name, c in workers.items() if name.startswith("sms"))


def test_a_killed_postgres_is_started_again_and_everything_reconnects(served):
    st, _ = served
    before = st.state()["components"]["postgres"]["restarts"]
    result = survive(served, "serve: postgres SIGKILL")
    postgres = httpx.get(f"{st.base}/healthz").json()["components"]["postgres"]
    assert postgres["state"] == "running" and postgres["restarts"] == before + 1
    assert set(result.api_errors) <= {"503", "409 in progress"}  # a clean 503 while it was away, no 500
    log = (st.data / "pg" / "log").read_text()
    assert "automatic recovery in progress" in log  # PostgreSQL's own crash recovery


def test_a_killed_redis_is_started_again_and_the_api_never_needs_it(served):
    st, _ = served
    before = st.state()["components"]["redis"]["restarts"]
    result = survive(served, "serve: redis SIGKILL")
    assert result.api_errors == {}
    assert st.state()["components"]["redis"]["restarts"] == before + 1


# --- crash loops --------------------------------------------------------------------------------------


def _break_postgres(data: Path) -> None:
    """A setting PostgreSQL refuses at start: it exits at once, every time (as with a full disk)."""
    with (data / "pg" / "postgresql.auto.conf").open("a") as conf:
        conf.write("shared_buffers = 'lots'\n")


def _events(output: str, event: str) -> list[dict]:
    found = []
    for line in output.splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            found.append(json.loads(line))
    return found


def test_serve_gives_up_on_a_postgres_that_cannot_start_and_says_why(tmp_path):
    data = tmp_path / "var"
    env = {**_embedded_env(data), "RESTART_MAX_TRIES": "2", "RESTART_BACKOFF_SECONDS": "0.1"}
    migrated = subprocess.run(
        [sys.executable, "-m", "service.cli", "migrate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    _break_postgres(data)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(_free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert time.monotonic() - started < 60
    (gave_up,) = _events(output, "supervisor_gave_up")  # one line says why
    assert gave_up["component"] == "postgres" and gave_up["level"] == "error" and gave_up["tries"] == 3
    assert "exited with 1: FATAL" in gave_up["reason"] and "postgresql.auto.conf" in gave_up["reason"]
    assert len(_events(output, "component_exited")) == 2  # the two restarts it tried
    assert "uvicorn" not in output  # nothing was started on a database that never came
    time.sleep(0.5)
    assert _servers_under(data) == []


def test_a_postgres_that_cannot_come_back_shows_in_healthz_then_serve_exits_1(tmp_path):
    data, port = tmp_path / "var", _free_port()
    env = {**_embedded_env(data), "RESTART_MAX_TRIES": "3", "RESTART_BACKOFF_SECONDS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not come up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        _break_postgres(data)
        postmaster = int((data / "pg" / "postmaster.pid").read_text().splitlines()[0])
        os.kill(postmaster, signal.SIGKILL)
        seen = []
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                components = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()["components"]
                seen.append(components["postgres"])
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, output
    restarting = [c for c in seen if c["state"] == "restarting"]
    assert restarting, seen
    assert "FATAL" in restarting[-1]["detail"] and "restart" in restarting[-1]["detail"]
    assert restarting[-1]["since"] and restarting[-1]["restarts"] >= 1
    (gave_up,) = _events(output, "supervisor_gave_up")
    assert gave_up["component"] == "postgres" and "FATAL" in gave_up["reason"]
    assert "stopping PostgreSQL and Redis" in output  # the others were stopped in order
    time.sleep(1)
    assert _servers_under(data) == []
    assert not [p for p in psutil.process_iter(["cmdline"]) if str(data) in " ".join(p.info["cmdline"] or [])]
