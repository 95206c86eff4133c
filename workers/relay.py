"""The outbox relay: publishes committed outbox rows to Dramatiq, at least once.

The Dramatiq message id is the row's message_id, and every actor is idempotent on its own key, so a
row published twice (a crash between publishing and commit, or a sweep) never has a second effect."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import dramatiq
import structlog
from dramatiq.brokers.redis import RedisBroker

from service.kit.config import get_settings
from service.kit.db.engine import driver, transaction
from service.kit.messaging import jobs
from service.kit.observability import tracing
from service.kit.observability.metrics import OUTBOX_PUBLISHED
from service.kit.supervisor import now_iso
from workers.housekeeping import housekeeping

log = structlog.get_logger("outbox")


# Jobs whose rows the relay packs: the job of one row -> (the packed job, its keyword, the item of
# one row). A burst then costs the workers one claim and one write per pack, not per row.
PACKED: dict[str, tuple[jobs.Job, str, Callable[[dict[str, Any]], Any]]] = {
    jobs.REWARD_SMS.actor: (jobs.REWARD_SMS_BATCH, "jobs", lambda p: [p["redemption_id"], p["send"]]),
    jobs.WEBHOOK.actor: (jobs.WEBHOOKS, "event_ids", lambda p: p["event_id"]),
}


def publish_batch(broker: dramatiq.Broker, limit: int = 500) -> int:
    """Publishes up to `limit` committed rows; rows of a PACKED job go out up to SMS_BATCH_SIZE to a
    Dramatiq message. SMS_BATCH_SIZE=1 publishes every row on its own, to its own actor (what
    workers from before the packs understand, for a rolling upgrade)."""
    pack_size = get_settings().sms_batch_size
    with transaction() as session:
        # Marked published first, in the transaction that publishes them: if publishing fails, the
        # rollback un-marks them; if the process dies after publishing, before the commit, they go
        # out again (at least once). The ids as an array, not `IN (subquery)`: a join the planner
        # could answer with a scan of the whole outbox.
        rows = sorted(
            session.connection()
            .exec_driver_sql(
                "UPDATE outbox SET published_at = now(), publish_attempts = publish_attempts + 1"
                " WHERE id = ANY(ARRAY(SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id"
                " LIMIT %(limit)s FOR UPDATE SKIP LOCKED))"
                " RETURNING id, message_id, queue, actor, payload, trace_parent",
                {"limit": limit},
            )
            .all(),
            key=lambda r: r.id,
        )
        packs: dict[str, list[Any]] = {}
        parents: dict[str, list[str | None]] = {}  # the trace context of each packed row
        for row in rows:
            if row.actor in PACKED and pack_size > 1:
                packs.setdefault(row.actor, []).append(PACKED[row.actor][2](row.payload))
                parents.setdefault(row.actor, []).append(row.trace_parent)
                continue
            _publish(broker, row.queue, row.actor, row.payload, str(row.message_id), [row.trace_parent])
            OUTBOX_PUBLISHED.labels(row.actor).inc()
        for actor, items in packs.items():
            packed, keyword, _ = PACKED[actor]
            for start in range(0, len(items), pack_size):
                _publish(
                    broker,
                    packed.queue,
                    packed.actor,
                    {keyword: items[start : start + pack_size]},
                    str(uuid.uuid4()),
                    parents[actor][start : start + pack_size],
                )
            OUTBOX_PUBLISHED.labels(actor).inc(len(items))
    return len(rows)


def _publish(
    broker: dramatiq.Broker, queue: str, actor: str, kwargs: dict, message_id: str, parents: list[str | None]
) -> None:
    """One Dramatiq message; with tracing on, under a publish span continuing its rows' traces, whose
    context the message carries."""
    message: dramatiq.Message = dramatiq.Message(
        queue_name=queue, actor_name=actor, args=(), kwargs=kwargs, options={}, message_id=message_id
    )
    if not tracing.enabled():
        broker.enqueue(message)
        return
    with tracing.publish_span(actor, parents):
        message.options.update(tracing.message_options())
        broker.enqueue(message)


def sweep(stale_seconds: int = 300) -> int:
    """Re-publishes work the broker lost (a Redis flush, a delayed retry stalled after a Redis restart):
    SMS jobs whose message never started or stopped moving, and webhook events never delivered."""
    with transaction() as session:
        swept = (
            driver(session)
            .execute(
                (
                    "UPDATE outbox o SET published_at = NULL"
                    " WHERE o.published_at < now() - make_interval(secs => %(stale)s) AND (("
                    "   o.actor = %(sms_actor)s AND NOT EXISTS ("
                    "     SELECT 1 FROM sms_messages m"
                    "     WHERE m.redemption_id = (o.payload->>'redemption_id')::uuid"
                    "     AND m.send = (o.payload->>'send')::int"
                    "     AND (m.status IN ('sent', 'delivered', 'failed', 'cancelled')"
                    "          OR m.updated_at > now() - make_interval(secs => %(stale)s))))"
                    " OR (o.actor = %(webhook_actor)s AND EXISTS ("
                    "     SELECT 1 FROM webhook_events e WHERE e.id = (o.payload->>'event_id')::uuid"
                    "     AND e.delivered_at IS NULL AND e.given_up_at IS NULL"
                    "     AND NOT EXISTS (SELECT 1 FROM webhook_attempts a WHERE a.event_id = e.id"
                    "                     AND a.attempted_at > now() - make_interval(secs => %(stale)s)))))"
                ),
                {
                    "stale": stale_seconds,
                    "sms_actor": jobs.REWARD_SMS.actor,
                    "webhook_actor": jobs.WEBHOOK.actor,
                },
            )
            .rowcount
        )
    if swept:
        log.warning("outbox_swept", rows=swept)
    return swept


# A key the relay keeps in Redis. Redis without it has lost its data (restarted without persistence,
# flushed, failed over to an empty replica), and with it every message it held: the relay that finds
# it missing sweeps at once instead of after OUTBOX_STALE_SECONDS.
BROKER_MARK = "rewards:outbox:broker-mark"


def broker_lost_data(broker: RedisBroker) -> bool:
    """True when the mark is missing (also on a brand-new Redis, where the sweep has nothing to do)."""
    return not broker.client.exists(BROKER_MARK)


def broker_run_id(broker: RedisBroker) -> str:
    """Redis's run id: a new one after every start of the server."""
    return str(broker.client.info("server")["run_id"])


class Relay:
    """A thread that publishes the outbox: a tight poll (SKIP LOCKED, so relays in several worker
    pods share the work) that keeps going while the broker is down and catches up when it returns.
    When Redis comes back empty, or restarted at all, it sweeps at once. It also runs the
    housekeeping every minute."""

    def __init__(
        self,
        broker: RedisBroker,
        idle_sleep: float = 0.05,
        sweep_every: float = 30.0,
        stale_seconds: int | None = None,
        max_backoff: float = 1.0,
    ):
        self.broker = broker
        self.idle_sleep = idle_sleep
        self.sweep_every = sweep_every
        self.stale_seconds = stale_seconds or get_settings().outbox_stale_seconds
        # While the broker or the database is away it tries again at most this far apart, so it
        # publishes within a second of their return.
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="outbox-relay", daemon=True)
        self.waiting: str | None = None  # what it waits for, while it does
        self.waiting_since: str | None = None

    def start(self) -> Relay:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)

    def view(self) -> dict[str, Any]:
        """Its state for /healthz of its process."""
        if not self.thread.is_alive():
            return {"state": "stopped", "since": self.waiting_since, "detail": None}
        if self.waiting:
            return {"state": "waiting", "since": self.waiting_since, "detail": self.waiting}
        return {"state": "running", "since": self.waiting_since, "detail": None}

    def run(self) -> None:
        backoff, last_sweep, last_housekeeping, last_mark = 0.1, 0.0, 0.0, 0.0
        run_id: str | None = None
        self.waiting_since = now_iso()
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_mark > 1.0:
                    current = broker_run_id(self.broker)
                    restarted = run_id is not None and current != run_id
                    if broker_lost_data(self.broker) or restarted:
                        # A restarted Redis may have kept its data (AOF), but a worker that lost its
                        # connection drops the delayed messages it held, which stay fetched under its
                        # name until it dies (Dramatiq #527): publish again every job not settled
                        # (idempotent), instead of waiting OUTBOX_STALE_SECONDS. The mark goes back
                        # only after the sweep: if the database is away too, the next pass sweeps again.
                        log.warning(
                            "broker_lost_data" if not restarted else "broker_restarted",
                            rows_published_again=sweep(0),
                        )
                        self.broker.client.set(BROKER_MARK, "1")
                    run_id = current
                    last_mark = time.monotonic()
                if time.monotonic() - last_sweep > self.sweep_every:
                    sweep(self.stale_seconds)
                    last_sweep = time.monotonic()
                if time.monotonic() - last_housekeeping > 60:
                    last_housekeeping = time.monotonic()
                    housekeeping()
                published = publish_batch(self.broker)
                backoff = 0.1
                if self.waiting:
                    log.info("outbox_relay_resumed", after=self.waiting)
                    self.waiting, self.waiting_since = None, now_iso()
                if published == 0:
                    self._stop.wait(self.idle_sleep)
            except Exception as exc:  # broker or database away: keep trying
                error = f"{type(exc).__name__}: {exc}"
                if self.waiting is None:
                    self.waiting_since = now_iso()
                self.waiting = error
                log.warning("outbox_relay_waiting", error=error, retry_in_s=backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
