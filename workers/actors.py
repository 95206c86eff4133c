"""The actors `rewards worker` runs (`dramatiq workers.actors`). Each one calls a domain function."""
from __future__ import annotations

import time
import uuid

import dramatiq
from dramatiq.rate_limits import WindowRateLimiter
from dramatiq.rate_limits.backends import RedisBackend

from service.config import get_settings
from service.delivery import service as delivery
from service.delivery import webhooks
from service.delivery.providers import get_provider
from service.logging import configure_logging
from workers.broker import SMS_QUEUE, WEBHOOK_QUEUE, broker

configure_logging(get_settings().log_level, get_settings().log_json)

_limiter = None


class BindSmscAtBoot(dramatiq.Middleware):
    """Reward-SMS processes bind to the SMSC when they start, not on their first message; processes
    that only serve webhooks or bulk traffic do not bind at all."""

    def after_worker_boot(self, broker, worker) -> None:
        queues = getattr(worker, "consumer_whitelist", None)  # None: every queue
        if get_settings().sms_provider == "smpp" and (not queues or SMS_QUEUE in queues):
            get_provider()


broker.add_middleware(BindSmscAtBoot())


def _provider_slot() -> None:
    """The per-provider throughput limit, shared by every worker through Redis (a 1 s sliding window)."""
    global _limiter
    if _limiter is None:
        settings = get_settings()
        backend = RedisBackend(client=broker.client)
        _limiter = WindowRateLimiter(backend, f"sms-provider:{settings.sms_provider}", limit=settings.sms_rate_limit,
                                     window=1)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with _limiter.acquire(raise_on_failure=False) as acquired:
            if acquired:
                return
        time.sleep(0.02)
    raise dramatiq.Retry("provider rate limit", delay=1000)


@dramatiq.actor(queue_name=SMS_QUEUE, max_retries=100_000, min_backoff=1_000, max_backoff=300_000,
                time_limit=120_000)
def deliver_reward_sms(redemption_id: str, send: int) -> None:
    _provider_slot()
    try:
        delivery.deliver(uuid.UUID(redemption_id), send, provider=get_provider())
    except delivery.RetryLater as later:
        raise dramatiq.Retry(str(later), delay=later.delay_ms) from None


@dramatiq.actor(queue_name=WEBHOOK_QUEUE, max_retries=100_000, min_backoff=5_000, max_backoff=3_600_000,
                time_limit=60_000)
def send_webhook(event_id: str) -> None:
    webhooks.deliver_event(uuid.UUID(event_id))
