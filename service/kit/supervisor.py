"""Supervision of the processes a command starts: `rewards serve` (PostgreSQL, Redis, API, relay,
workers) and `rewards worker` (its Dramatiq commands).

Each component is a child process in a session of its own (a Ctrl-C in the terminal reaches only the
supervisor, which stops the children in order) that dies with the supervisor (Linux's parent-death
signal), so no child outlives it. A child that exits is restarted after a backoff that doubles with
each failed try (RESTART_BACKOFF_SECONDS up to RESTART_BACKOFF_MAX_SECONDS) while its siblings keep
running; one that stays up RESTART_STABLE_SECONDS starts counting again. A child that fails
RESTART_MAX_TRIES restarts in a row is a crash loop: the supervisor gives up, says why in one log line
(`supervisor_gave_up`, with what the child's own log said) and in its state file, and its command
exits non-zero. The state of every component, with the time of its last change, is kept in a JSON
file (REWARDS_SUPERVISOR_STATE for the children) that the API's /healthz shows.

Nothing here is a process manager of its own beyond this: uvicorn restarts its API processes, and
Dramatiq stops a command whose worker process died (which the supervisor of `rewards worker` then
starts again).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from service.kit.config import get_settings

log = structlog.get_logger("supervisor")

STATE_FILE_ENV = "REWARDS_SUPERVISOR_STATE"

# prctl(PR_SET_PDEATHSIG, SIGTERM) in each child: a supervisor killed with SIGKILL leaves no orphans.
_PR_SET_PDEATHSIG = 1
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def popen(argv: list[str], *, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen:
    """A child in a session (and process group) of its own that gets SIGTERM when its parent dies.
    Start children from the thread that lives as long as the supervisor (the main thread): the
    parent-death signal follows the thread that forked."""
    return subprocess.Popen(
        argv,
        env=env,
        stdin=kwargs.pop("stdin", subprocess.DEVNULL),
        start_new_session=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - one prctl call, no locks taken
        **kwargs,
    )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with {code}"


@dataclass(frozen=True)
class RestartPolicy:
    max_tries: int = 5  # restarts in a row that may fail before the supervisor gives up
    backoff: float = 0.25  # seconds before the first restart, doubled for each further try
    backoff_max: float = 15.0
    stable_after: float = 30.0  # a child up this long counts its tries from zero again
    start_timeout: float = 120.0  # a child not ready by then is killed: a failed try

    def delay(self, tries: int) -> float:
        return min(self.backoff * 2 ** max(tries - 1, 0), self.backoff_max)

    @classmethod
    def from_settings(cls) -> RestartPolicy:
        s = get_settings()
        return cls(
            max_tries=s.restart_max_tries,
            backoff=s.restart_backoff_seconds,
            backoff_max=s.restart_backoff_max_seconds,
            stable_after=s.restart_stable_seconds,
        )


@dataclass
class Component:
    """One supervised child: how to start it, when it counts as up, how to stop it."""

    name: str
    spawn: Callable[[], subprocess.Popen]
    ready: Callable[[subprocess.Popen], bool] | None = None  # None: up as soon as it runs
    stop_signal: int = signal.SIGTERM
    stop_timeout: float = 30.0
    why: Callable[[], str | None] | None = None  # what the child's own log says about its exit
    on_exit: Callable[[subprocess.Popen], None] | None = None  # cleanup after an exit, before a restart
    proc: subprocess.Popen | None = field(default=None, repr=False)
    state: str = "stopped"  # starting, running, restarting, stopping, stopped, failed
    since: str = field(default_factory=now_iso)
    detail: str | None = None
    restarts: int = 0
    tries: int = 0  # failed tries in a row
    started_at: float = 0.0
    running_at: float | None = None
    restart_at: float = 0.0

    def view(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "since": self.since,
            # No poll() here: views are read from other threads too.
            "pid": self.proc.pid if self.proc is not None and self.state in ("starting", "running") else None,
            "restarts": self.restarts,
            "detail": self.detail,
        }


class GaveUp(Exception):
    """A component kept failing: the supervisor stopped trying."""


class Supervisor:
    def __init__(self, name: str, policy: RestartPolicy | None = None, state_file: Path | None = None):
        self.name = name
        self.policy = policy or RestartPolicy()
        self.state_file = state_file
        self.components: dict[str, Component] = {}
        self.stop_requested = threading.Event()
        self.failed: Component | None = None
        self.state, self.since = "starting", now_iso()
        self.detail: str | None = None
        self._lock = threading.Lock()
        self._write()

    # --- building -------------------------------------------------------------------------------

    def add(self, component: Component) -> Component:
        with self._lock:  # snapshot() may run on another thread (an exporter's /healthz)
            self.components[component.name] = component
        self._write()
        return component

    def launch(self, name: str, *, wait: bool = False, poll: float = 0.05) -> None:
        """Starts a component; with `wait`, returns once it is up (restarting it as it fails), or
        raises GaveUp, or returns early when a stop was asked for."""
        component = self.components[name]
        self._spawn(component)
        while wait and component.state != "running" and not self.stop_requested.is_set():
            self.tick()
            if self.failed is not None:
                raise GaveUp(self.failed.detail)
            self.stop_requested.wait(poll)

    def request_stop(self, *_: object) -> None:
        """A signal handler: the run loop ends and the components are stopped in order."""
        self.stop_requested.set()

    # --- the loop -------------------------------------------------------------------------------

    def run(self, poll: float = 0.1) -> int:
        """Watches the components until a stop is asked for (0) or one of them gave up (1)."""
        self._set_state("running")
        while not self.stop_requested.wait(poll):
            self.tick()
            if self.failed is not None:
                return 1
        return 0

    def tick(self) -> None:
        """One look at every component: exits, readiness, restarts that are due."""
        for component in list(self.components.values()):
            if component.state in ("stopped", "stopping", "failed") or self.failed is not None:
                continue
            now = time.monotonic()
            proc = component.proc
            if proc is None:
                if component.state == "restarting" and now >= component.restart_at:
                    self._spawn(component)
                continue
            code = proc.poll()
            if code is not None:
                self._exited(component, proc, code)
            elif component.state == "starting":
                if self._ready(component, proc):
                    component.running_at = now
                    self._set(component, "running", None)
                    log.info(
                        "component_running",
                        component=component.name,
                        pid=proc.pid,
                        after_s=round(now - component.started_at, 2),
                    )
                elif now - component.started_at > self.policy.start_timeout:
                    log.warning(
                        "component_start_timeout", component=component.name, seconds=self.policy.start_timeout
                    )
                    _kill_group(proc)
            elif component.tries and self._stable(component, now):
                component.tries = 0

    def _ready(self, component: Component, proc: subprocess.Popen) -> bool:
        if component.ready is None:
            return True
        try:
            return component.ready(proc)
        except Exception:  # noqa: BLE001 - not ready yet, whatever the check ran into
            return False

    def _stable(self, component: Component, now: float) -> bool:
        return component.running_at is not None and now - component.running_at >= self.policy.stable_after

    def _spawn(self, component: Component) -> None:
        component.running_at = None
        component.started_at = time.monotonic()
        try:
            component.proc = component.spawn()
        except Exception as exc:  # noqa: BLE001 - a start that fails is a failed try like an exit
            component.proc = None
            self._failed_try(component, f"could not start: {type(exc).__name__}: {exc}")
            return
        if component.ready is None:
            component.running_at = component.started_at
        self._set(component, "running" if component.ready is None else "starting", None)

    def _exited(self, component: Component, proc: subprocess.Popen, code: int) -> None:
        _kill_group(proc)  # what it leaves behind (uvicorn's or Dramatiq's processes, backends)
        if component.on_exit is not None:
            try:
                component.on_exit(proc)
            except Exception as exc:  # noqa: BLE001 - the restart matters more than the cleanup
                log.warning("component_cleanup_failed", component=component.name, error=repr(exc))
        reason = describe_exit(code)
        # What its own log says, when it ended by itself (after a signal the log tells only the aftermath).
        said = component.why() if component.why is not None and code > 0 else None
        if said:
            reason += f": {said}"
        if self._stable(component, time.monotonic()):
            component.tries = 0
        component.proc = None
        self._failed_try(component, reason)

    def _failed_try(self, component: Component, reason: str) -> None:
        component.tries += 1
        policy = self.policy
        if component.tries > policy.max_tries:
            detail = (
                f"{component.name} failed {component.tries} times in a row"
                f" ({policy.max_tries} restarts); gave up: {reason}"
            )
            self.failed = component
            self._set(component, "failed", detail)
            # The one line that says why everything stops.
            log.error(
                "supervisor_gave_up",
                supervisor=self.name,
                component=component.name,
                tries=component.tries,
                reason=reason,
                message=detail,
            )
            self._set_state("failed", detail)
            return
        delay = policy.delay(component.tries)
        component.restart_at = time.monotonic() + delay
        component.restarts += 1
        self._set(
            component,
            "restarting",
            f"{reason}; restart {component.tries} of {policy.max_tries} in {delay:.2f} s",
        )
        log.warning(
            "component_exited",
            component=component.name,
            reason=reason,
            restart=component.tries,
            max_tries=policy.max_tries,
            restart_in_s=round(delay, 2),
        )

    # --- stopping -------------------------------------------------------------------------------

    def stop(self, order: Iterable[str] | None = None, *, together: bool = False) -> None:
        """Stops the components one after another (by default the reverse of the order they were
        added in), each with its stop signal, waiting up to its stop timeout, then SIGKILL; with
        `together`, signals them all first and then waits for each."""
        if self.state != "failed":
            self._set_state("stopping")
        names = list(order) if order is not None else list(reversed(self.components))
        signalled = []
        for name in names:
            component = self.components[name]
            proc = component.proc
            if proc is None or proc.poll() is not None:
                if component.state != "failed":
                    self._set(component, "stopped", component.detail)
                continue
            self._set(component, "stopping", None)
            try:
                proc.send_signal(component.stop_signal)
            except ProcessLookupError:
                pass
            signalled.append(component)
            if not together:
                self._finish(component)
        if together:
            for component in signalled:
                self._finish(component)
        if self.state != "failed":
            self._set_state("stopped")

    def _finish(self, component: Component) -> None:
        proc = component.proc
        assert proc is not None
        started = time.monotonic()
        try:
            proc.wait(timeout=component.stop_timeout)
        except subprocess.TimeoutExpired:
            log.warning("component_stop_timeout", component=component.name, seconds=component.stop_timeout)
        _kill_group(proc)
        proc.wait()
        self._set(component, "stopped", describe_exit(proc.returncode))
        log.info(
            "component_stopped",
            supervisor=self.name,
            component=component.name,
            how=describe_exit(proc.returncode),
            after_s=round(time.monotonic() - started, 2),
        )

    # --- state ----------------------------------------------------------------------------------

    def _set(self, component: Component, state: str, detail: str | None) -> None:
        with self._lock:
            if state != component.state:
                component.since = now_iso()
            component.state, component.detail = state, detail
        self._write()

    def _set_state(self, state: str, detail: str | None = None) -> None:
        with self._lock:
            if state != self.state:
                self.since = now_iso()
            self.state, self.detail = state, detail
        self._write()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "supervisor": {
                    "name": self.name,
                    "pid": os.getpid(),
                    "state": self.state,
                    "since": self.since,
                    "detail": self.detail,
                },
                "components": {name: c.view() for name, c in self.components.items()},
            }

    def _write(self) -> None:
        if self.state_file is None:
            return
        partial = self.state_file.with_name(self.state_file.name + ".tmp")
        partial.write_text(json.dumps(self.snapshot(), indent=1))
        os.replace(partial, self.state_file)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to what is left of the child's process group (the child leads it: own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def read_state(path: Path | None = None) -> dict[str, Any] | None:
    """The state file of the supervisor that started this process (REWARDS_SUPERVISOR_STATE), if any."""
    if path is None:
        named = os.environ.get(STATE_FILE_ENV)
        if not named:
            return None
        path = Path(named)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
