"""Transactional outbox: work for the workers is written in the same transaction as the business
change that causes it, and a relay publishes it to Dramatiq after commit. A rolled-back transaction
leaves no message; a committed one leaves a row the relay will publish (at least once)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, func, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, Session, mapped_column

from service.db import Base


class OutboxMessage(Base):
    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_unpublished", "id", postgresql_where=text("published_at IS NULL")),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True, default=uuid.uuid4)
    queue: Mapped[str] = mapped_column(String(64))
    actor: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    publish_attempts: Mapped[int] = mapped_column(Integer, server_default="0")


def enqueue(session: Session, *, queue: str, actor: str, payload: dict) -> OutboxMessage:
    message = OutboxMessage(queue=queue, actor=actor, payload=payload)
    session.add(message)
    return message


# --- relay ---------------------------------------------------------------------------------------
# Publishes committed outbox rows to Dramatiq at least once. The Dramatiq message id is the row's
# message_id, and every actor is idempotent on its own key, so a row published twice (a crash
# between enqueue and commit, or a sweep) never has a second effect.

import threading  # noqa: E402
import time  # noqa: E402

import structlog  # noqa: E402
from sqlalchemy import text  # noqa: E402

log = structlog.get_logger("outbox")


# Actors whose rows the relay packs: actor -> (the packed actor, its keyword, the item of one row).
# A burst then costs the workers one claim and one write per pack, not per row.
PACKED = {
    "deliver_reward_sms": ("deliver_reward_sms_batch", "jobs", lambda p: [p["redemption_id"], p["send"]]),
    "send_webhook": ("send_webhooks", "event_ids", lambda p: p["event_id"]),
}


def publish_batch(broker, limit: int = 500) -> int:
    """Publishes up to `limit` committed rows; rows of a PACKED actor go out up to SMS_BATCH_SIZE
    to a Dramatiq message. SMS_BATCH_SIZE=1 publishes every row on its own, to its own actor (what
    workers from before the packs understand, for a rolling upgrade)."""
    import dramatiq

    from service.config import get_settings
    from service.db import transaction
    from service.metrics import OUTBOX_PUBLISHED

    pack_size = get_settings().sms_batch_size
    with transaction() as session:
        # Marked published first, in the transaction that publishes them: if publishing fails, the
        # rollback un-marks them; if the process dies after publishing, before the commit, they go
        # out again (at least once). The ids as an array, not `IN (subquery)`: a join the planner
        # could answer with a scan of the whole outbox.
        rows = sorted(
            session.execute(
                text(
                    "UPDATE outbox SET published_at = now(), publish_attempts = publish_attempts + 1 WHERE id = ANY(ARRAY("
                    " SELECT id FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT :limit FOR UPDATE SKIP LOCKED))"
                    " RETURNING id, message_id, queue, actor, payload"
                ),
                {"limit": limit},
            ).all(),
            key=lambda r: r.id,
        )
        packs: dict[tuple[str, str], list] = {}
        for row in rows:
            if row.actor in PACKED and pack_size > 1:
                packs.setdefault((row.queue, row.actor), []).append(PACKED[row.actor][2](row.payload))
                continue
            broker.enqueue(
                dramatiq.Message(
                    queue_name=row.queue,
                    actor_name=row.actor,
                    args=(),
                    kwargs=row.payload,
                    options={},
                    message_id=str(row.message_id),
                )
            )
            OUTBOX_PUBLISHED.labels(row.actor).inc()
        for (queue, actor), items in packs.items():
            packed_actor, keyword, _ = PACKED[actor]
            for start in range(0, len(items), pack_size):
                broker.enqueue(
                    dramatiq.Message(
                        queue_name=queue,
                        actor_name=packed_actor,
                        args=(),
                        kwargs={keyword: items[start : start + pack_size]},
                        options={},
                        message_id=str(uuid.uuid4()),
                    )
                )
            OUTBOX_PUBLISHED.labels(actor).inc(len(items))
    return len(rows)


def sweep(stale_seconds: int = 300) -> int:
    """Re-publishes work the broker lost (a Redis flush, a delayed retry stalled after a Redis restart):
    SMS jobs whose message never started or stopped moving, and webhook events never delivered."""
    from service.db import transaction

    with transaction() as session:
        swept = session.execute(
            text(
                "UPDATE outbox o SET published_at = NULL WHERE o.published_at < now() - make_interval(secs => :stale)"
                " AND (("
                "   o.actor = 'deliver_reward_sms' AND NOT EXISTS ("
                "     SELECT 1 FROM sms_messages m WHERE m.redemption_id = (o.payload->>'redemption_id')::uuid"
                "     AND m.send = (o.payload->>'send')::int"
                "     AND (m.status IN ('sent', 'delivered', 'failed', 'cancelled')"
                "          OR m.updated_at > now() - make_interval(secs => :stale))))"
                " OR (o.actor = 'send_webhook' AND EXISTS ("
                "     SELECT 1 FROM webhook_events e WHERE e.id = (o.payload->>'event_id')::uuid"
                "     AND e.delivered_at IS NULL AND e.given_up_at IS NULL"
                "     AND NOT EXISTS (SELECT 1 FROM webhook_attempts a WHERE a.event_id = e.id"
                "                     AND a.attempted_at > now() - make_interval(secs => :stale)))))"
            ),
            {"stale": stale_seconds},
        ).rowcount
    if swept:
        log.warning("outbox_swept", rows=swept)
    return swept


def housekeeping() -> dict[str, int]:
    """Time-driven work every worker pod may run (each step is idempotent and bounded): purge expired
    idempotency keys, expire cards past their date and book their breakage."""
    from datetime import datetime

    from service.cards.service import expire_cards
    from service.db import transaction
    from service.idempotency import purge_expired

    with transaction() as session:
        purged = purge_expired(session)
    with transaction() as session:
        expired = expire_cards(session, datetime.now(UTC)).expired
    if purged or expired:
        log.info("housekeeping", idempotency_keys_purged=purged, cards_expired=expired)
    return {"idempotency_keys_purged": purged, "cards_expired": expired}


class Relay:
    """A thread that publishes the outbox: a tight poll (SKIP LOCKED, so relays in several worker
    pods share the work) that keeps going while the broker is down and catches up when it returns."""

    def __init__(
        self, broker, idle_sleep: float = 0.05, sweep_every: float = 30.0, stale_seconds: int | None = None
    ):
        from service.config import get_settings

        self.broker = broker
        self.idle_sleep = idle_sleep
        self.sweep_every = sweep_every
        self.stale_seconds = stale_seconds or get_settings().outbox_stale_seconds
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="outbox-relay", daemon=True)

    def start(self) -> Relay:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=10)

    def run(self) -> None:
        backoff, last_sweep, last_housekeeping = 0.1, 0.0, 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_sweep > self.sweep_every:
                    sweep(self.stale_seconds)
                    last_sweep = time.monotonic()
                if time.monotonic() - last_housekeeping > 60:
                    last_housekeeping = time.monotonic()
                    housekeeping()
                published = publish_batch(self.broker)
                backoff = 0.1
                if published == 0:
                    self._stop.wait(self.idle_sleep)
            except Exception as exc:  # noqa: BLE001 - broker or database away: keep trying
                log.warning("outbox_relay_waiting", error=f"{type(exc).__name__}: {exc}", retry_in_s=backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
