"""Universal cards: minting (an unguessable number with a Luhn check digit and a random PIN),
verification and exchange by partners, expiry with breakage, blocking by support."""

from __future__ import annotations

import hmac
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from psycopg import Connection
from psycopg.rows import class_row
from sqlalchemy.orm import Session

from service.cards import lockout
from service.cards.errors import (
    CardBlocked,
    CardCancelled,
    CardExhausted,
    CardExpired,
    CardLocked,
    CardNotBlockable,
    CardNotBlocked,
    CardNotFound,
    CommittedRefusal,
    InsufficientBalance,
    NotExchangeable,
    WrongCardOrPin,
)
from service.cards.lockout import CardClient
from service.cards.numbers import new_card_number, new_pin
from service.cards.schemas import (
    CardDetailsOut,
    CardEventOut,
    CardExchangeOut,
    CardLockOut,
    CardOut,
    CertificateOut,
    ExchangeableProduct,
    ExchangeOut,
    VerifyOut,
)
from service.cards.sql import compose, load
from service.catalog.errors import UnknownProduct
from service.catalog.snapshot import CatalogSnapshot, ProductInfo, get_snapshot
from service.events import webhooks
from service.kit.db.engine import driver
from service.kit.http.errors import Problem, not_found
from service.kit.observability.metrics import (
    CARD_EXCHANGES,
    CARD_LOCKS,
    CARD_PIN_FAILURES,
    CARD_PIN_THROTTLED,
    CARDS_EXPIRED,
    CODES_TAKEN,
)
from service.kit.security.crypto import Vault, get_vault
from service.kit.values.ids import uuid7
from service.kit.values.money import Money
from service.kit.values.zones import zone
from service.ledger import service as ledger
from service.pools.errors import OutOfStock
from service.pools.service import TakenCode, take_code


def pin_matches(vault: Vault, pin_enc: bytes, offered: str, key_id: str | None) -> bool:
    return hmac.compare_digest(vault.decrypt(pin_enc, b"card-pin", key_id).encode(), offered.encode())


@lru_cache
def mint_card_sql(*, when: str = "true", sandbox: bool = False) -> str:
    """The INSERT (or CTE body) of a new card (sql/mint_card.sql), RETURNING what a redemption names it
    by; no row when `when` is false or the number is already taken (the caller draws another).
    Parameters: product, currency, nominal, now and new_card().params()."""
    return compose("mint_card", when=when, sandbox="true" if sandbox else "false")


@dataclass(frozen=True)
class NewCard:
    """A new card's number and PIN, encrypted, with its fingerprint, last 4 and expiry."""

    fingerprint: bytes
    number_enc: bytes
    last4: str
    pin_enc: bytes
    key_id: str
    expires_at: datetime

    def params(self) -> dict[str, Any]:
        """The card's parameters of mint_card_sql()."""
        return {
            "card_fingerprint": self.fingerprint,
            "card_number_enc": self.number_enc,
            "card_last4": self.last4,
            "card_pin_enc": self.pin_enc,
            "card_key_id": self.key_id,
            "card_expires_at": self.expires_at,
        }


def new_card(vault: Vault, *, validity_days: int, now: datetime) -> NewCard:
    """A new card (its params() are those of mint_card_sql()). The number's unique index decides
    collisions (10^11 numbers)."""
    number, pin = new_card_number(), new_pin()
    return NewCard(
        fingerprint=vault.fingerprint(number),
        number_enc=vault.encrypt(number, b"card-number"),
        last4=number[-4:],
        pin_enc=vault.encrypt(pin, b"card-pin"),
        key_id=vault.key_id,
        expires_at=now + timedelta(days=validity_days),
    )


# --- verifying and exchanging ---------------------------------------------------------------------
#
# Every function takes `now`, so tests drive lockouts and expiry with a clock of their own.

DEFAULT_ZONE = zone("Asia/Almaty")

log = structlog.get_logger("cards")

DEBIT_CARD = load("debit_card")


@dataclass(frozen=True)
class Card:
    """A card as its verification and exchange read it (sql/card.sql), with what they need of the
    redemption that issued it (None for each when no redemption did)."""

    id: int
    product_id: int
    last4: str
    number_fingerprint: bytes
    pin_enc: bytes
    key_id: str
    currency: str
    nominal_minor: int
    balance_minor: int
    status: str
    expires_at: datetime
    redemption_id: uuid.UUID | None
    external_id: str | None
    program_id: int | None
    tariff_id: int | None
    offer_id: int | None


# A card by its number (a sandbox card is a test value: to partners it is no card at all), by id for
# its holder, and by its redemption; locked as an exchange locks it.
CARD_BY_NUMBER = compose("card", where="c.number_fingerprint = %(fp)s AND NOT c.sandbox FOR UPDATE OF c")
CARD_BY_ID = compose("card", where="c.id = %(id)s AND NOT c.sandbox FOR UPDATE OF c")
CARD_BY_REDEMPTION = compose("card", where="r.id = %(rid)s")
CARD_BY_REDEMPTION_LOCKED = compose("card", where="r.id = %(rid)s FOR UPDATE OF c")
CARD_USE = compose("card_use", lock="")
CARD_USE_LOCKED = compose("card_use", lock="FOR UPDATE")
CARD_EVENT = load("card_event")
SET_STATUS = load("set_status")
CANCEL_CARD = load("cancel_card")
CERTIFICATE = load("certificate")
EXPIRE_CARDS = load("expire_cards")
EXCHANGES_OF_CARD = load("card_exchanges")
EVENTS_OF_CARD = load("card_events")


def _card(db: Connection[Any], statement: str, params: dict[str, Any]) -> Card | None:
    with db.cursor(row_factory=class_row(Card)) as cursor:
        return cursor.execute(statement, params).fetchone()


@dataclass(frozen=True)
class CardUse:
    """What says whether anybody has used a card (and so whether its redemption may be cancelled)."""

    status: str
    balance_minor: int
    nominal_minor: int

    @property
    def untouched(self) -> bool:
        """Still active as stored (not blocked, exhausted, cancelled, nor ended by the expiry job) with
        its whole nominal left."""
        return self.status == "active" and self.balance_minor == self.nominal_minor


def card_use(session: Session, card_id: int, *, for_update: bool = False) -> CardUse:
    with driver(session).cursor(row_factory=class_row(CardUse)) as cursor:
        cursor.execute(CARD_USE_LOCKED if for_update else CARD_USE, {"id": card_id})
        found = cursor.fetchone()
    assert found is not None, f"card {card_id} of a redemption exists"  # redemptions.card_id references it
    return found


def cancel_card(db: Connection[Any], card_id: int) -> None:
    """The card of a cancelled redemption: cancelled, its balance gone with it."""
    db.execute(CANCEL_CARD, {"id": card_id})


def effective_status(card: Card, now: datetime) -> str:
    """An active card past its date is expired even before the expiry job has run."""
    return "expired" if card.status == "active" and card.expires_at <= now else card.status


def _zone(snap: CatalogSnapshot, program_id: int | None) -> ZoneInfo:
    program = snap.programs_by_id.get(program_id) if program_id is not None else None
    return program.zone if program is not None else DEFAULT_ZONE


def _card_vat(
    snap: CatalogSnapshot, card: Card | ExpiredCard, amount_minor: int, now: datetime
) -> tuple[int, int]:
    """VAT of a card product whose VAT falls at redemption is booked when its value is used (an
    exchange) or lost (breakage); when it fell at sale, the issue record already carries it."""
    product = snap.products[card.product_id]
    if product.vat_point != "redemption":
        return 0, 0
    rate = snap.vat_rate_bp(product.vat_schedule, now.astimezone(_zone(snap, card.program_id)).date())
    return rate, ledger.vat_included(amount_minor, rate)


def _event(
    session: Session, card_id: int, event: str, reason: str | None, api_key_id: int | None, now: datetime
) -> None:
    driver(session).execute(
        CARD_EVENT, {"card": card_id, "event": event, "reason": reason, "key": api_key_id, "now": now}
    )


_DUMMY_PINS: dict[str, bytes] = {}


def _dummy_pin(vault: Vault) -> tuple[bytes, str]:
    """A PIN ciphertext no number has, checked when the number is unknown: the same work as a real
    check, so the time of the answer tells nothing either."""
    if vault.key_id not in _DUMMY_PINS:
        _DUMMY_PINS[vault.key_id] = vault.encrypt(new_pin(), b"card-pin")
    return _DUMMY_PINS[vault.key_id], vault.key_id


def authenticate_card(
    session: Session,
    number: str,
    pin: str,
    *,
    now: datetime,
    client: CardClient,
    api_key_id: int | None = None,
) -> Card:
    """The card of this number and PIN, for whoever types them: a partner (API, console desk), the
    public /card page (`CardClient.address(ip)`), admin (`CardClient.staff(key_id)`).

    An unknown number (a sandbox card's too) is answered, counted and timed exactly like a wrong PIN:
    422 `wrong_card_or_pin` with the client's `remaining_attempts`. Wrong PINs are counted per number
    and per client with progressive delays, and across clients up to a cap that locks the card for
    everyone (service/cards/lockout.py): 423 `card_locked`, `lock` saying which. Refusals that count
    raise CommittedRefusal (commit, then answer); one held back by a lock raises CardLocked.

    The lock guards number + PIN entry only. The holder's own link (/r/<token>) is never locked by
    PIN failures elsewhere: it does not come here, it reads the card with card_for_exchange()."""
    vault = get_vault()
    fingerprint = vault.fingerprint(number)
    db = driver(session)
    lockout.serialize(db, fingerprint)
    card = _card(db, CARD_BY_NUMBER, {"fp": fingerprint})
    held = lockout.current_lock(db, fingerprint, client, now)
    if held is not None:
        raise _locked(held, now)
    pin_enc, key_id = (bytes(card.pin_enc), card.key_id) if card is not None else _dummy_pin(vault)
    if pin_matches(vault, pin_enc, pin, key_id) and card is not None:
        lockout.record_success(db, fingerprint, client)
        return card
    failure = lockout.record_failure(db, fingerprint, client, now)
    CARD_PIN_FAILURES.inc()
    card_id = card.id if card is not None else None
    log.info("card_wrong_pin", card_number=number, card_id=card_id, client=client.kind, api_key_id=api_key_id)
    if failure.card_locked:
        assert failure.lock is not None
        CARD_LOCKS.inc()
        log.warning(
            "card_locked",
            card_number=number,
            card_id=card_id,
            client=client.kind,
            api_key_id=api_key_id,
            locked_until=failure.lock.until.isoformat(),
        )
        if card is not None:
            _event(session, card.id, "locked", "wrong PINs from several clients", api_key_id, now)
    if failure.lock is not None:
        if failure.lock.scope == "client":
            CARD_PIN_THROTTLED.inc()
        raise CommittedRefusal(_locked(failure.lock, now))
    raise CommittedRefusal(
        WrongCardOrPin(
            f"the card number or the PIN is wrong; {failure.remaining} attempt(s) left before a delay",
            remaining_attempts=failure.remaining,
        )
    )


def _locked(lock: lockout.Lock, now: datetime) -> CardLocked:
    retry = max(1, math.ceil((lock.until - now).total_seconds()))
    detail = (
        f"too many wrong PINs from you on this card: try again after {lock.until.isoformat()}"
        if lock.scope == "client"
        else f"too many wrong PINs on this card: it is locked until {lock.until.isoformat()}"
        " (support can lift it)"
    )
    return CardLocked(
        detail,
        lock=lock.scope,
        locked_until=lock.until.isoformat(),
        remaining_attempts=0,
        headers={"Retry-After": str(retry)},
    )


def _client(client: CardClient | None, partner: str | None) -> CardClient:
    if client is not None:
        return client
    if partner is None:
        raise ValueError("name the client that offers the card number and PIN")
    return CardClient.partner(partner)


def _exchangeable(snap: CatalogSnapshot, card_product_id: int, partner: str | None) -> list[ProductInfo]:
    catalog = snap.products[card_product_id].exchange_catalog
    products = [snap.products[i] for i in catalog if i in snap.products]
    return sorted(
        (
            p
            for p in products
            if p.active
            and p.kind == "code"
            and p.face_value_minor
            and (partner is None or p.partner_code == partner)
        ),
        key=lambda p: p.sku,
    )


def exchangeable(snap: CatalogSnapshot, card_product_id: int) -> list[ProductInfo]:
    """The active certificates a card product may be exchanged for, every partner's."""
    return _exchangeable(snap, card_product_id, None)


def _card_out(card: Card, now: datetime, balance: int | None = None, status: str | None = None) -> CardOut:
    """The card's state as its partners and support see it; `balance` and `status`: after a debit."""
    return CardOut(
        last4=card.last4,
        status=status or effective_status(card, now),
        balance=Money.of(card.balance_minor if balance is None else balance, card.currency),
        nominal=Money.of(card.nominal_minor, card.currency),
        expires_at=card.expires_at,
    )


def verify(
    session: Session,
    number: str,
    pin: str,
    *,
    partner: str | None,
    now: datetime,
    api_key_id: int | None,
    client: CardClient | None = None,
) -> VerifyOut:
    """Balance, expiry, status and the partner's products this card may be exchanged for
    (`partner` None: every product of the exchange catalog, for admin). `client`: who offers the
    number and PIN (authenticate_card); by default the partner."""
    snap = get_snapshot(session)
    card = authenticate_card(
        session, number, pin, now=now, client=_client(client, partner), api_key_id=api_key_id
    )
    out = _card_out(card, now)
    usable = out.status == "active"
    products = [
        ExchangeableProduct(
            sku=p.sku,
            name=p.name,
            face_value=Money.of(p.face_value_minor or 0, p.currency),
            affordable=usable
            and p.currency == card.currency
            and (p.face_value_minor or 0) <= card.balance_minor,
        )
        for p in _exchangeable(snap, card.product_id, partner)
    ]
    return VerifyOut(**dict(out), products=products)


@dataclass(frozen=True)
class ExchangeResult:
    out: ExchangeOut
    code: str
    pin: str | None


def _refuse_unusable(card: Card, now: datetime) -> None:
    status = effective_status(card, now)
    if status == "cancelled":
        raise CardCancelled("the card's redemption was cancelled")
    if status == "blocked":
        raise CardBlocked("the card is blocked; the subscriber should call support")
    if status == "expired":
        raise CardExpired(f"the card expired at {card.expires_at.isoformat()}")
    if status == "exhausted":
        raise CardExhausted("the card's balance is used up")


def exchange(
    session: Session,
    number: str,
    pin: str,
    sku: str,
    *,
    partner: str,
    now: datetime,
    api_key_id: int | None,
    client: CardClient | None = None,
) -> ExchangeResult:
    """One transaction: lock the card, check it, take a certificate from the partner's pool exactly
    like a redemption takes a code, debit the card, write the exchange and its record. `client`: who
    offers the number and PIN (authenticate_card); by default the partner."""
    snap = get_snapshot(session)
    product = snap.products_by_sku.get(sku)
    if product is None or product.partner_code != partner:  # another partner's sku is none of its business
        raise UnknownProduct(f"you have no product {sku}")
    card = authenticate_card(
        session, number, pin, now=now, client=_client(client, partner), api_key_id=api_key_id
    )
    try:
        return _exchange(session, snap, card, product, now=now, api_key_id=api_key_id)
    except Problem as refusal:  # the PIN was right: its counter reset is kept with the stored refusal
        raise CommittedRefusal(refusal) from None


def card_for_exchange(session: Session, card_id: int) -> Card:
    """A card by id, its row locked as authenticate_card() locks it, for its holder, who reached it
    through their own link (/r/<token>): no number, no PIN, and so no PIN lock in the way. A sandbox
    card is none (partners and online exchanges never see one)."""
    card = _card(driver(session), CARD_BY_ID, {"id": card_id})
    if card is None:
        raise CardNotFound("no such card")
    return card


def check_exchange(snap: CatalogSnapshot, card: Card, product: ProductInfo, now: datetime) -> None:
    """The refusals of an exchange that the card and the catalog decide (unusable card, product not in
    its exchange catalog, balance short), without taking anything."""
    _refuse_unusable(card, now)
    allowed = {p.id for p in _exchangeable(snap, card.product_id, product.partner_code)}
    if product.id not in allowed or product.currency != card.currency:
        raise NotExchangeable(f"this card cannot be exchanged for {product.sku}")
    face = product.face_value_minor or 0
    if card.balance_minor < face:
        raise InsufficientBalance(
            f"the card has {Money.of(card.balance_minor, card.currency).amount} {card.currency};"
            f" {product.sku} costs {Money.of(face, card.currency).amount} {card.currency}",
        )


def exchange_online(session: Session, card: Card, product: ProductInfo, *, now: datetime) -> ExchangeResult:
    """The holder's own exchange on the reward page, confirmed by a one-time code: the partner desk's
    engine (certificate from the pool, debit, record with its VAT point, webhook), channel `online`.
    `card` is locked by the caller (card_for_exchange) in this transaction."""
    return _exchange(
        session, get_snapshot(session), card, product, now=now, api_key_id=None, channel="online"
    )


def _exchange(
    session: Session,
    snap: CatalogSnapshot,
    card: Card,
    product: ProductInfo,
    *,
    now: datetime,
    api_key_id: int | None,
    channel: str = "partner",
) -> ExchangeResult:
    check_exchange(snap, card, product, now)
    face = product.face_value_minor or 0
    db = driver(session)
    certificate = take_code(db, product.id, status="issued", now=now)
    if certificate is None:
        raise OutOfStock(f"no certificates left for {product.sku}")
    CODES_TAKEN.labels(product.sku).inc()
    debited = db.execute(DEBIT_CARD, {"face": face, "id": card.id}).fetchone()
    assert debited is not None  # the card row is locked by this transaction
    balance, status = debited
    exchange_id = uuid7()
    _write_exchange(
        db, snap, card, product, certificate, exchange_id, now=now, api_key_id=api_key_id, channel=channel
    )
    CARD_EXCHANGES.labels(product.sku).inc()
    program = snap.programs_by_id.get(card.program_id) if card.program_id is not None else None
    if program is not None:
        webhooks.emit(
            db,
            program_id=program.id,
            webhook_url=program.webhook_url,
            redemption_id=card.redemption_id,
            event="card.exchanged",
            now=now,
            data={
                "redemption_id": str(card.redemption_id),
                "external_id": card.external_id,
                "card_last4": card.last4,
                "exchange_id": str(exchange_id),
                "sku": product.sku,
                "partner": product.partner_code,
                "amount": Money.of(face, product.currency).model_dump(mode="json"),
                "balance": Money.of(balance, card.currency).model_dump(mode="json"),
                "channel": channel,
            },
        )
    log.info(
        "card_exchanged",
        card_id=card.id,
        exchange_id=str(exchange_id),
        sku=product.sku,
        amount_minor=face,
        balance_minor=balance,
        api_key_id=api_key_id,
        channel=channel,
    )
    vault = get_vault()
    out = ExchangeOut(
        id=exchange_id,
        created_at=now,
        amount=Money.of(face, product.currency),
        card=_card_out(card, now, balance=balance, status=status),
        certificate=CertificateOut(
            sku=product.sku,
            name=product.name,
            code="",
            last4=certificate.last4,
            face_value=Money.of(face, product.currency),
            expires_at=certificate.expires_at,
        ),
    )
    return ExchangeResult(
        out,
        vault.decrypt(certificate.code_enc, b"code", certificate.key_id),
        vault.decrypt(certificate.pin_enc, b"pin", certificate.key_id)
        if certificate.pin_enc is not None
        else None,
    )


def _write_exchange(
    db: Connection[Any],
    snap: CatalogSnapshot,
    card: Card,
    product: ProductInfo,
    certificate: TakenCode,
    exchange_id: uuid.UUID,
    *,
    now: datetime,
    api_key_id: int | None,
    channel: str = "partner",
) -> None:
    """The exchange and its record, in one statement."""
    face = product.face_value_minor or 0
    rate, _ = _card_vat(snap, card, face, now)
    record = ledger.exchange_record(
        ledger.Record(
            occurred_at=now,
            program_id=card.program_id,
            tariff_id=card.tariff_id,
            offer_id=card.offer_id,
            product_id=product.id,
            sku=product.sku,
            partner_id=product.partner_id,
            currency=product.currency,
            face_value_minor=face,
            cost_minor=product.cost_price_minor or 0,
            vat_rate_bp=rate,
            code_fingerprint=certificate.fingerprint,
            code_last4=certificate.last4,
            card_id=card.id,
        ),
        channel=channel,
    )
    db.execute(
        _exchange_sql(record.sql),
        {
            "id": exchange_id,
            "card": card.id,
            "product": product.id,
            "partner": product.partner_id,
            "code": certificate.id,
            "amount": face,
            "now": now,
            "key": api_key_id,
            "channel": channel,
            **record.params,
        },
    )


@lru_cache
def _exchange_sql(record_sql: str) -> str:
    return compose("exchange", record=record_sql)


@dataclass(frozen=True)
class Certificate:
    code_enc: bytes
    pin_enc: bytes | None
    key_id: str


def reveal_certificate(session: Session, exchange_id: uuid.UUID, partner: str) -> tuple[str, str | None]:
    """The certificate of one of the partner's exchanges, decrypted (replays read it again, so the
    idempotency store never holds a code in clear)."""
    with driver(session).cursor(row_factory=class_row(Certificate)) as cursor:
        found = cursor.execute(CERTIFICATE, {"id": exchange_id, "partner": partner}).fetchone()
    if found is None:
        raise not_found(f"exchange {exchange_id}")
    vault = get_vault()
    return (
        vault.decrypt(found.code_enc, b"code", found.key_id),
        vault.decrypt(found.pin_enc, b"pin", found.key_id) if found.pin_enc is not None else None,
    )


# --- lifecycle ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExpiryResult:
    expired: int
    breakage_minor: int


@dataclass(frozen=True)
class ExpiredCard:
    """A card the expiry job has just expired, with its unused balance and its redemption's ids."""

    id: int
    product_id: int
    currency: str
    last4: str
    number_fingerprint: bytes
    sandbox: bool
    unused: int
    redemption_id: uuid.UUID | None
    external_id: str | None
    program_id: int | None
    tariff_id: int | None
    offer_id: int | None


def expire_cards(session: Session, now: datetime, *, limit: int = 1000) -> ExpiryResult:
    """Expires up to `limit` active cards past their date and books each unused balance as one
    breakage record, in the caller's transaction. Idempotent: an expired card is never picked again.
    Cards being exchanged right now are skipped (SKIP LOCKED) and expire on the next run."""
    snap = get_snapshot(session)
    db = driver(session)
    with db.cursor(row_factory=class_row(ExpiredCard)) as cursor:
        rows = cursor.execute(EXPIRE_CARDS, {"now": now, "limit": limit}).fetchall()
    total = 0
    events = []
    for card in rows:
        program = snap.programs_by_id.get(card.program_id) if card.program_id is not None else None
        if program is not None:
            events.append(
                webhooks.Event(
                    program.id,
                    program.webhook_url,
                    card.redemption_id,
                    "card.expired",
                    {
                        "redemption_id": str(card.redemption_id),
                        "external_id": card.external_id,
                        "card_last4": card.last4,
                        "unused_balance": Money.of(card.unused, card.currency).model_dump(mode="json"),
                        "expired_at": now.isoformat(),
                        "sandbox": card.sandbox,
                    },
                )
            )
        _event(
            session,
            card.id,
            "expired",
            f"unused balance {Money.of(card.unused, card.currency).amount} {card.currency}",
            None,
            now,
        )
        if card.unused <= 0 or card.sandbox:  # a sandbox card's balance was never money
            continue
        rate, _ = _card_vat(snap, card, card.unused, now)
        ledger.write_breakage(
            db,
            ledger.Record(
                occurred_at=now,
                program_id=card.program_id,
                tariff_id=card.tariff_id,
                offer_id=card.offer_id,
                product_id=card.product_id,
                sku=snap.products[card.product_id].sku,
                partner_id=None,
                currency=card.currency,
                face_value_minor=card.unused,
                cost_minor=0,
                vat_rate_bp=rate,
                code_fingerprint=bytes(card.number_fingerprint),
                code_last4=card.last4,
                card_id=card.id,
            ),
        )
        total += card.unused
    webhooks.emit_many(db, events, now=now)
    if rows:
        CARDS_EXPIRED.inc(len(rows))
        log.info("cards_expired", count=len(rows), breakage_minor=total)
    return ExpiryResult(len(rows), total)


def _card_by_redemption(
    session: Session, redemption_id: uuid.UUID, *, for_update: bool, programs: frozenset[str] | None
) -> Card:
    """The card a redemption issued; `programs`: those the caller may see (None: all). A redemption of
    another program is as unknown as one that does not exist."""
    card = _card(
        driver(session),
        CARD_BY_REDEMPTION_LOCKED if for_update else CARD_BY_REDEMPTION,
        {"rid": redemption_id},
    )
    if card is not None and programs is not None:
        program = (
            None if card.program_id is None else get_snapshot(session).programs_by_id.get(card.program_id)
        )
        if program is None or program.code not in programs:
            card = None
    if card is None:
        raise CardNotFound(f"redemption {redemption_id} has no card")
    return card


def set_blocked(
    session: Session,
    redemption_id: uuid.UUID,
    *,
    blocked: bool,
    reason: str,
    api_key_id: int | None,
    now: datetime,
    programs: frozenset[str] | None = None,
) -> CardDetailsOut:
    """Support blocks an active card (suspected fraud, a lost phone) or unblocks a blocked one;
    both are audited in card_events with the key and the reason. `programs`: the caller's scope."""
    card = _card_by_redemption(session, redemption_id, for_update=True, programs=programs)
    if blocked and card.status != "active":
        raise CardNotBlockable(
            f"only an active card can be blocked; this one is {card.status}",
        )
    if not blocked and card.status != "blocked":
        raise CardNotBlocked(f"the card is {card.status}, not blocked")
    driver(session).execute(SET_STATUS, {"status": "blocked" if blocked else "active", "id": card.id})
    _event(session, card.id, "blocked" if blocked else "unblocked", reason, api_key_id, now)
    log.info("card_blocked" if blocked else "card_unblocked", card_id=card.id, api_key_id=api_key_id)
    return card_details(session, redemption_id, now=now)


def unlock(
    session: Session,
    redemption_id: uuid.UUID,
    *,
    reason: str,
    api_key_id: int | None,
    now: datetime,
    programs: frozenset[str] | None = None,
) -> CardDetailsOut:
    """Support lifts any PIN lock of the card: the lock for everyone and every client's delay.
    Audited in card_events (`unlocked`, with the key and the reason), whether or not it was locked."""
    card = _card_by_redemption(session, redemption_id, for_update=True, programs=programs)
    lifted = lockout.unlock(driver(session), bytes(card.number_fingerprint))
    _event(session, card.id, "unlocked", reason, api_key_id, now)
    log.info("card_unlocked", card_id=card.id, api_key_id=api_key_id, counts_cleared=lifted)
    return card_details(session, redemption_id, now=now)


@dataclass(frozen=True)
class CardExchange:
    id: uuid.UUID
    sku: str
    partner: str
    amount_minor: int
    last4: str
    created_at: datetime
    channel: str


@dataclass(frozen=True)
class CardEvent:
    event: str
    reason: str | None
    key_id: str | None
    at: datetime


def card_details(
    session: Session, redemption_id: uuid.UUID, *, now: datetime, programs: frozenset[str] | None = None
) -> CardDetailsOut:
    card = _card_by_redemption(session, redemption_id, for_update=False, programs=programs)
    count = lockout.card_lock(driver(session), bytes(card.number_fingerprint), now)
    db = driver(session)
    with db.cursor(row_factory=class_row(CardExchange)) as cursor:
        exchanges = cursor.execute(EXCHANGES_OF_CARD, {"id": card.id}).fetchall()
    with db.cursor(row_factory=class_row(CardEvent)) as cursor:
        events = cursor.execute(EVENTS_OF_CARD, {"id": card.id}).fetchall()
    return CardDetailsOut(
        **dict(_card_out(card, now)),
        redemption_id=card.redemption_id,
        lock=CardLockOut(locked_until=count.blocked_until, failures=count.failures)
        if count.blocked_until is not None
        else None,
        exchanges=[
            CardExchangeOut(
                id=e.id,
                sku=e.sku,
                partner=e.partner,
                amount=Money.of(e.amount_minor, card.currency),
                last4=e.last4,
                created_at=e.created_at,
                channel=e.channel,
            )
            for e in exchanges
        ],
        events=[CardEventOut(event=e.event, reason=e.reason, key_id=e.key_id, at=e.at) for e in events],
    )
