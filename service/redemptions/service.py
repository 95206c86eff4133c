"""Redeeming points: validate against the catalog snapshot, then in one short transaction check the
subscriber's limits, reserve the reward, and write the redemption, its issue record and the SMS
outbox row; the program's monthly budget is taken last so its row lock is held for the shortest time."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from service.cards.service import mint_card
from service.catalog.snapshot import CatalogSnapshot, ProgramInfo, get_snapshot
from service.crypto import get_vault
from service.db import driver
from service.delivery import webhooks
from service.errors import Problem, not_found
from service.faults import checkpoint
from service.ledger.service import vat_included
from service.money import Money
from service.redemptions.schemas import RedemptionIn, RedemptionOut, RewardOut

SMS_QUEUE = "sms_transactional"
SMS_ACTOR = "deliver_reward_sms"
MAX_RESENDS = 3


def uuid7() -> uuid.UUID:
    """Time-ordered UUID (RFC 9562 v7): 48-bit Unix milliseconds, then randomness."""
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + secrets.token_bytes(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return uuid.UUID(bytes=bytes(raw))


def _refuse(status: int, code: str, title: str, detail: str) -> Problem:
    return Problem(status, code, title, detail)


def _local_bounds(program: ProgramInfo, now: datetime) -> tuple[datetime, datetime]:
    local = now.astimezone(program.zone)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return day.astimezone(UTC), day.replace(day=1).astimezone(UTC)


@dataclass(frozen=True)
class Scope:
    """Programs a caller may act on; None means all."""

    programs: frozenset[str] | None

    def allows(self, program_code: str) -> bool:
        return self.programs is None or program_code in self.programs


def redeem(
    session: Session,
    request: RedemptionIn,
    *,
    scope: Scope,
    api_key_id: int | None,
    now: datetime | None = None,
) -> RedemptionOut:
    now = now or datetime.now(UTC)
    snap = get_snapshot(session)
    program = snap.programs.get(request.program)
    if program is None or not program.active or not scope.allows(program.code):
        raise _refuse(404, "unknown_program", "Unknown program", f"no program {request.program}")
    offer = snap.offers.get((program.id, request.offer))
    if offer is None or not offer.active:
        raise _refuse(
            404, "unknown_offer", "Unknown offer", f"program {program.code} has no offer {request.offer}"
        )
    product = snap.products[offer.product_id]
    if (
        (offer.active_from and now < offer.active_from)
        or (offer.active_to and now >= offer.active_to)
        or not product.active
    ):
        raise _refuse(409, "offer_inactive", "Offer not active", f"offer {offer.code} is not active now")
    tariff = snap.tariffs.get((program.id, request.tariff))
    price = offer.prices.get(tariff.id) if tariff is not None and tariff.active else None
    if price is None:
        raise _refuse(
            422,
            "tariff_not_eligible",
            "Tariff not eligible",
            f"tariff {request.tariff} may not redeem offer {offer.code}",
        )
    nominal, points = price
    if request.points != points:
        raise _refuse(
            422,
            "points_mismatch",
            "Points do not match the price",
            f"offer {offer.code} costs {points} points on tariff {request.tariff}",
        )
    if program.monthly_budget_minor is not None and nominal > program.monthly_budget_minor:
        raise _refuse(409, "budget_exceeded", "Budget exceeded", "the program's monthly budget is spent")

    day_start, month_start = _local_bounds(program, now)
    db = driver(session)
    if offer.limit_per_day or offer.limit_per_month:
        # Serialises one subscriber's redemptions so that two parallel ones cannot both pass the limit.
        db.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 1))", (request.msisdn,))
        today, month = db.execute(
            "SELECT count(*) FILTER (WHERE created_at >= %(day)s), count(*) FROM redemptions"
            " WHERE msisdn = %(m)s AND offer_id = %(offer)s AND created_at >= %(month)s AND status <> 'cancelled'",
            {"m": request.msisdn, "offer": offer.id, "day": day_start, "month": month_start},
        ).fetchone()
        if (offer.limit_per_day and today >= offer.limit_per_day) or (
            offer.limit_per_month and month >= offer.limit_per_month
        ):
            raise _refuse(
                409,
                "limit_exceeded",
                "Limit reached",
                f"this subscriber has reached the limit of offer {offer.code}",
            )
    checkpoint("redeem.after_limits")

    vault = get_vault()
    code_id = card_id = None
    if product.kind == "code":
        code = db.execute(
            "UPDATE codes SET status = 'reserved', status_changed_at = now() WHERE id = ("
            " SELECT id FROM codes WHERE product_id = %s AND status = 'available'"
            "   AND coalesce(expires_at, 'infinity') > now()"
            " ORDER BY coalesce(expires_at, 'infinity'), id LIMIT 1 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, last4, fingerprint, expires_at",
            (product.id,),
        ).fetchone()
        if code is None:
            raise _refuse(409, "out_of_stock", "Out of stock", f"no codes left for {product.sku}")
        code_id, last4, fingerprint, expires_at = code[0], code[1], bytes(code[2]), code[3]
        cost = product.cost_price_minor or 0
    else:
        card = mint_card(
            session,
            vault,
            product_id=product.id,
            currency=product.currency,
            nominal_minor=nominal,
            validity_days=product.validity_days or 365,
            now=now,
        )
        card_id, last4, fingerprint, expires_at = card.id, card.last4, card.fingerprint, card.expires_at
        cost = 0  # our own card: a liability at face value; the partner's cost arises on exchange
    checkpoint("redeem.after_reserve")

    rate = (
        snap.vat_rate_bp(product.vat_schedule, now.astimezone(program.zone).date())
        if product.vat_point == "sale"
        else 0
    )
    redemption_id = uuid7()
    locale = request.locale or "ru"
    _insert_redemption(
        db,
        (
            "WITH r AS ("
            " INSERT INTO redemptions (id, program_id, tariff_id, offer_id, product_id, external_id, msisdn, locale,"
            "  points, currency, nominal_minor, code_id, card_id, reward_last4, reward_expires_at, api_key_id,"
            "  created_at, updated_at)"
            " VALUES (%(id)s, %(program)s, %(tariff)s, %(offer)s, %(product)s, %(external_id)s, %(msisdn)s, %(locale)s, %(points)s, %(currency)s,"
            "  %(nominal)s, %(code_id)s, %(card_id)s, %(last4)s, %(expires_at)s, %(api_key)s, %(now)s, %(now)s)"
            " ON CONFLICT (program_id, external_id) DO NOTHING RETURNING id),"
            " rec AS ("
            " INSERT INTO reconciliation_records (type, occurred_at, program_id, tariff_id, offer_id, product_id, sku,"
            "  partner_id, quantity, currency, face_value_minor, cost_minor, vat_rate_bp, vat_minor, code_fingerprint,"
            "  code_last4, redemption_id, card_id)"
            " SELECT 'issue', %(now)s, %(program)s, %(tariff)s, %(offer)s, %(product)s, %(sku)s, %(partner)s, 1, %(currency)s, %(nominal)s, %(cost)s,"
            "  %(rate)s, %(vat)s, %(fingerprint)s, %(last4)s, r.id, %(card_id)s FROM r)"
            " INSERT INTO outbox (message_id, queue, actor, payload, created_at)"
            " SELECT %(message_id)s, %(queue)s, %(actor)s, CAST(%(payload)s AS jsonb), %(now)s FROM r"
        ),
        {
            "id": redemption_id,
            "program": program.id,
            "tariff": tariff.id,
            "offer": offer.id,
            "product": product.id,
            "external_id": request.external_id,
            "msisdn": request.msisdn,
            "locale": locale,
            "points": request.points,
            "currency": product.currency,
            "nominal": nominal,
            "code_id": code_id,
            "card_id": card_id,
            "last4": last4,
            "expires_at": expires_at,
            "api_key": api_key_id,
            "now": now,
            "sku": product.sku,
            "partner": product.partner_id,
            "cost": cost,
            "rate": rate,
            "vat": vat_included(nominal, rate),
            "fingerprint": fingerprint,
            "message_id": uuid.uuid4(),
            "queue": SMS_QUEUE,
            "actor": SMS_ACTOR,
            "payload": json.dumps({"redemption_id": str(redemption_id), "send": 0}),
        },
        request.external_id,
    )
    checkpoint("redeem.after_insert")

    if program.monthly_budget_minor is not None:
        _take_budget(db, program, month_start.astimezone(program.zone).date(), nominal)
    checkpoint("redeem.after_budget")
    return RedemptionOut(
        id=redemption_id,
        external_id=request.external_id,
        program=program.code,
        tariff=tariff.code,
        offer=offer.code,
        msisdn=request.msisdn,
        points=request.points,
        locale=locale,
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
            nominal=Money.of(nominal, product.currency),
            last4=last4,
            expires_at=expires_at,
        ),
    )


def _insert_redemption(db: Any, statement: str, params: dict[str, Any], external_id: str) -> None:
    if db.execute(statement, params).rowcount != 1:
        raise _refuse(
            409,
            "duplicate_external_id",
            "Duplicate external_id",
            f"this program already has a redemption with external_id {external_id!r}",
        )


def _take_budget(db: Any, program: ProgramInfo, month, amount: int) -> None:
    taken = db.execute(
        "INSERT INTO program_budget_usage AS u (program_id, month, spent_minor) VALUES (%(p)s, %(month)s, %(n)s)"
        " ON CONFLICT (program_id, month) DO UPDATE SET spent_minor = u.spent_minor + EXCLUDED.spent_minor"
        " WHERE u.spent_minor + EXCLUDED.spent_minor <= %(budget)s RETURNING spent_minor",
        {"p": program.id, "month": month, "n": amount, "budget": program.monthly_budget_minor},
    ).fetchone()
    if taken is None:
        raise _refuse(409, "budget_exceeded", "Budget exceeded", "the program's monthly budget is spent")


def _release_budget(session: Session, program: ProgramInfo, created_at: datetime, amount: int) -> None:
    month = created_at.astimezone(program.zone).date().replace(day=1)
    session.execute(
        text(
            "UPDATE program_budget_usage SET spent_minor = spent_minor - :n"
            " WHERE program_id = :p AND month = :month"
        ),
        {"n": amount, "p": program.id, "month": month},
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
    where, params = [], {"limit": limit}
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
            raise _refuse(
                409, "not_cancellable", "Not cancellable", "the code has been sent to the subscriber"
            )
        session.execute(
            text("UPDATE codes SET status = 'available', status_changed_at = :now WHERE id = :id"),
            {"id": row.code_id, "now": now},
        )
    else:
        touched = session.execute(
            text(
                "UPDATE cards SET status = 'cancelled', balance_minor = 0 WHERE id = :id AND status = 'active'"
                " AND balance_minor = nominal_minor RETURNING id"
            ),
            {"id": row.card_id},
        ).scalar()
        if touched is None:
            raise _refuse(
                409, "not_cancellable", "Not cancellable", "the card has been used, blocked or has expired"
            )
    checkpoint("cancel.after_release")
    reversed_ = session.execute(
        text(
            "INSERT INTO reconciliation_records (type, occurred_at, program_id, tariff_id, offer_id, product_id, sku,"
            " partner_id, quantity, currency, face_value_minor, cost_minor, vat_rate_bp, vat_minor, code_fingerprint,"
            " code_last4, redemption_id, card_id)"
            " SELECT 'cancel', :now, program_id, tariff_id, offer_id, product_id, sku, partner_id, -1, currency,"
            " -face_value_minor, -cost_minor, vat_rate_bp, -vat_minor, code_fingerprint, code_last4, redemption_id,"
            " card_id FROM reconciliation_records WHERE redemption_id = :id AND type = 'issue'"
        ),
        {"id": redemption_id, "now": now},
    ).rowcount
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
        raise _refuse(409, "not_resendable", "Not resendable", "the redemption is cancelled")
    if row.resend_count >= MAX_RESENDS:
        raise _refuse(
            409,
            "resend_limit_reached",
            "Resend limit reached",
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
    session.execute(
        text(
            "INSERT INTO outbox (message_id, queue, actor, payload, created_at)"
            " VALUES (:mid, :queue, :actor, CAST(:payload AS jsonb), :now)"
        ),
        {
            "mid": uuid.uuid4(),
            "queue": SMS_QUEUE,
            "actor": SMS_ACTOR,
            "now": now,
            "payload": json.dumps({"redemption_id": str(redemption_id), "send": send}),
        },
    )
    return to_out(snap, get_redemption(session, redemption_id, scope=scope))
