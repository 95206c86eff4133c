"""The Dramatiq broker (Redis), configured from settings in every process that imports actors."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

import service.models  # noqa: F401  (every domain's models mapped before a job's first session)
from service.kit.config import get_settings
from service.kit.observability import tracing


def setup_broker() -> RedisBroker:
    settings = get_settings()
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL is not set (the CLI sets it in embedded mode)")
    broker = RedisBroker(
        url=settings.redis_url,
        heartbeat_timeout=settings.dramatiq_heartbeat_timeout_ms,
        maintenance_chance=settings.dramatiq_maintenance_chance,
    )
    if tracing.setup_tracing("rewards-worker"):  # a no-op where the process set it up as another role
        broker.add_middleware(tracing.dramatiq_middleware())
    dramatiq.set_broker(broker)
    return broker


broker = setup_broker()
