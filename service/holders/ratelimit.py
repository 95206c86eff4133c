"""Rate limits of the holders' pages, per client address and per token (and, for card number + PIN
tries, per address over a longer window): fixed-window counters in Redis, one round trip for all of a
request's counters. Over a limit the page answers 429 with Retry-After. If Redis is unreachable the
limits are skipped (logged): the card's PIN lock and the one-time code's tries, in PostgreSQL, hold."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import redis
import structlog

from service.kit.config import get_settings

log = structlog.get_logger("holders")


@dataclass(frozen=True)
class Limit:
    name: str  # what is counted, e.g. "address:<ip>" (never a token in clear: its hash)
    limit: int
    window_seconds: int


@lru_cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)


def subject(kind: str, value: str) -> str:
    """A counter's name: the kind and a short hash of the value (an address or a token)."""
    return f"{kind}:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:24]}"


def check(limits: list[Limit], now: float) -> int | None:
    """Counts one request against each limit; the seconds to wait when one is exceeded, else None."""
    names = []
    for limit in limits:
        window = int(now // limit.window_seconds)
        names.append((f"rewards:ratelimit:holders:{limit.name}:{window}", limit, window))
    try:
        pipe = _redis(get_settings().redis_url or "").pipeline(transaction=False)
        for name, limit, _ in names:
            pipe.incr(name)
            pipe.expire(name, limit.window_seconds * 2)
        counts = pipe.execute()[::2]
    except redis.RedisError as exc:
        log.warning("holder_rate_limit_unavailable", error=type(exc).__name__)
        return None
    waits = [
        max(1, math.ceil((window + 1) * limit.window_seconds - now))
        for (_, limit, window), count in zip(names, counts, strict=True)
        if count > limit.limit
    ]
    return max(waits) if waits else None


def page_limits(address: str | None, token: str | None) -> list[Limit]:
    settings = get_settings()
    limits = [Limit(subject("address", address or "unknown"), settings.holder_rate_per_address, 60)]
    if token is not None:
        limits.append(Limit(subject("token", token), settings.holder_rate_per_token, 60))
    return limits


def card_try_limits(address: str | None) -> list[Limit]:
    settings = get_settings()
    return [Limit(subject("card-tries", address or "unknown"), settings.holder_card_tries_per_address, 900)]
