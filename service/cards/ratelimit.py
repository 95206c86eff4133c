"""Per-key rate limit on card lookups (verify and exchange): a fixed window counter in Redis.

Guessing card numbers or PINs needs many lookups; the per-card PIN lock stops guessing one card's
PIN, this limit stops one key from sweeping many cards. If Redis is unreachable the limit is skipped
(logged and counted): the per-card lock, in PostgreSQL, still holds, and partners keep working."""

from __future__ import annotations

import math
import os
from datetime import datetime
from functools import lru_cache

import redis
import structlog

from service.kit.config import get_settings
from service.kit.http.errors import RateLimited
from service.kit.observability.metrics import CARD_RATE_LIMITED

log = structlog.get_logger("cards")

# Lookups per key per window; CARD_RATE_LIMIT / CARD_RATE_WINDOW_SECONDS in the environment.
LIMIT = int(os.environ.get("CARD_RATE_LIMIT", "120"))
WINDOW_SECONDS = int(os.environ.get("CARD_RATE_WINDOW_SECONDS", "60"))


@lru_cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def check(key_id: str, now: datetime) -> None:
    """Counts one lookup for the key; 429 rate_limited with Retry-After once over the limit."""
    stamp = now.timestamp()
    window = int(stamp // WINDOW_SECONDS)
    name = f"rewards:ratelimit:cards:{key_id}:{window}"
    try:
        pipe = _redis(get_settings().redis_url).pipeline()
        pipe.incr(name)
        pipe.expire(name, WINDOW_SECONDS * 2)
        count = pipe.execute()[0]
    except redis.RedisError as exc:
        log.warning("card_rate_limit_unavailable", error=type(exc).__name__)
        return
    if count > LIMIT:
        CARD_RATE_LIMITED.inc()
        retry = max(1, math.ceil((window + 1) * WINDOW_SECONDS - stamp))
        raise RateLimited(
            f"at most {LIMIT} card lookups per {WINDOW_SECONDS} s per key; retry in {retry} s",
            headers={"Retry-After": str(retry)},
        )
