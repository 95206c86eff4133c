"""The supervisor of `rewards serve` and `rewards worker` (service/kit/supervisor.py), on small child
processes: restarts with backoff while the siblings keep running, a crash loop that ends with the
reason, stops in order, no child left behind."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import psutil
import pytest

from service.kit.observability.logging import configure_logging
from service.kit.supervisor import Component, GaveUp, RestartPolicy, Supervisor, popen

FAST = RestartPolicy(max_tries=3, backoff=0.05, backoff_max=0.4, stable_after=30)


def sleeper() -> subprocess.Popen:
    return popen([sys.executable, "-c", "import time; time.sleep(120)"])


def crasher(out: Path) -> subprocess.Popen:
    """A server that cannot start: says why on its log and exits 1."""
    with out.open("ab") as log:
        return popen(
            [
                sys.executable,
                "-c",
                "import sys; print('FATAL: could not write lock file: No space left on device'); sys.exit(1)",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def last_line(out: Path) -> str | None:
    lines = out.read_text().splitlines() if out.exists() else []
    return lines[-1] if lines else None


def run_until(supervisor: Supervisor, done, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, supervisor.snapshot()
        supervisor.tick()
        time.sleep(0.02)


@pytest.fixture
def captured_logs():
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    yield stream
    configure_logging("INFO", json=True)


def test_a_child_that_dies_is_started_again_while_its_sibling_keeps_running(tmp_path):
    supervisor = Supervisor("test", FAST, state_file=tmp_path / "state.json")
    supervisor.add(Component("db", sleeper))
    supervisor.add(Component("worker", sleeper))
    supervisor.launch("db")
    supervisor.launch("worker")
    db, worker = supervisor.components["db"], supervisor.components["worker"]
    sibling = worker.proc.pid
    first = db.proc.pid
    try:
        os.kill(first, signal.SIGKILL)
        run_until(supervisor, lambda: db.proc is not None and db.proc.pid != first and db.state == "running")
        assert worker.proc.pid == sibling and worker.proc.poll() is None
        state = json.loads((tmp_path / "state.json").read_text())
        assert state["components"]["db"]["restarts"] == 1 and state["components"]["db"]["state"] == "running"
        assert state["components"]["worker"]["restarts"] == 0
    finally:
        supervisor.stop()


def test_the_backoff_doubles_with_each_failed_try_up_to_its_ceiling():
    policy = RestartPolicy(backoff=0.25, backoff_max=15)
    assert [policy.delay(n) for n in range(1, 9)] == [0.25, 0.5, 1, 2, 4, 8, 15, 15]


def test_a_crash_loop_gives_up_after_the_tries_with_the_childs_reason_in_one_line(tmp_path, captured_logs):
    out = tmp_path / "db.log"
    supervisor = Supervisor("test", FAST, state_file=tmp_path / "state.json")
    never_ready = lambda proc: False  # noqa: E731 - a server that never accepts connections
    supervisor.add(Component("db", partial(crasher, out), ready=never_ready, why=partial(last_line, out)))
    supervisor.add(Component("api", sleeper))
    supervisor.launch("api")
    with pytest.raises(GaveUp):
        supervisor.launch("db", wait=True)
    try:
        assert supervisor.components["db"].tries == FAST.max_tries + 1  # the start and 3 restarts
        state = json.loads((tmp_path / "state.json").read_text())
        assert state["supervisor"]["state"] == "failed"
        assert state["components"]["db"]["state"] == "failed"
        assert "No space left on device" in state["components"]["db"]["detail"]
        lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
        gave_up = [line for line in lines if line["event"] == "supervisor_gave_up"]
        assert len(gave_up) == 1
        assert gave_up[0]["component"] == "db" and gave_up[0]["level"] == "error"
        assert "exited with 1: FATAL: could not write lock file" in gave_up[0]["reason"]
        assert [line["restart"] for line in lines if line["event"] == "component_exited"] == [1, 2, 3]
    finally:
        supervisor.stop()


def test_run_returns_1_when_a_running_child_enters_a_crash_loop(tmp_path):
    out = tmp_path / "db.log"
    supervisor = Supervisor("test", FAST)
    component = supervisor.add(Component("db", sleeper, why=partial(last_line, out)))
    supervisor.launch("db")
    component.spawn = partial(crasher, out)  # from now on it cannot start
    os.kill(component.proc.pid, signal.SIGKILL)
    started = time.monotonic()
    try:
        assert supervisor.run(poll=0.02) == 1
        assert time.monotonic() - started < 10
    finally:
        supervisor.stop()


def test_a_child_up_longer_than_stable_after_counts_its_tries_from_zero(tmp_path):
    supervisor = Supervisor("test", RestartPolicy(max_tries=1, backoff=0.05, stable_after=0.3))
    db = supervisor.add(Component("db", sleeper))
    supervisor.launch("db")
    try:
        for _ in range(3):  # one restart allowed in a row, but each comes after a stable run
            time.sleep(0.4)
            supervisor.tick()
            pid = db.proc.pid
            os.kill(pid, signal.SIGKILL)
            run_until(supervisor, lambda pid=pid: db.proc is not None and db.proc.pid != pid)
        assert supervisor.failed is None and db.restarts == 3
    finally:
        supervisor.stop()


def test_stop_signals_in_the_order_given_and_leaves_no_process(tmp_path):
    marks = tmp_path / "stopped"

    def child(name: str) -> subprocess.Popen:
        code = (
            "import signal, sys, time\n"
            f"def bye(*_):\n    open({str(marks)!r}, 'a').write({name!r} + '\\n'); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, bye)\n"
            "import subprocess; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
            "time.sleep(120)\n"
        )
        return popen([sys.executable, "-c", code])

    supervisor = Supervisor("test", FAST)
    for name in ("postgres", "redis", "api"):
        supervisor.add(Component(name, partial(child, name)))
        supervisor.launch(name)
    time.sleep(1)  # each has started its own child (a grandchild of the test)
    groups = [c.proc.pid for c in supervisor.components.values()]
    supervisor.stop(["api", "redis", "postgres"])
    assert marks.read_text().split() == ["api", "redis", "postgres"]
    # The groups were sent SIGKILL; a grandchild may take a moment to die on a loaded machine.
    deadline = time.monotonic() + 5
    while (leftovers := [p for p in psutil.process_iter() if _group(p) in groups and _alive(p)]) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert leftovers == []
    assert supervisor.snapshot()["supervisor"]["state"] == "stopped"


def _group(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE  # killed, not yet reaped by its new parent
    except psutil.NoSuchProcess:
        return False
