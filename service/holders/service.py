"""What a holder can do with the link of their SMS (/r/<token>) or a card's number and PIN (/card):
see the reward, show a code (which exposes it, as a sent SMS does), see a card's balance and history,
and exchange a card online for a certificate, confirmed by a one-time code sent by SMS to the card's
own phone. Every function takes a session (the caller's transaction) and `now`."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from psycopg import Connection
from psycopg.rows import class_row
from sqlalchemy.orm import Session

from service.cards import service as cards
from service.cards.errors import CardNotFound
from service.cards.lockout import CardClient
from service.catalog.snapshot import CatalogSnapshot, PartnerInfo, ProductInfo, ProgramInfo, get_snapshot
from service.delivery.notices import queue_notice
from service.holders import texts
from service.kit.db.engine import driver, one
from service.kit.http.errors import Problem
from service.kit.security.crypto import derive, get_vault
from service.kit.security.links import public_host, reward_token, token_hash
from service.kit.values.ids import uuid7
from service.kit.values.money import to_minor
from service.pools.errors import OutOfStock
from service.pools.service import has_stock, issue_reserved_code, read_code
from service.sandbox.service import sandbox_code

log = structlog.get_logger("holders")

OTP_TTL = timedelta(minutes=5)
OTP_TRIES = 3
OTPS_PER_HOUR = 3


@dataclass(frozen=True)
class Reward:
    """A redemption as its page sees it, with its card when it is one."""

    id: uuid.UUID
    program_id: int
    product_id: int
    msisdn: str
    locale: str
    status: str
    nominal_minor: int
    currency: str
    reward_last4: str
    reward_expires_at: datetime | None
    code_id: int | None
    card_id: int | None
    sandbox: bool
    revealed_at: datetime | None
    card_balance_minor: int | None
    card_nominal_minor: int | None
    card_status: str | None
    card_expires_at: datetime | None

    @property
    def is_card(self) -> bool:
        return self.card_id is not None

    def expired(self, now: datetime) -> bool:
        if self.is_card:
            return self.card_status == "expired" or (
                self.card_status == "active"
                and self.card_expires_at is not None
                and self.card_expires_at <= now
            )
        return self.reward_expires_at is not None and self.reward_expires_at <= now

    @property
    def expires_at(self) -> datetime | None:
        return self.card_expires_at if self.is_card else self.reward_expires_at


# One indexed lookup by the token's hash: a guessed token costs the same hash and the same query as a
# real one, and finds nothing.
_FIND = (
    "SELECT r.id, r.program_id, r.product_id, r.msisdn, r.locale, r.status, r.nominal_minor, r.currency,"
    " r.reward_last4, r.reward_expires_at, r.code_id, r.card_id, r.sandbox, r.revealed_at,"
    " c.balance_minor AS card_balance_minor, c.nominal_minor AS card_nominal_minor,"
    " c.status AS card_status, c.expires_at AS card_expires_at"
    " FROM redemptions r LEFT JOIN cards c ON c.id = r.card_id WHERE r.link_hash = %(hash)s"
)


def find_reward(session: Session, token: str) -> Reward | None:
    """The live reward of a token; None for an unknown token or a cancelled reward (the same answer)."""
    cursor = driver(session).cursor(row_factory=class_row(Reward))
    reward = cursor.execute(_FIND, {"hash": token_hash(token)}).fetchone()
    if reward is None or reward.status == "cancelled":
        return None
    return reward


def _event(
    db: Connection[Any],
    reward: Reward,
    event: str,
    now: datetime,
    *,
    exchange_id: uuid.UUID | None = None,
    sku: str | None = None,
) -> None:
    db.execute(
        "INSERT INTO holder_events (redemption_id, event, exchange_id, sku, at)"
        " VALUES (%(redemption_id)s, %(event)s, %(exchange_id)s, %(sku)s, %(at)s)",
        {"redemption_id": reward.id, "event": event, "exchange_id": exchange_id, "sku": sku, "at": now},
    )


# --- a code -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    code: str
    pin: str | None


@dataclass(frozen=True)
class _Revealed:
    # A row, not scalar_row: a sandbox reward has no code_id, which must not read as "cancelled".
    code_id: int | None


def reveal_code(session: Session, reward: Reward, *, now: datetime) -> Shown | None:
    """The code and PIN of a code reward, for the holder who tapped "show" (a POST). From now on the
    code counts as exposed: a cancel is refused as after a sent SMS, and a reserved code is issued.
    None if the reward was cancelled meanwhile (the cancel holds the row lock first, or after)."""
    db = driver(session)
    row = (
        db.cursor(row_factory=class_row(_Revealed))
        .execute(
            "UPDATE redemptions SET revealed_at = coalesce(revealed_at, %(now)s) WHERE id = %(id)s"
            " AND status <> 'cancelled' RETURNING code_id",
            {"now": now, "id": reward.id},
        )
        .fetchone()
    )
    if row is None:
        return None
    code_id = row.code_id
    if code_id is not None:
        issue_reserved_code(db, code_id, now=now)
        code, pin = read_code(db, code_id)
    else:  # a sandbox test code, from no pool
        code, pin = sandbox_code(reward.id), None
    _event(db, reward, "code_shown", now)
    log.info("holder_code_shown", redemption_id=str(reward.id))
    return Shown(code, pin)


# --- a card -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryLine:
    id: uuid.UUID
    product_id: int
    amount_minor: int
    created_at: datetime
    channel: str
    last4: str


@dataclass(frozen=True)
class Offer:
    """A certificate of the card's exchange catalog, as the page offers it."""

    product: ProductInfo
    partner: PartnerInfo | None
    affordable: bool


@dataclass(frozen=True)
class CardView:
    last4: str
    balance_minor: int
    nominal_minor: int
    currency: str
    status: str  # effective: an active card past its date is expired
    expires_at: datetime
    history: list[HistoryLine]
    offers: list[Offer]


def card_view(session: Session, reward: Reward, *, now: datetime) -> CardView:
    db = driver(session)
    snap = get_snapshot(session)
    card = db.execute(
        "SELECT last4, balance_minor, nominal_minor, currency, status, expires_at, product_id FROM cards"
        " WHERE id = %(id)s",
        {"id": reward.card_id},
    ).fetchone()
    assert card is not None  # the redemption names it
    last4, balance, nominal, currency, status, expires_at, product_id = card
    if status == "active" and expires_at <= now:
        status = "expired"
    history = (
        db.cursor(row_factory=class_row(HistoryLine))
        .execute(
            "SELECT e.id, e.product_id, e.amount_minor, e.created_at, e.channel, c.last4 FROM exchanges e"
            " JOIN codes c ON c.id = e.code_id WHERE e.card_id = %(card_id)s"
            " ORDER BY e.created_at DESC, e.id DESC",
            {"card_id": reward.card_id},
        )
        .fetchall()
    )
    offers = [
        Offer(
            p,
            snap.partners_by_id.get(p.partner_id) if p.partner_id is not None else None,
            status == "active" and (p.face_value_minor or 0) <= balance and p.currency == currency,
        )
        for p in sorted(cards.exchangeable(snap, product_id), key=lambda p: (p.face_value_minor or 0, p.sku))
    ]
    return CardView(last4, balance, nominal, currency, status, expires_at, history, offers)


@dataclass(frozen=True)
class _Certificate:
    code_id: int
    product_id: int


def reveal_certificate(
    session: Session, reward: Reward, exchange_id: uuid.UUID, *, now: datetime
) -> tuple[ProductInfo, Shown] | None:
    """A certificate of one of this card's exchanges, for its holder (a POST, like a code)."""
    db = driver(session)
    row = (
        db.cursor(row_factory=class_row(_Certificate))
        .execute(
            "SELECT code_id, product_id FROM exchanges WHERE id = %(id)s AND card_id = %(card_id)s",
            {"id": exchange_id, "card_id": reward.card_id},
        )
        .fetchone()
    )
    if row is None:
        return None
    code, pin = read_code(db, row.code_id)
    _event(db, reward, "certificate_shown", now, exchange_id=exchange_id)
    return get_snapshot(session).products[row.product_id], Shown(code, pin)


# --- online exchange --------------------------------------------------------------------------------


class Refused(Exception):
    """What the holder is told instead (a message key of texts.MESSAGES and its values)."""

    def __init__(self, key: str, **values: Any):
        super().__init__(key)
        self.key = key
        self.values = values


def refusal_of(problem: Problem) -> Refused:
    key = f"problem.{problem.code}"
    return Refused(key if key in texts.MESSAGES else "problem.other")


def _otp_key() -> bytes:
    return derive(get_vault().fingerprint_key, b"holder-otp")


def _otp_hash(otp_id: uuid.UUID, card_id: int, product_id: int, amount_minor: int, code: str) -> bytes:
    """The code bound to its card, certificate and amount: a code for another exchange never matches."""
    message = f"{otp_id}|{card_id}|{product_id}|{amount_minor}|{code}".encode()
    return hmac.new(_otp_key(), message, hashlib.sha256).digest()


@dataclass(frozen=True)
class OtpSent:
    id: uuid.UUID
    product: ProductInfo
    amount_minor: int
    currency: str
    phone: str  # masked


def _program(snap: CatalogSnapshot, reward: Reward) -> ProgramInfo:
    return snap.programs_by_id[reward.program_id]


def _brand(snap: CatalogSnapshot, reward: Reward) -> str:
    product = snap.products[reward.product_id]
    return product.brand or product.name


@dataclass(frozen=True)
class _RecentOtps:
    sent: int
    first_at: datetime | None


def request_otp(session: Session, reward: Reward, sku: str, *, locale: str, now: datetime) -> OtpSent:
    """A one-time code for exchanging this card for `sku`, by SMS to the phone the card was sent to
    (6 digits, valid OTP_TTL, OTP_TRIES tries, OTPS_PER_HOUR an hour per card). Refused (Refused) when
    the exchange could not happen: nothing is then sent or written."""
    snap = get_snapshot(session)
    product = snap.products_by_sku.get(sku)
    if product is None or not reward.is_card:
        raise Refused("problem.not_exchangeable")
    db = driver(session)
    try:
        card = cards.card_for_exchange(session, reward.card_id or 0)
        cards.check_exchange(snap, card, product, now)
        if not has_stock(db, product.id, now=now):
            raise OutOfStock(f"no certificates left for {product.sku}")
    except Problem as problem:
        raise refusal_of(problem) from None
    recent = one(
        db.cursor(row_factory=class_row(_RecentOtps))
        .execute(
            "SELECT count(*) AS sent, min(created_at) AS first_at FROM holder_otps"
            " WHERE card_id = %(card_id)s AND created_at > %(since)s",
            {"card_id": card.id, "since": now - timedelta(hours=1)},
        )
        .fetchone()
    )
    if recent.sent >= OTPS_PER_HOUR:
        assert recent.first_at is not None  # counted codes have a first one
        zone = _program(snap, reward).zone
        raise Refused("otp.too_many", at=texts.format_time(recent.first_at + timedelta(hours=1), zone))
    otp_id, code = uuid7(), f"{secrets.randbelow(10**6):06d}"
    amount = product.face_value_minor or 0
    db.execute(
        "INSERT INTO holder_otps (id, card_id, product_id, amount_minor, code_hash, created_at, expires_at)"
        " VALUES (%(id)s, %(card_id)s, %(product_id)s, %(amount_minor)s, %(code_hash)s, %(created_at)s,"
        " %(expires_at)s)",
        {
            "id": otp_id,
            "card_id": card.id,
            "product_id": product.id,
            "amount_minor": amount,
            "code_hash": _otp_hash(otp_id, card.id, product.id, amount, code),
            "created_at": now,
            "expires_at": now + OTP_TTL,
        },
    )
    text = texts.sms_text(
        locale,
        "otp",
        code=code,
        brand=_brand(snap, reward),
        name=texts.localized((product.page or {}).get("title"), locale) or product.name,
        amount=texts.format_money(amount, product.currency),
    )
    host = public_host()
    if host:
        text += f"\n\n@{host} #{code}"
    program = _program(snap, reward)
    queue_notice(
        db,
        redemption_id=reward.id,
        program_id=program.id,
        kind="otp",
        msisdn=reward.msisdn,
        sender=program.sms_sender,
        locale=locale,
        text=text,
        now=now,
    )
    _event(db, reward, "otp_sent", now, sku=product.sku)
    log.info("holder_otp_sent", redemption_id=str(reward.id), card_id=card.id, sku=product.sku)
    return OtpSent(otp_id, product, amount, product.currency, texts.mask_phone(reward.msisdn))


@dataclass(frozen=True)
class PendingOtp:
    id: uuid.UUID
    card_id: int
    product_id: int
    amount_minor: int
    code_hash: bytes
    attempts: int
    expires_at: datetime
    used_at: datetime | None
    exchange_id: uuid.UUID | None


_OTP = (
    "SELECT id, card_id, product_id, amount_minor, code_hash, attempts, expires_at, used_at, exchange_id"
    " FROM holder_otps WHERE id = %(id)s AND card_id = %(card_id)s"
)


def pending_otp(session: Session, reward: Reward, otp_id: uuid.UUID) -> tuple[PendingOtp, ProductInfo] | None:
    row = (
        driver(session)
        .cursor(row_factory=class_row(PendingOtp))
        .execute(
            _OTP,
            {"id": otp_id, "card_id": reward.card_id},
        )
        .fetchone()
    )
    if row is None:
        return None
    return row, get_snapshot(session).products[row.product_id]


@dataclass(frozen=True)
class Exchanged:
    exchange_id: uuid.UUID
    product: ProductInfo
    amount_minor: int
    currency: str
    balance_minor: int
    shown: Shown
    replayed: bool = False


def confirm_otp(
    session: Session, reward: Reward, otp_id: uuid.UUID, code: str, *, locale: str, now: datetime
) -> Exchanged:
    """Checks the one-time code and, when it is right, exchanges the card online: the partner desk's
    engine (certificate, debit, record, VAT point, settlement), channel `online`; the certificate is
    returned and sent by SMS. The code is used once: a second submit of the same code shows the same
    exchange again. A wrong code counts a try (committed by the caller with the Refused it gets); any
    other refusal changes nothing."""
    db = driver(session)
    otp = (
        db.cursor(row_factory=class_row(PendingOtp))
        .execute(
            _OTP + " FOR UPDATE",
            {"id": otp_id, "card_id": reward.card_id},
        )
        .fetchone()
    )
    if otp is None:
        raise Refused("problem.form")
    snap = get_snapshot(session)
    product = snap.products[otp.product_id]
    if otp.exchange_id is not None:
        return _replay(session, reward, otp.exchange_id, product)
    if otp.attempts >= OTP_TRIES:
        raise Refused("otp.used_up")
    if otp.expires_at <= now:
        raise Refused("otp.expired")
    offered = code.strip().replace(" ", "")
    expected = _otp_hash(otp.id, otp.card_id, otp.product_id, otp.amount_minor, offered)
    if not (offered.isdigit() and len(offered) == 6 and hmac.compare_digest(expected, bytes(otp.code_hash))):
        left = OTP_TRIES - otp.attempts - 1
        db.execute("UPDATE holder_otps SET attempts = attempts + 1 WHERE id = %(id)s", {"id": otp.id})
        _event(db, reward, "otp_wrong", now, sku=product.sku)
        raise Refused("otp.wrong" if left else "otp.used_up", left=left)
    try:
        with session.begin_nested():  # a refusal of the exchange leaves nothing behind
            card = cards.card_for_exchange(session, otp.card_id)
            if (product.face_value_minor or 0) != otp.amount_minor:
                raise Refused("problem.form")  # the catalog changed the price since the code was sent
            result = cards.exchange_online(session, card, product, now=now)
    except Problem as problem:
        raise refusal_of(problem) from None
    db.execute(
        "UPDATE holder_otps SET used_at = %(now)s, exchange_id = %(exchange_id)s WHERE id = %(id)s",
        {"now": now, "exchange_id": result.out.id, "id": otp.id},
    )
    _event(db, reward, "exchanged", now, exchange_id=result.out.id, sku=product.sku)
    program = _program(snap, reward)
    name = texts.localized((product.page or {}).get("title"), locale) or product.name
    pin = texts.sms_text(locale, "certificate.pin", pin=result.pin) if result.pin else ""
    queue_notice(
        db,
        redemption_id=reward.id,
        program_id=program.id,
        kind="certificate",
        msisdn=reward.msisdn,
        sender=program.sms_sender,
        locale=locale,
        text=texts.sms_text(
            locale,
            "certificate",
            name=name,
            code=result.code,
            pin=pin,
            expires=texts.format_date(result.out.certificate.expires_at, program.zone)
            or texts.translate(locale, "code.no_expiry").lower(),
        ),
        now=now,
    )
    balance = to_minor(result.out.card.balance.amount, result.out.card.balance.currency)
    return Exchanged(
        result.out.id, product, otp.amount_minor, product.currency, balance, Shown(result.code, result.pin)
    )


@dataclass(frozen=True)
class _Replayed:
    code_id: int
    amount_minor: int
    balance_minor: int
    currency: str


def _replay(session: Session, reward: Reward, exchange_id: uuid.UUID, product: ProductInfo) -> Exchanged:
    db = driver(session)
    # the code names its exchange
    row = one(
        db.cursor(row_factory=class_row(_Replayed))
        .execute(
            "SELECT e.code_id, e.amount_minor, c.balance_minor, c.currency FROM exchanges e"
            " JOIN cards c ON c.id = e.card_id WHERE e.id = %(id)s",
            {"id": exchange_id},
        )
        .fetchone()
    )
    code, pin = read_code(db, row.code_id)
    return Exchanged(
        exchange_id,
        product,
        row.amount_minor,
        row.currency,
        row.balance_minor,
        Shown(code, pin),
        replayed=True,
    )


# --- a card by number and PIN ------------------------------------------------------------------------


def open_card(session: Session, number: str, pin: str, *, address: str | None, now: datetime) -> str:
    """The token of the card's own page, for whoever has its number and PIN (a card given as a
    present). The same lookup and lockout as POST /v1/cards/verify (cards.authenticate_card): raises
    CardNotFound, CardLocked, or CommittedRefusal (a wrong PIN, counted: the caller commits)."""
    card = cards.authenticate_card(session, number, pin, now=now, client=CardClient.address(address))
    if card.redemption_id is None:
        raise CardNotFound("no such card")
    return reward_token(get_vault(), card.redemption_id)


# --- for staff -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageEvent:
    """What a holder did on the reward page, for the console's timeline."""

    event: str
    at: datetime
    sku: str | None
    exchange_id: uuid.UUID | None


def page_events(session: Session, redemption_id: uuid.UUID) -> list[PageEvent]:
    return (
        driver(session)
        .cursor(row_factory=class_row(PageEvent))
        .execute(
            "SELECT event, at, sku, exchange_id FROM holder_events WHERE redemption_id = %(redemption_id)s"
            " ORDER BY at, id",
            {"redemption_id": redemption_id},
        )
        .fetchall()
    )
