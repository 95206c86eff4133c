"""Redeeming points: validate against the catalog snapshot, then in one short transaction check the
subscriber's limits, reserve the reward, and write the redemption, its issue record and the SMS
outbox row; the program's monthly budget is taken last so its row lock is held for the shortest time."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from service import jobs, outbox
from service.cards.service import mint_card
from service.catalog.errors import UnknownOffer, UnknownProgram
from service.catalog.snapshot import (
    CatalogSnapshot,
    OfferInfo,
    ProductInfo,
    ProgramInfo,
    TariffInfo,
    get_snapshot,
)
from service.crypto import get_vault
from service.db import driver
from service.delivery import webhooks
from service.errors import not_found
from service.faults import checkpoint
from service.ids import uuid7
from service.ledger import service as ledger
from service.metrics import CODES_TAKEN
from service.money import Money
from service.pools.errors import OutOfStock
from service.pools.service import release_code, take_code
from service.redemptions.errors import (
    BudgetExceeded,
    DuplicateExternalId,
    LimitExceeded,
    NotCancellable,
    NotResendable,
    OfferInactive,
    PointsMismatch,
    ResendLimitReached,
    TariffNotEligible,
)
from service.redemptions.schemas import RedemptionIn, RedemptionOut, RewardOut
from service.sql import Fragment

MAX_RESENDS = 3


@dataclass(frozen=True)
class Scope:
    """Programs a caller may act on; None means all."""

    programs: frozenset[str] | None

    def allows(self, program_code: str) -> bool:
        return self.programs is None or program_code in self.programs


@dataclass(frozen=True)
class Priced:
    """What a valid request redeems: the catalog entries and the tariff's price."""

    program: ProgramInfo
    offer: OfferInfo
    product: ProductInfo
    tariff: TariffInfo
    nominal_minor: int
    vat_rate_bp: int  # of the issue record: the product's rate when its VAT falls at sale, else 0


@dataclass(frozen=True)
class Reward:
    """The reserved code or the minted card, as the redemption and its record name it."""

    code_id: int | None
    card_id: int | None
    last4: str
    fingerprint: bytes
    expires_at: datetime | None
    cost_minor: int


def redeem(
    session: Session,
    request: RedemptionIn,
    *,
    scope: Scope,
    api_key_id: int | None,
    now: datetime | None = None,
) -> RedemptionOut:
    now = now or datetime.now(UTC)
    priced = price(get_snapshot(session), request, scope=scope, now=now)
    db = driver(session)
    if priced.offer.limit_per_day or priced.offer.limit_per_month:
        _check_limits(db, priced, request.msisdn, now)
    checkpoint("redeem.after_limits")
    reward = _reserve(session, priced, now)
    checkpoint("redeem.after_reserve")
    redemption_id = uuid7()
    statement = redemption_statement(request, priced, reward, redemption_id, api_key_id=api_key_id, now=now)
    if db.execute(statement.sql, statement.params).rowcount != 1:
        raise DuplicateExternalId(
            f"this program already has a redemption with external_id {request.external_id!r}"
        )
    checkpoint("redeem.after_insert")
    if priced.program.monthly_budget_minor is not None:
        _take_budget(db, priced.program, _month(priced.program, now), priced.nominal_minor)
    checkpoint("redeem.after_budget")
    product = priced.product
    return RedemptionOut(
        id=redemption_id,
        external_id=request.external_id,
        program=priced.program.code,
        tariff=priced.tariff.code,
        offer=priced.offer.code,
        msisdn=request.msisdn,
        points=request.points,
        locale=request.locale or "ru",
        status="accepted",
        status_reason=None,
        resend_count=0,
        created_at=now,
        updated_at=now,
        reward=RewardOut(
            kind=product.kind,
            sku=product.sku,
            name=product.name,
            partner=product.partner_code,
            nominal=Money.of(priced.nominal_minor, product.currency),
            last4=reward.last4,
            expires_at=reward.expires_at,
        ),
    )


def price(snap: CatalogSnapshot, request: RedemptionIn, *, scope: Scope, now: datetime) -> Priced:
    """The catalog's answer to a request, from the in-memory snapshot: no database round trip."""
    program = snap.programs.get(request.program)
    if program is None or not program.active or not scope.allows(program.code):
        raise UnknownProgram(f"no program {request.program}")
    offer = snap.offers.get((program.id, request.offer))
    if offer is None or not offer.active:
        raise UnknownOffer(f"program {program.code} has no offer {request.offer}")
    product = snap.products[offer.product_id]
    if (
        (offer.active_from and now < offer.active_from)
        or (offer.active_to and now >= offer.active_to)
        or not product.active
    ):
        raise OfferInactive(f"offer {offer.code} is not active now")
    tariff = snap.tariffs.get((program.id, request.tariff))
    price = offer.prices.get(tariff.id) if tariff is not None and tariff.active else None
    if tariff is None or price is None:
        raise TariffNotEligible(f"tariff {request.tariff} may not redeem offer {offer.code}")
    nominal, points = price
    if request.points != points:
        raise PointsMismatch(f"offer {offer.code} costs {points} points on tariff {request.tariff}")
    if program.monthly_budget_minor is not None and nominal > program.monthly_budget_minor:
        raise BudgetExceeded("the program's monthly budget is spent")
    local_date = now.astimezone(program.zone).date()
    rate = snap.vat_rate_bp(product.vat_schedule, local_date) if product.vat_point == "sale" else 0
    return Priced(program, offer, product, tariff, nominal, rate)


# One subscriber's redemptions wait for each other here, so that two parallel ones cannot both pass
# the limit; the count then sees every committed redemption of the subscriber.
LIMIT_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%(msisdn)s, 1))"
LIMIT_COUNT = (
    "SELECT count(*) FILTER (WHERE created_at >= %(day)s), count(*) FROM redemptions"
    " WHERE msisdn = %(msisdn)s AND offer_id = %(offer)s AND created_at >= %(month)s"
    " AND status <> 'cancelled'"
)


def _check_limits(db: Any, priced: Priced, msisdn: str, now: datetime) -> None:
    """Per subscriber per day and per month, counted in the program's time zone."""
    local = now.astimezone(priced.program.zone)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    params = {"msisdn": msisdn, "offer": priced.offer.id, "day": day, "month": day.replace(day=1)}
    db.execute(LIMIT_LOCK, params)
    today, month = db.execute(LIMIT_COUNT, params).fetchone()
    offer = priced.offer
    if (offer.limit_per_day and today >= offer.limit_per_day) or (
        offer.limit_per_month and month >= offer.limit_per_month
    ):
        raise LimitExceeded(f"this subscriber has reached the limit of offer {offer.code}")


def _reserve(session: Session, priced: Priced, now: datetime) -> Reward:
    """A pooled code (reserved until its SMS leaves) or a newly minted card."""
    product = priced.product
    if product.kind == "code":
        code = take_code(driver(session), product.id, status="reserved", now=now)
        if code is None:
            raise OutOfStock(f"no codes left for {product.sku}")
        CODES_TAKEN.labels(product.sku).inc()  # the stock runway alert's rate
        return Reward(
            code.id, None, code.last4, code.fingerprint, code.expires_at, product.cost_price_minor or 0
        )
    card = mint_card(
        session,
        get_vault(),
        product_id=product.id,
        currency=product.currency,
        nominal_minor=priced.nominal_minor,
        validity_days=product.validity_days or 365,
        now=now,
    )
    # Our own card: a liability at face value; the partner's cost arises when it is exchanged.
    return Reward(None, card.id, card.last4, card.fingerprint, card.expires_at, 0)


_INSERT_REDEMPTION = (
    "WITH r AS (INSERT INTO redemptions (id, program_id, tariff_id, offer_id, product_id, external_id,"
    " msisdn, locale, points, currency, nominal_minor, code_id, card_id, reward_last4, reward_expires_at,"
    " api_key_id, created_at, updated_at) VALUES (%(id)s, %(program)s, %(tariff)s, %(offer)s, %(product)s,"
    " %(external_id)s, %(msisdn)s, %(locale)s, %(points)s, %(currency)s, %(nominal)s, %(code_id)s,"
    " %(card_id)s, %(last4)s, %(expires_at)s, %(api_key)s, %(now)s, %(now)s)"
    " ON CONFLICT (program_id, external_id) DO NOTHING RETURNING id)"
)


def redemption_statement(
    request: RedemptionIn,
    priced: Priced,
    reward: Reward,
    redemption_id: uuid.UUID,
    *,
    api_key_id: int | None,
    now: datetime,
) -> Fragment:
    """One statement writes the redemption, its issue record and its SMS outbox row; a duplicate
    external_id inserts no redemption, and so neither of the others (0 rows)."""
    program, product = priced.program, priced.product
    record = ledger.issue_record(
        ledger.Record(
            occurred_at=now,
            program_id=program.id,
            tariff_id=priced.tariff.id,
            offer_id=priced.offer.id,
            product_id=product.id,
            sku=product.sku,
            partner_id=product.partner_id,
            currency=product.currency,
            face_value_minor=priced.nominal_minor,
            cost_minor=reward.cost_minor,
            vat_rate_bp=priced.vat_rate_bp,
            code_fingerprint=reward.fingerprint,
            code_last4=reward.last4,
            card_id=reward.card_id,
        ),
        redemption_from="r",
    )
    sms = outbox.enqueue_with(
        jobs.REWARD_SMS, {"redemption_id": str(redemption_id), "send": 0}, now=now, source="r"
    )
    params = {
        "id": redemption_id,
        "program": program.id,
        "tariff": priced.tariff.id,
        "offer": priced.offer.id,
        "product": product.id,
        "external_id": request.external_id,
        "msisdn": request.msisdn,
        "locale": request.locale or "ru",
        "points": request.points,
        "currency": product.currency,
        "nominal": priced.nominal_minor,
        "code_id": reward.code_id,
        "card_id": reward.card_id,
        "last4": reward.last4,
        "expires_at": reward.expires_at,
        "api_key": api_key_id,
        "now": now,
    }
    return Fragment(
        f"{_INSERT_REDEMPTION}, rec AS ({record.sql}) {sms.sql}", {**params, **record.params, **sms.params}
    )


TAKE_BUDGET = (
    "INSERT INTO program_budget_usage AS u (program_id, month, spent_minor) VALUES (%(p)s, %(month)s, %(n)s)"
    " ON CONFLICT (program_id, month) DO UPDATE SET spent_minor = u.spent_minor + EXCLUDED.spent_minor"
    " WHERE u.spent_minor + EXCLUDED.spent_minor <= %(budget)s RETURNING spent_minor"
)


def _month(program: ProgramInfo, at: datetime) -> date:
    return at.astimezone(program.zone).date().replace(day=1)


def _take_budget(db: Any, program: ProgramInfo, month: date, amount: int) -> None:
    taken = db.execute(
        TAKE_BUDGET, {"p": program.id, "month": month, "n": amount, "budget": program.monthly_budget_minor}
    ).fetchone()
    if taken is None:
        raise BudgetExceeded("the program's monthly budget is spent")


def _release_budget(session: Session, program: ProgramInfo, created_at: datetime, amount: int) -> None:
    session.execute(
        text(
            "UPDATE program_budget_usage SET spent_minor = spent_minor - :n"
            " WHERE program_id = :p AND month = :month"
        ),
        {"n": amount, "p": program.id, "month": _month(program, created_at)},
    )


# --- reading -------------------------------------------------------------------------------------

_SELECT = (
    "SELECT r.id, r.external_id, r.program_id, r.tariff_id, r.offer_id, r.product_id, r.msisdn, r.points,"
    " r.locale, r.status, r.status_reason, r.resend_count, r.created_at, r.updated_at, r.nominal_minor,"
    " r.currency, r.reward_last4, r.reward_expires_at, r.code_id, r.card_id, r.first_sent_at"
    " FROM redemptions r"
)


def to_out(snap: CatalogSnapshot, row: Any) -> RedemptionOut:
    product = snap.products[row.product_id]
    return RedemptionOut(
        id=row.id,
        external_id=row.external_id,
        program=snap.programs_by_id[row.program_id].code,
        tariff=snap.tariffs_by_id[row.tariff_id].code,
        offer=snap.offers_by_id[row.offer_id].code,
        msisdn=row.msisdn,
        points=row.points,
        locale=row.locale,
        status=row.status,
        status_reason=row.status_reason,
        resend_count=row.resend_count,
        created_at=row.created_at,
        updated_at=row.updated_at,
        reward=RewardOut(
            kind=product.kind,
            sku=product.sku,
            name=product.name,
            partner=product.partner_code,
            nominal=Money.of(row.nominal_minor, row.currency),
            last4=row.reward_last4,
            expires_at=row.reward_expires_at,
        ),
    )


def _program_ids(snap: CatalogSnapshot, scope: Scope) -> list[int] | None:
    if scope.programs is None:
        return None
    return [p.id for code, p in snap.programs.items() if code in scope.programs]


def get_redemption(
    session: Session, redemption_id: uuid.UUID, *, scope: Scope, for_update: bool = False
) -> Any:
    snap = get_snapshot(session)
    row = session.execute(
        text(_SELECT + " WHERE r.id = :id" + (" FOR UPDATE" if for_update else "")), {"id": redemption_id}
    ).one_or_none()
    if row is None or not scope.allows(snap.programs_by_id[row.program_id].code):
        raise not_found(f"redemption {redemption_id}")
    return row


def find_redemptions(
    session: Session,
    *,
    scope: Scope,
    limit: int,
    before: uuid.UUID | None = None,
    external_id: str | None = None,
    msisdn: str | None = None,
    status: str | None = None,
    program: str | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
) -> list[RedemptionOut]:
    snap = get_snapshot(session)
    where: list[str] = []
    params: dict[str, Any] = {"limit": limit}
    ids = _program_ids(snap, scope)
    if ids is not None:
        where.append("r.program_id = ANY(:programs)")
        params["programs"] = ids
    if program is not None:
        info = snap.programs.get(program)
        if info is None or not scope.allows(program):
            return []
        where.append("r.program_id = :program")
        params["program"] = info.id
    for column, value in (("external_id", external_id), ("msisdn", msisdn), ("status", status)):
        if value is not None:
            where.append(f"r.{column} = :{column}")
            params[column] = value
    if created_from is not None:
        where.append("r.created_at >= :created_from")
        params["created_from"] = created_from
    if created_to is not None:
        where.append("r.created_at < :created_to")
        params["created_to"] = created_to
    if before is not None:
        where.append("r.id < :before")
        params["before"] = before
    sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY r.id DESC LIMIT :limit"
    return [to_out(snap, row) for row in session.execute(text(sql), params)]


# --- cancel and resend ---------------------------------------------------------------------------


def cancel(
    session: Session, redemption_id: uuid.UUID, *, scope: Scope, now: datetime | None = None
) -> RedemptionOut:
    """Allowed while nobody could have used the reward: a code whose SMS no provider has taken, or a
    card nobody has touched. Writes the reversing record; a code that never left returns to the pool."""
    now = now or datetime.now(UTC)
    snap = get_snapshot(session)
    row = get_redemption(session, redemption_id, scope=scope, for_update=True)
    if row.status == "cancelled":
        return to_out(snap, row)
    if row.code_id is not None:
        if row.first_sent_at is not None or row.status not in ("accepted", "failed"):
            raise NotCancellable("the code has been sent to the subscriber")
        release_code(driver(session), row.code_id, now=now)
    else:
        touched = session.execute(
            text(
                "UPDATE cards SET status = 'cancelled', balance_minor = 0 WHERE id = :id"
                " AND status = 'active' AND balance_minor = nominal_minor RETURNING id"
            ),
            {"id": row.card_id},
        ).scalar()
        if touched is None:
            raise NotCancellable("the card has been used, blocked or has expired")
    checkpoint("cancel.after_release")
    reversed_ = ledger.write_reversal(driver(session), redemption_id, occurred_at=now)
    if reversed_ != 1:
        raise RuntimeError(f"redemption {redemption_id} has {reversed_} issue records")  # invariant 4
    session.execute(
        text(
            "UPDATE redemptions SET status = 'cancelled', status_reason = 'cancelled by request',"
            " updated_at = :now WHERE id = :id"
        ),
        {"id": redemption_id, "now": now},
    )
    program = snap.programs_by_id[row.program_id]
    if program.monthly_budget_minor is not None:
        _release_budget(session, program, row.created_at, row.nominal_minor)
    webhooks.emit(
        driver(session),
        program_id=program.id,
        webhook_url=program.webhook_url,
        redemption_id=redemption_id,
        event="cancelled",
        now=now,
        data={"redemption_id": str(redemption_id), "external_id": row.external_id, "status": "cancelled"},
    )
    checkpoint("cancel.after_records")
    return to_out(snap, get_redemption(session, redemption_id, scope=scope))


def resend(
    session: Session, redemption_id: uuid.UUID, *, scope: Scope, now: datetime | None = None
) -> RedemptionOut:
    now = now or datetime.now(UTC)
    snap = get_snapshot(session)
    row = get_redemption(session, redemption_id, scope=scope, for_update=True)
    if row.status == "cancelled":
        raise NotResendable("the redemption is cancelled")
    if row.resend_count >= MAX_RESENDS:
        raise ResendLimitReached(
            f"a reward may be re-sent at most {MAX_RESENDS} times",
        )
    send = row.resend_count + 1
    session.execute(
        text(
            "UPDATE redemptions SET resend_count = :send, updated_at = :now,"
            " status = CASE WHEN status = 'failed' THEN 'accepted' ELSE status END,"
            " status_reason = CASE WHEN status = 'failed' THEN NULL ELSE status_reason END WHERE id = :id"
        ),
        {"send": send, "now": now, "id": redemption_id},
    )
    outbox.enqueue(
        driver(session), jobs.REWARD_SMS, {"redemption_id": str(redemption_id), "send": send}, now=now
    )
    return to_out(snap, get_redemption(session, redemption_id, scope=scope))
