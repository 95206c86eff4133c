"""The Dramatiq broker (Redis), configured from settings in every process that imports actors."""

from __future__ import annotations

import os
import socket
import uuid

import dramatiq
import structlog
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
    # The id names this process's set of fetched messages in Redis. Prefixed with the host and the
    # parent's pid (the `dramatiq` command that forked this worker process), so that when that
    # command dies, `rewards worker` finds its sets and puts their messages back (requeue_fetched).
    broker.broker_id = f"{_id_prefix(os.getppid())}{uuid.uuid4().hex}"
    if tracing.setup_tracing("rewards-worker"):  # a no-op where the process set it up as another role
        broker.add_middleware(tracing.dramatiq_middleware())
    dramatiq.set_broker(broker)
    return broker


def _id_prefix(command_pid: int) -> str:
    return f"rw:{socket.gethostname()}:{command_pid}:"


def requeue_fetched(command_pid: int) -> int:
    """Puts back on their queues the messages that the worker processes of a `dramatiq` command that
    died had fetched and not acknowledged, at once, instead of after the heartbeat timeout (60 s).
    Dramatiq's own `requeue` under each dead process's id: the message is pushed back only if it
    still exists (an acknowledged one is gone). A message that ran before the death runs again:
    every actor is idempotent on its own key. Returns how many were put back."""
    client = broker.client
    prefix = f"{broker.namespace}:__acks__.{_id_prefix(command_pid)}"
    requeued = 0
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        name = key.decode() if isinstance(key, bytes) else str(key)
        unique, _, queue = name[len(prefix) :].partition(".")  # <hex>.<queue> (queues may hold dots)
        dead_id = _id_prefix(command_pid) + unique
        message_ids = [m.decode() if isinstance(m, bytes) else str(m) for m in client.smembers(name)]
        if not message_ids:
            continue
        stand_in = RedisBroker(client=client, namespace=broker.namespace)
        stand_in.broker_id = dead_id
        stand_in.do_requeue(queue, *message_ids)
        requeued += len(message_ids)
    if requeued:
        structlog.get_logger("workers").warning(
            "fetched_messages_requeued", dramatiq_pid=command_pid, messages=requeued
        )
    return requeued


broker = setup_broker()
