"""Wrong PINs throttle whoever makes them, not the card's holder (docs/cards.md, "Brute-force
protection", has these numbers for partners and support).

Failures are counted per card number (its fingerprint, so an unknown number is counted exactly like a
real one) and per client: the partner (its API keys and its cashiers in the console alike), the
address on the public /card page, the key for admin. A client has FREE wrong PINs on a number; then
it waits before its next try there: 1 minute, doubling up to 1 hour. Its count is forgotten 24 hours
after its last failure, and a right PIN clears it.

Across clients, each client's first FREE failures on a number add to the number's count; at
GLOBAL_CAP the number is locked for every client for GLOBAL_LOCK (an alert fires: the
rewards_card_locks_total metric). One client alone can never lock a card for the others, however
long it tries. A support action (`unlock`, audited in card_events) lifts the lock and every client's
delay on the card.

Only number + PIN entry is throttled. The holder's own link (/r/<token>) reaches the card without
them and is never held back by failures elsewhere (service.cards.service.card_for_exchange)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from psycopg import Connection

from service.kit.security import throttle

KIND = "card"
CLIENT_POLICY = throttle.Policy(
    free=5, first_delay=timedelta(minutes=1), max_delay=timedelta(hours=1), forget_after=timedelta(hours=24)
)
GLOBAL_CAP = 20
GLOBAL_LOCK = timedelta(hours=24)
GLOBAL_POLICY = throttle.Policy(
    free=GLOBAL_CAP, first_delay=GLOBAL_LOCK, max_delay=GLOBAL_LOCK, forget_after=timedelta(hours=24)
)
FORGET_AFTER = max(CLIENT_POLICY.forget_after, GLOBAL_POLICY.forget_after, GLOBAL_LOCK)
_LOCK_CLASS = 7270020  # pg_advisory_xact_lock(class, number): attempts on one number, one at a time


@dataclass(frozen=True)
class CardClient:
    """Who offers a card number and PIN. Build it with `partner`, `address` or `staff`."""

    kind: Literal["partner", "address", "staff"]
    id: str

    @classmethod
    def partner(cls, code: str) -> CardClient:
        """A partner: its API keys and its cashiers in the console count as one client."""
        return cls("partner", code)

    @classmethod
    def address(cls, address: str | None) -> CardClient:
        """A network address (the public /card page): IPv4 as it is, IPv6 by its /64."""
        return cls("address", throttle.address_client(address).removeprefix("address:"))

    @classmethod
    def staff(cls, key_id: str) -> CardClient:
        """An admin key, or anyone else verifying on the operator's side."""
        return cls("staff", key_id)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.id}"[:80]


@dataclass(frozen=True)
class Lock:
    scope: Literal["client", "card"]  # this client waits, or the card is locked for everyone
    until: datetime


@dataclass(frozen=True)
class Failure:
    remaining: int  # wrong PINs this client has left on the number before its delays start
    lock: Lock | None  # what now holds this client back, if anything
    card_locked: bool  # this failure reached the cap: the card is now locked for everyone


def serialize(db: Connection[Any], fingerprint: bytes) -> None:
    """Attempts on one number, card or not, are decided one after another."""
    number = int.from_bytes(hashlib.sha256(fingerprint).digest()[:4], "big", signed=True)
    db.execute("SELECT pg_advisory_xact_lock(%(class)s, %(key)s)", {"class": _LOCK_CLASS, "key": number})


def current_lock(db: Connection[Any], fingerprint: bytes, client: CardClient, now: datetime) -> Lock | None:
    """The lock that refuses this client's attempt now, unheard (the card's first)."""
    held = throttle.blocked(db, KIND, fingerprint, [throttle.ANY, client.key], now)
    if throttle.ANY in held:
        return Lock("card", held[throttle.ANY])
    if client.key in held:
        return Lock("client", held[client.key])
    return None


def record_failure(db: Connection[Any], fingerprint: bytes, client: CardClient, now: datetime) -> Failure:
    mine = throttle.fail(db, KIND, fingerprint, client.key, CLIENT_POLICY, now)
    card_locked = False
    lock = Lock("client", mine.blocked_until) if mine.blocked_until else None
    if mine.failures <= CLIENT_POLICY.free:  # the client's share of the card's count
        card = throttle.fail(db, KIND, fingerprint, throttle.ANY, GLOBAL_POLICY, now)
        if card.blocked_until is not None:
            card_locked, lock = True, Lock("card", card.blocked_until)
    return Failure(CLIENT_POLICY.remaining(mine.failures), lock, card_locked)


def record_success(db: Connection[Any], fingerprint: bytes, client: CardClient) -> None:
    throttle.clear(db, KIND, fingerprint, client.key)


def card_lock(db: Connection[Any], fingerprint: bytes, now: datetime) -> throttle.Count:
    """The number's count across clients (and its lock, if it is locked)."""
    return throttle.count(db, KIND, fingerprint, throttle.ANY, GLOBAL_POLICY, now)


def unlock(db: Connection[Any], fingerprint: bytes) -> int:
    """Lifts the card's lock and every client's delay on it."""
    return throttle.clear(db, KIND, fingerprint)
