"""A campaign's runner in real worker processes (issue 27): a worker killed with SIGKILL mid-campaign
loses and doubles no line, and two worker processes drain one campaign together with no line run
twice. On the fault harness's stack (tests/harness/stack.py), each part in its own process.

"Exactly once" is read in the database: every line is `done` with a redemption of its own, that
redemption carries the line's key (`campaign:<id>:<ref>`) and the campaign, and its creation time is
the line's `done_at`: the runner writes both with the same clock reading in one transaction, so a line
whose redemption was made by an earlier run (a second run, caught by the idempotency key) would show
a later `done_at`."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import dramatiq
import httpx
import psutil
import pytest
from dramatiq.brokers.redis import RedisBroker

from service.kit.messaging.jobs import RUN_CAMPAIGN
from tests.harness.stack import OFFER, PROGRAM, TARIFF, Service, Stack, child_processes, stack

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def st():
    with stack(codes=2000) as st:
        yield st


@pytest.fixture(scope="module")
def approver(st):
    return st.approver_key("approver@example.kz", "approver")


def start_campaign(st: Stack, approver: str, lines: int, name: str, rate: int | None) -> str:
    """A campaign of `lines` lines through the API, submitted and approved (its runner is then sent)."""
    auth = {"Authorization": f"Bearer {st.key}"}
    body = {"program": PROGRAM, "tariff": TARIFF, "offer": OFFER, "name": name, "rate_per_second": rate}
    created = httpx.post(f"{st.base}/v1/campaigns", json=body, headers=auth, timeout=30)
    assert created.status_code == 201, created.text
    campaign = created.json()["id"]
    first = {"kill": 0, "two": 1000}[name]  # phones of their own per campaign (exposure rules)
    csv = "phone,offer,ref\n" + "".join(f"+7702{first + n:07d},,r{n}\n" for n in range(lines))
    headers = {**auth, "Content-Type": "text/csv", "Content-Disposition": 'attachment; filename="l.csv"'}
    uploaded = httpx.put(f"{st.base}/v1/campaigns/{campaign}/lines", content=csv, headers=headers, timeout=60)
    assert uploaded.status_code == 200 and uploaded.json()["report"]["problems"] == 0, uploaded.text
    submitted = httpx.post(f"{st.base}/v1/campaigns/{campaign}/submit", headers=auth, timeout=30)
    assert submitted.status_code == 200, submitted.text
    approved = httpx.post(
        f"{st.base}/v1/campaigns/{campaign}/approve",
        headers={"Authorization": f"Bearer {approver}"},
        timeout=30,
    )
    assert approved.status_code == 200, approved.text
    return campaign


def lines_done(st: Stack, campaign: str) -> tuple[str, int]:
    status, done = st.sql(
        "SELECT c.status, (SELECT count(*) FROM campaign_lines l WHERE l.campaign_id = c.id"
        " AND l.status <> 'pending') FROM campaigns c WHERE c.id = %s",
        (campaign,),
    )[0]
    return status, done


def wait_done(st: Stack, campaign: str, within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status, _ = lines_done(st, campaign)
        if status == "done":
            return
        time.sleep(0.5)
    raise AssertionError(f"the campaign is {lines_done(st, campaign)} after {within:.0f} s, not done")


def assert_each_line_once(st: Stack, campaign: str, lines: int) -> None:
    total, done, linked, once, redemptions, keys = st.sql(
        "SELECT count(*), count(*) FILTER (WHERE l.status = 'done'), count(DISTINCT l.redemption_id),"
        "       count(*) FILTER (WHERE r.external_id = 'campaign:' || l.campaign_id || ':' || l.ref"
        "                        AND r.campaign_id = l.campaign_id AND r.created_at = l.done_at),"
        "       (SELECT count(*) FROM redemptions WHERE campaign_id = %(c)s),"
        "       (SELECT count(DISTINCT external_id) FROM redemptions WHERE campaign_id = %(c)s)"
        "  FROM campaign_lines l LEFT JOIN redemptions r ON r.id = l.redemption_id"
        " WHERE l.campaign_id = %(c)s",
        {"c": campaign},
    )[0]
    assert (total, done, linked, redemptions, keys) == (lines,) * 5, (
        f"{total} lines, {done} done, {linked} redemptions linked; {redemptions} redemptions of the"
        f" campaign with {keys} keys"
    )
    assert once == lines, f"{lines - once} lines took a redemption made by an earlier run of the line"


def campaign_processes(service: Service) -> list[psutil.Process]:
    """The Dramatiq worker processes of `service` that consume the `campaigns` queue (not their
    `dramatiq` command, whose parent is the `rewards worker`)."""
    return [
        p
        for p in child_processes(service.pid, RUN_CAMPAIGN.queue)
        if p.ppid() != service.pid and "resource_tracker" not in " ".join(p.cmdline())
    ]


def _lines_logged(path: Path, campaign: str) -> int:
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if '"campaign_step"' in line and campaign in line:
            total += json.loads(line[line.index("{") :])["lines"]
    return total


def test_a_worker_killed_mid_campaign_loses_and_doubles_no_line(st, approver):
    lines = 400
    campaign = start_campaign(st, approver, lines, "kill", rate=50)
    deadline = time.monotonic() + 60
    while lines_done(st, campaign)[1] < 100:
        assert time.monotonic() < deadline, f"the campaign did not start: {lines_done(st, campaign)}"
        time.sleep(0.05)
    # Kill while a chunk's transaction is open and has written (a redemption made, not committed).
    worker = st.service("worker")
    deadline, in_chunk = time.monotonic() + 5, False
    while not in_chunk and time.monotonic() < deadline:
        in_chunk = bool(
            st.sql(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_xid IS NOT NULL AND pid <> pg_backend_pid()"
            )
        )
    killed_pid, before = worker.pid, lines_done(st, campaign)[1]
    os.killpg(killed_pid, signal.SIGKILL)  # the `rewards worker`, its Dramatiq commands and processes
    print(f"killed the worker at {before} of {lines} lines ({'inside' if in_chunk else 'between'} chunks)")
    assert 0 < before < lines, "the kill fell outside the campaign"
    # A new worker (the harness's supervisor starts the service again); the message the dead one had
    # fetched goes back to the queue after Dramatiq's heartbeat timeout (15 s here).
    deadline = time.monotonic() + 30
    while worker.proc is None or worker.pid == killed_pid or not campaign_processes(worker):
        assert time.monotonic() < deadline, "no new worker"
        time.sleep(0.2)
    wait_done(st, campaign, 180)
    assert_each_line_once(st, campaign, lines)


def test_two_worker_processes_drain_one_campaign_together_running_no_line_twice(st, approver):
    # Both commands log their runner steps (INFO: the harness runs them at WARNING otherwise), and
    # each of their processes holds one runner message at a time (Dramatiq prefetches twice its
    # threads by default, so the first process to poll could take every runner of the campaign).
    first = st.service("worker")
    first.stop()
    first.env = {**first.env, "LOG_LEVEL": "INFO", "dramatiq_queue_prefetch": "1"}
    first.start()
    second = Service("worker-2", first.argv, first.env, st.work / "logs")
    st.supervisor.add(second).start()
    try:
        deadline = time.monotonic() + 60
        while not (campaign_processes(second) and campaign_processes(st.service("worker"))):
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.2)
        time.sleep(3)  # both consuming
        lines = 600
        campaign = start_campaign(st, approver, lines, "two", rate=None)
        # Approval sent one runner; three more, so that each process has steps to run at once.
        broker = RedisBroker(url=st.env["REDIS_URL"])
        for _ in range(3):
            broker.enqueue(
                dramatiq.Message(
                    queue_name=RUN_CAMPAIGN.queue,
                    actor_name=RUN_CAMPAIGN.actor,
                    args=(),
                    kwargs={"campaign_id": campaign},
                    options={},
                )
            )
        wait_done(st, campaign, 180)
        # Each runner step logs the lines it ran and its process: both commands ran some.
        ran = {
            name: _lines_logged(st.work / "logs" / f"{name}.log", campaign) for name in ("worker", "worker-2")
        }
        print(f"lines each worker command ran: {ran}")
        assert all(ran.values()), f"a worker ran no line: {ran}"
        assert sum(ran.values()) == lines
        assert_each_line_once(st, campaign, lines)
    finally:
        second.stop()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v", "-s"]))
