"""Faults under load, on the whole service with each part in its own process (tests/harness/, the
harness of bench/faults.py): a loyalty system keeps redeeming, retrying with the same key, while the
database restarts or Redis comes back empty; afterwards every redemption it saw answered 201 exists
once, with its issue record and exactly one SMS at the SMSC, settled by its receipt, and no code went
out twice. And the API's memory stays flat across 50,000 redemptions."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from functools import partial

import httpx
import psutil
import pytest

from tests.conftest import import_codes_for, redemption_body
from tests.harness.faults import pg_fast_restart, redis_empty, run_phase, smsc_drop, smsc_unbind
from tests.harness.loyalty import LoyaltySystem, RawHttp, ReadinessProbe
from tests.harness.stack import free_port, stack
from tests.harness.verdict import check, wait_settled

pytestmark = pytest.mark.faults
RATE = 40  # redemptions per second


@pytest.fixture(scope="module")
def service_stack():
    # The sweeper waits 120 s here: only the relay's check of the broker can bring back a lost job
    # within the minute the Redis test allows.
    with stack(codes=8000, env_overrides={"OUTBOX_STALE_SECONDS": "120"}) as st:
        yield st


def under_load(st, name: str, fault, first: int):
    """Redemptions at RATE/s around the fault; returns the phase, the operations and the verdict."""
    load = LoyaltySystem(st.base, st.key, RATE, first=first).start()
    probe = ReadinessProbe(st.base).start()
    try:
        result = run_phase(st, load, probe, name, settle=3, fault=fault)
        time.sleep(2)
    finally:
        load.stop()
        probe.stop()
    assert wait_settled(st, 240) == 0, "redemptions still on their way 4 minutes after the fault"
    verdict = check(st, load.ops)
    print(*verdict.lines, sep="\n")
    return result, load.ops, verdict


def answers(ops, outcome: str) -> int:
    return sum(op.answered[outcome] for op in ops)


def test_postgres_restarted_under_load_loses_nothing_and_sends_nothing_twice(service_stack):
    result, ops, verdict = under_load(
        service_stack, "postgres fast restart", partial(pg_fast_restart, down=5), first=0
    )
    assert verdict.total_lost == 0 and verdict.total_doubled == 0
    assert all(op.final == 201 for op in ops)
    assert answers(ops, "503") > 0, "the outage was never seen"
    assert answers(ops, "500") == 0
    assert "503" in result.readyz
    assert result.restarts == 0  # the service recovered by itself
    assert result.drained is not None


def redis_empty_with_jobs_waiting(st):
    """Redis restarted empty while jobs wait in it: the workers stop for 3 s first, so the relay's
    jobs pile up in the queue, and the restart loses them."""
    st.service("worker").stop()
    time.sleep(3)
    window = redis_empty(st)
    st.service("worker").start()
    return window


def test_redis_restarted_empty_under_load_loses_nothing_and_sends_nothing_twice(service_stack):
    result, ops, verdict = under_load(
        service_stack, "redis restarted empty", redis_empty_with_jobs_waiting, first=100_000
    )
    assert verdict.total_lost == 0 and verdict.total_doubled == 0
    assert all(op.final == 201 for op in ops)
    assert answers(ops, "500") == 0 and answers(ops, "503") == 0  # the API never needs Redis
    # The relay found the broker empty and published again what it had lost, at once: every SMS of
    # the redemptions before the restart went out well inside OUTBOX_STALE_SECONDS (120 here), after
    # which the sweeper would have found them.
    assert result.drained is not None and result.drained < 60


def test_an_smsc_drop_with_submits_in_flight_resends_what_never_left_at_once_and_doubles_nothing(
    service_stack,
):
    """The SMSC holds 16 submits unanswered (taking every other SMS among them) and drops every
    connection. What the session had not written yet reaches the SMSC within seconds of the drop;
    the held SMS the SMSC took are settled by their receipts (never sent twice); the held ones it did
    not take stay in doubt for SMS_IN_DOUBT_SECONDS (30 here) and then go again."""
    result, ops, verdict = under_load(service_stack, "smsc drops mid-window", smsc_drop, first=200_000)
    assert verdict.total_lost == 0 and verdict.total_doubled == 0
    resend = result.resend
    print(f"SMS outstanding at the drop reached the SMSC: {resend}")
    assert resend is not None and resend.held == 16 and 0 < resend.taken < 16
    assert all(delay < 10 for delay in resend.at_once)  # reconnect and bind, not the in-doubt window
    # the held SMS the SMSC did not take, and any written after them and never read: in doubt for
    # SMS_IN_DOUBT_SECONDS (30 here, counted from their submit, just before the drop)
    assert resend.in_doubt and 25 <= min(resend.in_doubt) and max(resend.in_doubt) < 90


def test_an_smsc_that_unbinds_under_load_loses_nothing_and_sends_nothing_twice(service_stack):
    result, ops, verdict = under_load(service_stack, "smsc unbinds", smsc_unbind, first=300_000)
    assert verdict.total_lost == 0 and verdict.total_doubled == 0
    assert result.drained is not None and result.drained < 30


TOTAL, CONNECTIONS = 50_000, 16


def test_api_memory_does_not_grow_across_50000_redemptions(keys, services):
    """`rewards api` in its own process (2 uvicorn processes, as deployed), driven over 16 keep-alive
    connections; the resident memory of each of its processes is read every 5,000 redemptions."""
    from sqlalchemy import text

    from service.catalog.snapshot import invalidate_snapshot
    from service.kit.db.engine import transaction

    import_codes_for("ARAY-CINEMA-2000", [f"MEM-{i:07d}" for i in range(TOTAL)])
    with transaction() as s:  # the demo budget would run out long before 50,000
        s.execute(text("UPDATE programs SET monthly_budget_minor = 100000000000"))
    invalidate_snapshot()
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "api", "--port", str(port), "--workers", "2"],
        env={**os.environ, "LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
        processes = [p for p in psutil.Process(api.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(processes) == 2
        rss: dict[int, list[float]] = {}
        refused: list[int | None] = []
        started = time.monotonic()

        async def drive() -> None:
            http = RawHttp(base, CONNECTIONS)
            numbers = iter(range(TOTAL))
            done = 0

            async def client() -> None:
                nonlocal done
                for n in numbers:
                    body = redemption_body(msisdn=f"8747{n:07d}", external_id=f"mem-{n}")
                    answer = await http.post(
                        "/v1/redemptions",
                        json.dumps(body).encode(),
                        {**keys.header("loyalty"), "Idempotency-Key": f"mem-{n}"},
                        timeout=30,
                    )
                    if answer.status != 201:
                        refused.append(answer.status)
                    done += 1
                    if done % 5000 == 0:
                        rss[done] = [round(p.memory_info().rss / 2**20, 1) for p in processes]

            await asyncio.gather(*(client() for _ in range(CONNECTIONS)))
            http.close()

        asyncio.run(drive())
        took = time.monotonic() - started
    finally:
        api.terminate()
        api.wait(timeout=30)
    print(f"{TOTAL} redemptions in {took:.0f} s ({TOTAL / took:.0f}/s); RSS MiB of the API processes: {rss}")
    assert refused == []
    # After warm-up (caches, pools, the allocator's arenas) each process stays flat: a leak of even
    # 512 bytes a redemption would add some 10 MiB to each over the last 40,000.
    for process in range(2):
        assert rss[TOTAL][process] - rss[10_000][process] < 6, rss
