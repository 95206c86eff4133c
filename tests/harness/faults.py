"""The faults, and a run of one phase: the fault under load, then the recovery measured."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg

from tests.harness.loyalty import LoyaltySystem, ReadinessProbe
from tests.harness.stack import EmbeddedRedisCtl, Stack, log

# --- faults ---------------------------------------------------------------------------------------


@dataclass
class Window:
    """What a fault did: when it began and ended (monotonic), and what to say about it."""

    started: float
    lifted: float
    note: str = ""


Fault = Callable[[Stack], Window]


def pg_fast_restart(st: Stack, down: float = 10) -> Window:
    started = time.monotonic()
    st.pg.stop_fast()
    time.sleep(down)
    st.pg.start_until_up()
    return Window(started, time.monotonic(), f"fast shutdown, {down:.0f} s down")


def pg_sigkill(st: Stack) -> Window:
    started = time.monotonic()
    st.pg.kill_postmaster()
    time.sleep(1)
    st.pg.start_until_up()
    return Window(started, time.monotonic(), "postmaster SIGKILL, crash recovery on start")


def pg_terminate(st: Stack) -> Window:
    started = time.monotonic()
    killed = st.pg.terminate_backends()
    return Window(started, time.monotonic(), f"{killed} backends terminated")


def redis_down(st: Stack, down: float = 30) -> Window:
    started = time.monotonic()
    st.redis.stop()
    time.sleep(down)
    st.redis.start()
    kept = "its data kept (AOF)" if isinstance(st.redis, EmbeddedRedisCtl) else "back empty (no persistence)"
    return Window(started, time.monotonic(), f"{down:.0f} s down, {kept}")


def redis_empty(st: Stack) -> Window:
    started = time.monotonic()
    st.redis.restart_empty()
    return Window(started, time.monotonic(), "killed, started with no data")


def smsc_refuse_binds(st: Stack, seconds: float = 30) -> Window:
    started = time.monotonic()
    st.service("smsc").command(f"refuse-binds {seconds}")
    time.sleep(seconds)
    return Window(started, time.monotonic(), f"binds dropped and refused (ESME_RBINDFAIL) {seconds:.0f} s")


def smsc_events(st: Stack) -> list[dict]:
    """The test SMSC's faults as it applied them (`<record>.events`: name, CLOCK_MONOTONIC time)."""
    path = st.smsc_record.with_name(st.smsc_record.name + ".events")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def smsc_drop(st: Stack, held: int = 16) -> Window:
    """The SMSC reads the next `held` submit_sm and answers none of them, takes every other SMS among
    them (as an SMSC that processed a PDU and lost its answer) and drops every connection: the ESME
    has submits in flight (in doubt) and more queued behind its window."""
    started = time.monotonic()
    before = len(smsc_events(st))
    st.service("smsc").command(f"drop-in-flight {held} alternate")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(smsc_events(st)) == before:
        time.sleep(0.05)
    drop = next((e for e in smsc_events(st)[before:] if e["event"] == "drop-in-flight"), None)
    note = (
        f"{drop['held']} submit_sm held unanswered ({drop['taken']} taken), then every connection dropped"
        if drop
        else "drop-in-flight never happened (no submits within 10 s)"
    )
    return Window(started, drop["at"] if drop else time.monotonic(), note)


def smsc_unbind(st: Stack) -> Window:
    started = time.monotonic()
    st.service("smsc").command("unbind")
    return Window(started, time.monotonic(), "the SMSC unbound every session (answered, then bound again)")


@dataclass
class Resends:
    """SMS outstanding at an SMSC drop (their redemption made before it, their last part at the SMSC
    after it): seconds from the drop until each reached the SMSC. `at_once`: the ones the session had
    not written yet (queued, behind the window, or waiting for the bind), sent on the new link within
    the same attempt. `in_doubt`: the ones written and never answered (held by the SMSC without
    taking them, or never read by it before the drop): they wait SMS_IN_DOUBT_SECONDS for a receipt
    that never comes, then go again (a second attempt). Those the SMSC held and took are settled by
    their receipts and are in neither list."""

    at_once: list[float]
    in_doubt: list[float]
    held: int = 0
    taken: int = 0

    def __str__(self) -> str:
        every = sorted(self.at_once + self.in_doubt)
        if not every:
            return "no SMS outstanding at the drop"
        parts = [f"longest {every[-1]:.1f} s ({len(every)} SMS)"]
        if self.at_once:
            parts.append(f"not yet written: {len(self.at_once)}, within {max(self.at_once):.1f} s")
        if self.in_doubt:
            parts.append(
                f"written, never answered (in doubt): {len(self.in_doubt)}, after"
                f" {min(self.in_doubt):.1f}-{max(self.in_doubt):.1f} s"
            )
        parts.append(f"held {self.held}, taken {self.taken} (settled by their receipts, not resent)")
        return "; ".join(parts)


def resend_delays(st: Stack, window: Window) -> Resends:
    drop_at = window.lifted
    drop_unix = time.time() - (time.monotonic() - drop_at)
    held = next((e for e in reversed(smsc_events(st)) if e["event"] == "drop-in-flight"), None)
    attempts = dict(  # the SMS of the redemptions made before the drop, and their attempts
        st.sql(
            "SELECT r.msisdn, max(m.attempts) FROM redemptions r"
            " JOIN sms_messages m ON m.redemption_id = r.id"
            " WHERE r.created_at < to_timestamp(%s) GROUP BY r.msisdn",
            (drop_unix,),
        )
    )
    records = [json.loads(line) for line in st.smsc_record.read_text().splitlines() if line.endswith("}")]
    after = [r for r in records if r["to"] in attempts and r["received_at"] > drop_at]
    return Resends(
        at_once=[r["received_at"] - drop_at for r in after if attempts[r["to"]] == 1],
        in_doubt=[r["received_at"] - drop_at for r in after if attempts[r["to"]] > 1],
        held=held["held"] if held else 0,
        taken=held["taken"] if held else 0,
    )


def api_sigkill(st: Stack) -> Window:
    started = time.monotonic()
    pids = st.api_worker_pids()
    victim = random.choice(pids)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(st.api_worker_pids()) < len(pids):
        time.sleep(0.2)
    return Window(
        started, time.monotonic(), f"1 of {len(pids)} uvicorn processes killed (restarted by uvicorn)"
    )


def worker_sigkill(st: Stack) -> Window:
    started = time.monotonic()
    victim = st.sms_worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    return Window(started, time.monotonic(), "a reward-SMS worker process killed")


def relay_sigkill(st: Stack) -> Window:
    started = time.monotonic()
    os.killpg(st.service("relay").pid, signal.SIGKILL)
    return Window(started, time.monotonic(), "the relay killed")


def disk_full(st: Stack, seconds: float = 15) -> Window:
    started = time.monotonic()
    filled = st.disk.fill()
    time.sleep(seconds)
    st.disk.free()
    return Window(
        started, time.monotonic(), f"tablespace full for {seconds:.0f} s ({filled / 2**20:.0f} MiB filled)"
    )


def gateway_fail(st: Stack, seconds: float = 20) -> Window:
    started = time.monotonic()
    st.service("gateway").command(f"fail {seconds}")
    time.sleep(seconds)
    return Window(started, time.monotonic(), f"HTTP 500 to every submit for {seconds:.0f} s")


def gateway_hang(st: Stack, seconds: float = 20) -> Window:
    started = time.monotonic()
    st.service("gateway").command(f"hang {seconds}")
    time.sleep(seconds)
    return Window(started, time.monotonic(), f"submits taken, answered after 15 s, for {seconds:.0f} s")


def no_fault(st: Stack, seconds: float = 10) -> Window:
    started = time.monotonic()
    time.sleep(seconds)
    return Window(started, time.monotonic(), "steady load, no fault")


# name -> (fault, the SMS provider it needs)
FAULTS: dict[str, tuple[Fault, str]] = {
    "baseline": (no_fault, "smpp"),
    "postgres fast restart": (pg_fast_restart, "smpp"),
    "postgres SIGKILL": (pg_sigkill, "smpp"),
    "postgres backends terminated": (pg_terminate, "smpp"),
    "redis down 30 s": (redis_down, "smpp"),
    "redis restarted empty": (redis_empty, "smpp"),
    "smsc refuses binds 30 s": (smsc_refuse_binds, "smpp"),
    "smsc drops mid-window": (smsc_drop, "smpp"),
    "smsc unbinds": (smsc_unbind, "smpp"),
    "api process SIGKILL": (api_sigkill, "smpp"),
    "worker process SIGKILL": (worker_sigkill, "smpp"),
    "relay SIGKILL": (relay_sigkill, "smpp"),
    "database disk full": (disk_full, "smpp"),
    "http gateway baseline": (no_fault, "http"),
    "http gateway 500s": (gateway_fail, "http"),
    "http gateway timeouts": (gateway_hang, "http"),
}


# --- a run ----------------------------------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    window: Window | None
    api_back: float | None = None
    drained: float | None = None
    readyz: str = "-"
    restarts: int = 0
    skipped: str = ""
    resend: Resends | None = None  # the SMSC-drop phase: from the drop to each outstanding SMS at the SMSC


def undelivered_before(st: Stack, moment_unix: float) -> int:
    return st.sql(
        "SELECT count(*) FROM redemptions WHERE created_at <= to_timestamp(%s) AND status <> 'delivered'",
        (moment_unix,),
    )[0][0]


def measure_recovery(
    st: Stack, load: LoyaltySystem, window: Window, within: float = 300
) -> tuple[float | None, float | None]:
    """Seconds from the end of the fault until the API answers 201 again (to a request sent after
    it), and until every redemption made before that end is delivered."""
    lifted_unix = time.time() - (time.monotonic() - window.lifted)
    deadline = window.lifted + within
    api_back = drained = None
    while time.monotonic() < deadline and (api_back is None or drained is None):
        if api_back is None:
            after = [t for sent, t in list(load.first_201_after.items()) if sent >= window.lifted]
            if after:
                api_back = max(0.0, min(after) - window.lifted)
        if drained is None:
            try:
                if undelivered_before(st, lifted_unix) == 0:
                    drained = time.monotonic() - window.lifted
            except psycopg.Error:
                pass
        time.sleep(0.5)
    return api_back, drained


def switch_provider(st: Stack, load: LoyaltySystem, provider: str) -> None:
    """Workers of another provider: pause the load, let every SMS settle, restart the workers."""
    log(f"switching the workers to SMS_PROVIDER={provider}: pausing the load until every SMS is delivered")
    load.paused.set()
    deadline = time.monotonic() + 600
    while load.open_operations() and time.monotonic() < deadline:
        time.sleep(0.5)
    while time.monotonic() < deadline:
        if st.sql("SELECT count(*) FROM redemptions WHERE status <> 'delivered'")[0][0] == 0:
            break
        time.sleep(1)
    st.service("worker").stop()
    st.start_workers(provider)
    time.sleep(5)
    load.paused.clear()


def run_phase(
    st: Stack,
    load: LoyaltySystem,
    probe: ReadinessProbe,
    name: str,
    settle: float = 5.0,
    label: str = "",
    fault: Fault | None = None,
) -> PhaseResult:
    """Steady load for `settle` seconds, then the fault named `name` (or `fault`), then the recovery."""
    fault = fault or FAULTS[name][0]
    label = label or name
    if name == "database disk full" and not st.disk.mounted:
        return PhaseResult(label, None, skipped=st.disk.error or "no tmpfs")
    restarts = st.supervisor.restarts()
    load.phase = label
    time.sleep(settle)  # steady load before the fault
    log(f"fault: {label}")
    window = fault(st)
    log(f"  lifted after {window.lifted - window.started:.1f} s ({window.note})")
    api_back, drained = measure_recovery(st, load, window)
    log(f"  API answering 201 after {api_back} s; every earlier SMS delivered after {drained} s")
    resend = resend_delays(st, window) if fault is smsc_drop or name == "smsc drops mid-window" else None
    if resend:
        log(f"  SMS outstanding at the drop reached the SMSC: {resend}")
    return PhaseResult(
        label,
        window,
        api_back,
        drained,
        probe.between(window.started, window.lifted + max(api_back or 0, 2.0)),
        st.supervisor.restarts() - restarts,
        resend=resend,
    )
