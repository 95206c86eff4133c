"""The actors `rewards worker` runs (`dramatiq workers.actors`). Each one calls a domain function."""

from __future__ import annotations

import os
import random
import time
import uuid
from datetime import UTC, datetime

import dramatiq
import structlog
from dramatiq.middleware.prometheus import Prometheus

from service.campaigns import service as campaigns
from service.delivery import notices
from service.delivery import service as delivery
from service.events import webhooks
from service.kit.config import get_settings
from service.kit.db.engine import driver, transaction
from service.kit.messaging import jobs
from service.kit.observability.logging import configure_logging
from service.kit.observability.metrics import SMPP_BOUND
from workers.broker import broker

configure_logging(get_settings().log_level, get_settings().log_json)

_limiter = None
log = structlog.get_logger("workers")


class BindSmscAtBoot(dramatiq.Middleware):
    """Reward-SMS processes bind to the SMSC when they start, not on their first message; processes
    that only serve webhooks or bulk traffic do not bind at all."""

    def after_worker_boot(self, broker, worker) -> None:
        queues = getattr(worker, "consumer_whitelist", None)  # None: every queue
        if get_settings().sms_provider == "smpp" and (not queues or jobs.SMS_QUEUE in queues):
            settings = get_settings()
            # the series exists before the first bind, so an SMSC that never binds is visible
            SMPP_BOUND.labels(f"{settings.smpp_host}:{settings.smpp_port}").set(0)
            delivery.get_provider()

    def after_worker_shutdown(self, broker, worker) -> None:
        """Once the actor threads have finished their messages, the SMPP session unbinds (and waits
        for unbind_resp, bounded) before the process exits."""
        delivery.close_provider()


class PromptPolling(dramatiq.Middleware):
    """An idle consumer looks at its queue every DRAMATIQ_WORKER_TIMEOUT_MS, not every second."""

    def before_worker_boot(self, broker, worker) -> None:
        worker.worker_timeout = get_settings().dramatiq_worker_timeout_ms


class MessageMetrics(Prometheus):
    """Dramatiq's own Prometheus middleware (dramatiq_messages_total, dramatiq_message_errors_total,
    ..._retries_total, ..._duration_milliseconds, ..._inprogress), written to the multiprocess folder
    of `rewards worker`, whose exporter serves them with the rest (workers/exporter.py): Dramatiq's
    HTTP server, one per `dramatiq` command on a fixed port, is not started."""

    @property
    def forks(self) -> list:
        return []

    def after_process_boot(self, broker) -> None:
        super().after_process_boot(broker)
        # Every actor's series from the start, at zero: an error rate is then 0, not "no data".
        for name in broker.get_declared_actors():
            labels = (broker.get_actor(name).queue_name, name)
            for counter in (
                self.total_messages,
                self.total_errored_messages,
                self.total_retried_messages,
                self.total_rejected_messages,
            ):
                counter.labels(*labels)


broker.add_middleware(BindSmscAtBoot())
broker.add_middleware(PromptPolling())
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # run by `rewards worker`, which exports the metrics
    broker.add_middleware(MessageMetrics())

# The per-provider throughput limit, shared by every worker through Redis: a counter per second of
# Redis's own clock (so the pods' clocks do not matter), from which a batch takes what is left, and
# nothing when fewer than it needs at least are left (ARGV[3], capped by the limit).
_TAKE_SLOTS = """
local now = redis.call('TIME')
local key = KEYS[1] .. ':' .. now[1]
local used = tonumber(redis.call('GET', key) or '0')
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[1]) - used)
local least = math.max(1, math.min(tonumber(ARGV[3] or '1'), tonumber(ARGV[1])))
if grant < least then return {0, 1000000 - tonumber(now[2]), tonumber(now[1])} end
redis.call('INCRBY', key, grant)
redis.call('EXPIRE', key, 3)
return {grant, 0, tonumber(now[1])}
"""


def take_provider_slots(provider: str, limit: int, wanted: int, at_least: int = 1) -> tuple[int, int, int]:
    """One try: (slots granted, microseconds to the next second if none, the Redis second)."""
    global _limiter
    if _limiter is None:
        _limiter = broker.client.register_script(_TAKE_SLOTS)
    granted, wait_us, second = _limiter(
        keys=[f"sms-provider-rate:{provider}"], args=[limit, wanted, at_least]
    )
    return int(granted), int(wait_us), int(second)


def _pace(wanted: int, at_least: int = 1) -> int:
    """Up to `wanted` submit_sm PDUs of this second (operators throttle PDUs, so a long SMS costs one
    per part), or, if fewer than `at_least` are left, of the next second after waiting for it; 0 if
    still none."""
    if wanted <= 0:
        return 0
    settings = get_settings()
    name, limit = settings.sms_provider, settings.sms_rate_limit
    granted, wait_us, _ = take_provider_slots(name, limit, wanted, at_least)
    if granted:
        return granted
    time.sleep(int(wait_us) / 1e6 + random.random() * 0.02)
    return take_provider_slots(name, limit, wanted, at_least)[0]


@dramatiq.actor(
    actor_name=jobs.REWARD_SMS.actor,
    queue_name=jobs.REWARD_SMS.queue,
    max_retries=100_000,
    min_backoff=1_000,
    max_backoff=300_000,
    time_limit=120_000,
)
def deliver_reward_sms(redemption_id: str, send: int) -> None:
    """One send (the relay publishes sends as batches; this one carries the retries of a batch's send)."""
    try:
        delivery.deliver(uuid.UUID(redemption_id), send, provider=delivery.get_provider(), pace=_pace)
    except delivery.RetryLater as later:
        raise dramatiq.Retry(str(later), delay=later.delay_ms) from None


@dramatiq.actor(
    actor_name=jobs.REWARD_SMS_BATCH.actor,
    queue_name=jobs.REWARD_SMS_BATCH.queue,
    max_retries=100_000,
    min_backoff=1_000,
    max_backoff=300_000,
    time_limit=300_000,
)
def deliver_reward_sms_batch(jobs: list[list]) -> None:
    """Sends the relay packed together, [[redemption id, send], ...]. What cannot go out now is handed
    on as single sends with their own retries; if this job dies midway, Dramatiq runs it again and the
    sends already settled are skipped."""
    waiting = [delivery.Job(uuid.UUID(redemption_id), int(send)) for redemption_id, send in jobs]
    outcomes = delivery.deliver_many(waiting, provider=delivery.get_provider(), pace=_pace)
    for job, outcome in outcomes.items():
        if outcome.result is delivery.SendResult.RETRY:
            delay = outcome.retry_ms if outcome.retry_ms is not None else 1000 + random.randrange(1000)
            deliver_reward_sms.send_with_options(args=(str(job.redemption_id), job.send), delay=delay)


# Bulk work (campaigns' steps and SMS, expiry reminders) waits behind everything else a worker process
# has fetched: Dramatiq hands a free thread the fetched message of the lowest priority number first,
# so a reward SMS fetched by a process that serves the bulk queues too never waits behind a backlog
# of campaign SMS it had fetched before (they are FIFO among themselves).
BULK_PRIORITY = 100


def _bulk_pace(wanted: int, at_least: int = 1) -> int:
    """A campaign SMS's share of the rate: the bulk cap of its own, and, when it shares the account with
    the reward SMS, also a slot of the account's rate, so that both together stay within it. The
    account's slot is taken at once or not at all: waiting for the account's next second would spend
    this second's bulk slots in the next one (over the bulk cap there), and a bulk SMS that finds the
    account's second used up by reward SMS gives way to them."""
    if wanted <= 0:
        return 0
    settings = get_settings()
    name, limit = f"{settings.sms_provider}:bulk", settings.sms_bulk_rate_limit
    granted, wait_us, _ = take_provider_slots(name, limit, wanted, at_least)
    if not granted:
        time.sleep(int(wait_us) / 1e6 + random.random() * 0.02)
        granted = take_provider_slots(name, limit, wanted, at_least)[0]
    if granted and not delivery.has_bulk_account():
        least = min(at_least, granted)
        granted = take_provider_slots(settings.sms_provider, settings.sms_rate_limit, granted, least)[0]
    return granted


@dramatiq.actor(
    actor_name=jobs.CAMPAIGN_SMS.actor,
    priority=BULK_PRIORITY,
    queue_name=jobs.CAMPAIGN_SMS.queue,
    max_retries=100_000,
    min_backoff=5_000,
    max_backoff=3_600_000,
    time_limit=120_000,
)
def deliver_campaign_sms(redemption_id: str, send: int) -> None:
    """A campaign line's reward SMS, on the bulk queue and account: it waits out its program's quiet
    hours (a delayed message, back when they end), then goes like any reward SMS at the bulk rate."""
    rid = uuid.UUID(redemption_id)
    now = datetime.now(UTC)
    with transaction() as session:
        allowed = campaigns.bulk_sms_not_before(driver(session), rid, now)
    if allowed > now:
        delay = max(1000, int((allowed - now).total_seconds() * 1000) + random.randrange(60_000))
        deliver_campaign_sms.send_with_options(args=(redemption_id, send), delay=delay)
        return
    try:
        delivery.deliver(rid, send, provider=delivery.get_bulk_provider(), pace=_bulk_pace)
    except delivery.RetryLater as later:
        raise dramatiq.Retry(str(later), delay=later.delay_ms) from None


@dramatiq.actor(
    actor_name=jobs.RUN_CAMPAIGN.actor,
    priority=BULK_PRIORITY,
    queue_name=jobs.RUN_CAMPAIGN.queue,
    max_retries=100_000,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=120_000,
)
def run_campaign(campaign_id: str) -> None:
    """About a second of a campaign's lines, then the next step, unless it is done, paused or
    cancelled. A worker killed mid-step loses nothing: the lines it had not committed are pending
    again, and housekeeping sends a campaign whose steps stopped (workers/housekeeping.py)."""
    step = campaigns.run_step(uuid.UUID(campaign_id))
    if step.ran:
        # which process ran how many lines, once a second per runner: the campaign's progress in the log
        log.info("campaign_step", campaign_id=campaign_id, lines=step.ran, pid=os.getpid())
    if step.again_in_ms is not None:
        run_campaign.send_with_options(args=(campaign_id,), delay=step.again_in_ms or None)


def _deliver_notice(notice_id: int) -> None:
    try:
        notices.deliver_notice(int(notice_id), provider=delivery.get_provider(), pace=_pace)
    except notices.NoticeLater as later:  # a bulk notice in quiet hours: back when they end
        delay = max(1000, int((later.at - datetime.now(UTC)).total_seconds() * 1000))
        raise dramatiq.Retry(str(later), delay=delay) from None


@dramatiq.actor(
    actor_name=jobs.NOTICE_SMS.actor,
    queue_name=jobs.NOTICE_SMS.queue,
    max_retries=20,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=60_000,
)
def deliver_notice_sms(notice_id: int) -> None:
    """A one-time code or a certificate from the reward page, on the reward SMS's queue."""
    _deliver_notice(notice_id)


@dramatiq.actor(
    actor_name=jobs.BULK_NOTICE_SMS.actor,
    priority=BULK_PRIORITY,
    queue_name=jobs.BULK_NOTICE_SMS.queue,
    max_retries=1_000,
    min_backoff=5_000,
    max_backoff=3_600_000,
    time_limit=60_000,
)
def deliver_bulk_notice_sms(notice_id: int) -> None:
    """An expiry reminder, on the bulk queue: it waits out its program's quiet hours."""
    _deliver_notice(notice_id)


@dramatiq.actor(
    actor_name=jobs.WEBHOOK.actor,
    queue_name=jobs.WEBHOOK.queue,
    max_retries=100_000,
    min_backoff=5_000,
    max_backoff=3_600_000,
    time_limit=60_000,
)
def send_webhook(event_id: str) -> None:
    """One event (the relay publishes events packed; this one carries the retries of a packed event).
    A receiver that did not take it is tried again when the delivery said (its log line and the
    console show when): a new delayed message, not an exception, so no traceback for a normal state."""
    _again_later(uuid.UUID(event_id), webhooks.deliver_event(uuid.UUID(event_id)))


@dramatiq.actor(
    actor_name=jobs.WEBHOOKS.actor,
    queue_name=jobs.WEBHOOKS.queue,
    max_retries=100_000,
    min_backoff=5_000,
    max_backoff=3_600_000,
    time_limit=120_000,
)
def send_webhooks(event_ids: list[str]) -> None:
    """Events the relay packed together; those the receiver did not take go on as single events with
    their own backoff."""
    for event_id, attempted in webhooks.attempt_events([uuid.UUID(e) for e in event_ids]).items():
        _again_later(event_id, attempted)


def _again_later(event_id: uuid.UUID, attempted: webhooks.Attempted) -> None:
    if attempted.next_attempt_in_ms is not None:
        send_webhook.send_with_options(args=(str(event_id),), delay=attempted.next_attempt_in_ms)
