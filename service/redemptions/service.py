"""Redeeming points: validate against the catalog snapshot, then in one short transaction check the
subscriber's limits, reserve the reward, and write the redemption, its issue record and the SMS
outbox row; the program's monthly budget is taken last so its row lock is held for the shortest time."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

from psycopg import AsyncConnection, Connection
from psycopg import errors as pg_errors
from psycopg.rows import class_row
from sqlalchemy.orm import Session

from service.cards.service import CardUse, cancel_card, card_use, mint_card_sql, new_card
from service.catalog.errors import UnknownOffer, UnknownProgram
from service.catalog.snapshot import (
    CatalogSnapshot,
    OfferInfo,
    ProductInfo,
    ProgramInfo,
    TariffInfo,
    get_snapshot,
    get_snapshot_async,
)
from service.delivery.attempts import SmsAttempt, sms_attempts
from service.events import webhooks
from service.kit.db.engine import driver
from service.kit.db.fragments import Fragment
from service.kit.db.pipeline import pipeline as one_write_pipeline
from service.kit.http.errors import not_found
from service.kit.messaging import jobs, outbox
from service.kit.observability.metrics import CODES_TAKEN
from service.kit.reliability.faults import checkpoint
from service.kit.reliability.idempotency import AtCommit
from service.kit.security.crypto import get_vault
from service.kit.security.links import link_of, reward_token, reward_url, token_hash
from service.kit.values.ids import uuid7
from service.kit.values.money import Money
from service.ledger import service as ledger
from service.pools.errors import OutOfStock
from service.pools.service import release_code, take_code_sql
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
from service.redemptions.schemas import RedemptionIn, RedemptionOut, RewardOut, SmsOut
from service.redemptions.sql import compose, load
from service.sandbox import service as sandbox

MAX_RESENDS = 3


@dataclass(frozen=True)
class Scope:
    """Programs a caller may act on (None: all), and whether it acts in the sandbox: True for a
    sandbox key (its redemptions are sandbox ones, and it sees only those), False for a real loyalty
    key (it never sees sandbox ones), None for staff (real redemptions; they see both, marked)."""

    programs: frozenset[str] | None
    sandbox: bool | None = None

    def allows(self, program_code: str) -> bool:
        return self.programs is None or program_code in self.programs

    @property
    def in_sandbox(self) -> bool:
        return self.sandbox is True

    def sees(self, sandbox: bool) -> bool:
        return self.sandbox is None or self.sandbox == sandbox


@dataclass(frozen=True)
class Priced:
    """What a valid request redeems: the catalog entries and the tariff's price."""

    program: ProgramInfo
    offer: OfferInfo
    product: ProductInfo
    tariff: TariffInfo
    nominal_minor: int
    vat_rate_bp: int  # of the issue record: the product's rate when its VAT falls at sale, else 0
    sandbox: bool = False
    # A campaign's grant: no points; its value was reserved against the budget when it was approved.
    granted: bool = False

    @property
    def has_limits(self) -> bool:
        return bool(self.offer.limit_per_day or self.offer.limit_per_month)

    @property
    def budgeted(self) -> bool:
        return self.program.monthly_budget_minor is not None and not self.sandbox and not self.granted


def redeem(
    session: Session,
    request: RedemptionIn,
    *,
    scope: Scope,
    api_key_id: int | None,
    now: datetime | None = None,
    campaign_id: uuid.UUID | None = None,
    silent: bool = False,
) -> RedemptionOut:
    """The redemption in one statement (limits, reward, redemption, record, SMS) and the program's
    budget, sent with the subscriber's lock in one round trip; the refusals it finds are raised, and
    the caller's transaction rolls back whatever the statements did. redeem_async() is the same on an
    asyncio connection (the API's), which leaves the budget for the commit's round trip.
    `campaign_id`: a line of that campaign, granted (no points, the budget reserved by the campaign),
    its SMS on the bulk channel (jobs.CAMPAIGN_SMS); `silent`: no SMS at all (the subscriber opted out
    of bulk SMS): the redemption is `failed` with reason `bulk_opt_out`, its reward kept, its page
    link in the API."""
    now = now or datetime.now(UTC)
    granted = campaign_id is not None
    priced = price(get_snapshot(session), request, scope=scope, now=now, granted=granted)
    db = driver(session)
    redemption_id = uuid7()
    token = reward_token(get_vault(), redemption_id)
    for _ in range(CARD_DRAWS):
        statement = redemption_statement(
            request,
            priced,
            redemption_id,
            api_key_id=api_key_id,
            now=now,
            token=token,
            campaign_id=campaign_id,
            sms_job=None if silent else jobs.CAMPAIGN_SMS if granted else jobs.REWARD_SMS,
        )
        try:
            # One round trip: leaving the pipeline sends its Sync and collects every result.
            with db.pipeline():
                if priced.has_limits:
                    db.execute(LIMIT_LOCK, {"msisdn": request.msisdn})
                redeemed = db.cursor(row_factory=_RESERVED).execute(statement.sql, statement.params)
                if priced.budgeted:
                    db.execute(TAKE_BUDGET, statement.params)
        except pg_errors.CheckViolation as exc:
            raise budget_refusal(exc) or exc from None
        reward = _reward_of(redeemed.fetchone(), priced, request)
        if reward is not None:
            accepted = _accepted(request, priced, redemption_id, reward, now, token)
            if silent:
                db.execute(OPTED_OUT, {"id": redemption_id, "now": now})
                accepted = accepted.model_copy(update={"status": "failed", "status_reason": "bulk_opt_out"})
            return accepted
    raise RuntimeError("could not mint a unique card number")


async def redeem_async(
    conn: AsyncConnection[Any],
    request: RedemptionIn,
    *,
    scope: Scope,
    api_key_id: int | None,
    now: datetime | None = None,
) -> tuple[RedemptionOut, AtCommit | None]:
    """redeem() on an asyncio connection, in its transaction: the same statement, the same refusals.
    The budget is not taken here but returned, for the caller to send with its COMMIT (run_once_async):
    every redemption of the program waits for that row, so it is locked for no client round trip."""
    now = now or datetime.now(UTC)
    priced = price(await get_snapshot_async(conn), request, scope=scope, now=now)
    redemption_id = uuid7()
    token = reward_token(get_vault(), redemption_id)
    for _ in range(CARD_DRAWS):
        statement = redemption_statement(
            request, priced, redemption_id, api_key_id=api_key_id, now=now, token=token
        )
        # Opens the transaction, or goes on with it when a card number already taken made this the
        # statement's second draw.
        async with one_write_pipeline(conn):
            if priced.has_limits:
                await conn.execute(LIMIT_LOCK, {"msisdn": request.msisdn})
            redeemed = await conn.cursor(row_factory=_RESERVED).execute(statement.sql, statement.params)
        reward = _reward_of(await redeemed.fetchone(), priced, request)
        if reward is not None:
            budget = AtCommit(TAKE_BUDGET, statement.params, budget_refusal) if priced.budgeted else None
            return _accepted(request, priced, redemption_id, reward, now, token), budget
    raise RuntimeError("could not mint a unique card number")


def budget_refusal(error: Exception) -> BudgetExceeded | None:
    """TAKE_BUDGET's refusal (a check_violation named program_budget) as the problem it answers."""
    if isinstance(error, pg_errors.CheckViolation) and error.diag.constraint_name == "program_budget":
        return BudgetExceeded("the program's monthly budget is spent")
    return None


# A minted card number that is already taken (10^11 numbers) makes the statement draw another.
CARD_DRAWS = 5


def _reward_of(
    row: Reserved | None, priced: Priced, request: RedemptionIn
) -> tuple[str, datetime | None] | None:
    """What the statement's row says: the reward's last 4 and expiry, or a refusal (raised, in the
    order the steps run), or None for a card number already taken."""
    assert row is not None  # the statement's last SELECT always returns its one row
    last4, expires_at = row.last4, row.expires_at
    if not row.within:
        raise LimitExceeded(f"this subscriber has reached the limit of offer {priced.offer.code}")
    if last4 is None:
        if priced.product.kind == "code":
            raise OutOfStock(f"no codes left for {priced.product.sku}")
        return None
    if not row.inserted:
        raise DuplicateExternalId(
            f"this program already has a redemption with external_id {request.external_id!r}"
        )
    checkpoint("redeem.after_statement")
    if priced.product.kind == "code" and not priced.sandbox:
        CODES_TAKEN.labels(priced.product.sku).inc()  # the stock runway alert's rate
    return last4, expires_at


def _accepted(
    request: RedemptionIn,
    priced: Priced,
    redemption_id: uuid.UUID,
    reward: tuple[str, datetime | None],
    now: datetime,
    token: str,
) -> RedemptionOut:
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
        sandbox=priced.sandbox,
        reward_url=reward_url(token),
        created_at=now,
        updated_at=now,
        reward=RewardOut(
            kind=product.kind,
            sku=product.sku,
            name=product.name,
            partner=product.partner_code,
            nominal=Money.of(priced.nominal_minor, product.currency),
            last4=reward[0],
            expires_at=reward[1],
        ),
    )


def price(
    snap: CatalogSnapshot, request: RedemptionIn, *, scope: Scope, now: datetime, granted: bool = False
) -> Priced:
    """The catalog's answer to a request, from the in-memory snapshot: no database round trip.
    `granted`: a campaign's grant, which debits no points (request.points is not checked) and whose
    value the campaign reserved against the budget as a whole."""
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
    if request.points != points and not granted:
        raise PointsMismatch(f"offer {offer.code} costs {points} points on tariff {request.tariff}")
    if scope.in_sandbox:
        if request.msisdn == sandbox.OUT_OF_STOCK:
            raise OutOfStock(f"no codes left for {product.sku} (sandbox magic number)")
        return Priced(program, offer, product, tariff, nominal, 0, sandbox=True)
    if program.monthly_budget_minor is not None and nominal > program.monthly_budget_minor and not granted:
        raise BudgetExceeded("the program's monthly budget is spent")
    local_date = now.astimezone(program.zone).date()
    rate = snap.vat_rate_bp(product.vat_schedule, local_date) if product.vat_point == "sale" else 0
    return Priced(program, offer, product, tariff, nominal, rate, granted=granted)


# The statements of a redemption (sql/*.sql): the subscriber's lock, then the one statement that does
# the rest (reserve.sql, composed once per shape by _redemption_sql), and the program's budget last.
LIMIT_LOCK = load("limit_lock")
TAKE_BUDGET = load("take_budget")
OPTED_OUT = load("opted_out")


# The guard of a checked statement (bench/ceiling.py): an error when any of its writes touched no row,
# so that a redemption that took no code or wrote nothing is an error, never a success. The error names
# the write that was missing (a text that is no integer: `invalid input syntax ... "guard: ..."`), and
# each message holds a value read at run time, so that the planner cannot fold it into an error of every
# execution.
_GUARD = (
    ", CASE WHEN (SELECT count(*) FROM c) = 0"
    " THEN ('guard: no reward taken (within the limits: ' || coalesce((SELECT within FROM lim)::text, '?')"
    " || ')')::int"
    " WHEN (SELECT count(*) FROM r) = 0"
    " THEN ('guard: no redemption inserted, a duplicate external id (rewards ' || (SELECT count(*) FROM c)"
    " || ')')::int"
    " WHEN (SELECT count(*) FROM rec) = 0"
    " THEN ('guard: no issue record (redemptions ' || (SELECT count(*) FROM r) || ')')::int"
    " WHEN (SELECT count(*) FROM sms) = 0"
    " THEN ('guard: no SMS (redemptions ' || (SELECT count(*) FROM r) || ')')::int"
    " ELSE 1 END AS guard"
)


@lru_cache
def _redemption_sql(
    *, limits: bool, kind: str, record_sql: str, sms_sql: str, sandbox: bool, checked: bool = False
) -> str:
    """The statement of one redemption (sql/reserve.sql): whether the subscriber is within the offer's
    limits (lim), the reward (c: a pooled code, or a minted card, only when within), the redemption (r:
    nothing on a duplicate external_id), its issue record and its SMS in the outbox. Its one row tells
    the caller which of these happened. A sandbox redemption's reward is a test code or a sandbox card, and it
    has no issue record (record_sql is then a plain SELECT). `checked` (the benchmark's ceiling, not
    sandbox): the statement fails, instead of reporting a refusal, unless it wrote every row of one
    redemption (a reward, the redemption, its record and its SMS)."""
    if checked and sandbox:
        raise ValueError("a sandbox redemption writes no record: it cannot be checked")
    checked_returning = " RETURNING 1" if checked else ""
    within = "(SELECT within FROM lim)"
    flag = "true" if sandbox else "false"
    if kind != "code":
        reward = mint_card_sql(when=within, sandbox=sandbox)
    elif sandbox:
        reward = compose("sandbox_code", when=within)
    else:
        reward = take_code_sql(when=within)
    code_id, card_id = ("NULL", "c.id") if kind != "code" else ("NULL" if sandbox else "c.id", "NULL")
    return compose(
        "reserve",
        limits=compose("within_limits", sandbox=flag) if limits else "SELECT true AS within",
        reward=reward,
        code_id=code_id,
        card_id=card_id,
        sandbox=flag,
        returning=ledger.REDEMPTION_RETURNING,
        record=record_sql,
        sms=sms_sql,
        checked_returning=checked_returning,
        guard=_GUARD if checked else "",
    )


@dataclass(frozen=True, slots=True)
class Reserved:
    """The one row of a redemption's statement: within the limits; the reward's last 4 and expiry
    (None: no reward, the pool empty or the card number taken); the redemption row inserted (False: a
    duplicate external_id)."""

    within: bool
    last4: str | None
    expires_at: datetime | None
    inserted: bool


_RESERVED = class_row(Reserved)


def redemption_statement(
    request: RedemptionIn,
    priced: Priced,
    redemption_id: uuid.UUID,
    *,
    api_key_id: int | None,
    now: datetime,
    token: str | None = None,
    checked: bool = False,
    campaign_id: uuid.UUID | None = None,
    sms_job: jobs.Job | None = jobs.REWARD_SMS,
) -> Fragment:
    """The statement of one redemption (see _redemption_sql) and its parameters; `token`: the reward
    page's token of `redemption_id` when the caller has it already; `checked`: an error unless it
    wrote a whole redemption (for the benchmark's ceiling); `campaign_id`, `sms_job`: a campaign's
    grant, whose SMS goes on the bulk channel."""
    program, product, offer = priced.program, priced.product, priced.offer
    card = product.kind != "code"
    record = (
        Fragment("SELECT NULL", {})
        if priced.sandbox
        else ledger.issue_record(
            sku=product.sku,
            partner_id=product.partner_id,
            nominal_minor=priced.nominal_minor,
            # Our own card is a liability at face value; the partner's cost arises when it is exchanged.
            cost_minor=0 if card else product.cost_price_minor or 0,
            vat_rate_bp=priced.vat_rate_bp,
        )
    )
    day = now.astimezone(program.zone).replace(hour=0, minute=0, second=0, microsecond=0)
    vault = get_vault()
    params: dict[str, Any] = {
        "id": redemption_id,
        "program": program.id,
        "tariff": priced.tariff.id,
        "offer": offer.id,
        "product": product.id,
        "external_id": request.external_id,
        "msisdn": request.msisdn,
        "locale": request.locale or "ru",
        "points": request.points,
        "currency": product.currency,
        "nominal": priced.nominal_minor,
        "api_key": api_key_id,
        # The reward page's token is derived from the id, never stored: only its hash is.
        "link_hash": token_hash(token or reward_token(vault, redemption_id)),
        "campaign": campaign_id,
        "now": now,
        **record.params,
    }
    if priced.has_limits:
        params.update(
            limit_day=offer.limit_per_day,
            limit_month=offer.limit_per_month,
            day=day,
            month=day.replace(day=1),
        )
    if card:
        params.update(new_card(vault, validity_days=product.validity_days or 365, now=now).params())
    elif priced.sandbox:
        params["sandbox_last4"] = sandbox.sandbox_code(redemption_id)[-4:]
    else:
        params["code_status"] = "reserved"
    if priced.budgeted:
        params.update(budget_month=day.date().replace(day=1), budget=program.monthly_budget_minor)
    # The first send of the reward's SMS, from the redemption row: its id and time.
    sms = (
        outbox.insert(
            sms_job,
            payload="jsonb_build_object('redemption_id', r.id, 'send', 0)",
            source="r",
            created_at="r.created_at",
        )
        if sms_job is not None
        else "SELECT NULL"  # a campaign's grant to a subscriber who opted out of bulk SMS
    )
    params.update(outbox.trace_params())
    sql = _redemption_sql(
        limits=priced.has_limits,
        kind=product.kind,
        record_sql=record.sql,
        sms_sql=sms,
        sandbox=priced.sandbox,
        checked=checked,
    )
    return Fragment(sql, params)


def _month(program: ProgramInfo, at: datetime) -> date:
    return at.astimezone(program.zone).date().replace(day=1)


def _release_budget(db: Connection[Any], program: ProgramInfo, created_at: datetime, amount: int) -> None:
    db.execute(
        RELEASE_BUDGET, {"amount": amount, "program": program.id, "month": _month(program, created_at)}
    )


# --- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedemptionRow:
    """A redemption as it is stored (sql/redemption.sql): what the API shows of it (to_out) and what
    the cancel rule asks (can_cancel)."""

    id: uuid.UUID
    external_id: str
    program_id: int
    tariff_id: int
    offer_id: int
    product_id: int
    msisdn: str
    points: int
    locale: str
    status: str
    status_reason: str | None
    resend_count: int
    created_at: datetime
    updated_at: datetime
    nominal_minor: int
    currency: str
    reward_last4: str | None
    reward_expires_at: datetime | None
    code_id: int | None
    card_id: int | None
    first_sent_at: datetime | None
    sandbox: bool
    has_link: bool
    revealed_at: datetime | None


_SELECT = load("redemption")
_BY_ID = _SELECT + "\n WHERE r.id = %(id)s"
_BY_ID_LOCKED = _BY_ID + " FOR UPDATE"
RELEASE_BUDGET = load("release_budget")
MARK_CANCELLED = load("mark_cancelled")
MARK_RESENT = load("mark_resent")


def _sms_out(attempts: list[SmsAttempt]) -> list[SmsOut]:
    return [
        SmsOut(
            send=a.send,
            provider=a.provider,
            status=a.status,
            segments=a.segments,
            attempts=a.attempts,
            submitted_at=a.submitted_at,
            sent_at=a.sent_at,
            receipt_at=a.receipt_at,
            receipt_state=a.receipt_state,
            error_code=a.error_code,
            error=a.error,
        )
        for a in attempts
    ]


def with_sms(session: Session, rows: Sequence[RedemptionRow]) -> dict[uuid.UUID, list[SmsOut]]:
    """The SMS of these redemptions, in one indexed query."""
    found = sms_attempts(driver(session), [row.id for row in rows])
    return {row.id: _sms_out(found.get(row.id, [])) for row in rows}


def to_out(snap: CatalogSnapshot, row: RedemptionRow, sms: list[SmsOut] | None = None) -> RedemptionOut:
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
        sandbox=row.sandbox,
        reward_url=link_of(get_vault(), row.id) if row.has_link else None,
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
        sms=sms or [],
    )


def _program_ids(snap: CatalogSnapshot, scope: Scope) -> list[int] | None:
    if scope.programs is None:
        return None
    return [p.id for code, p in snap.programs.items() if code in scope.programs]


def get_redemption(
    session: Session, redemption_id: uuid.UUID, *, scope: Scope, for_update: bool = False
) -> RedemptionRow:
    snap = get_snapshot(session)
    with driver(session).cursor(row_factory=class_row(RedemptionRow)) as cursor:
        row = cursor.execute(_BY_ID_LOCKED if for_update else _BY_ID, {"id": redemption_id}).fetchone()
    if (
        row is None
        or not scope.allows(snap.programs_by_id[row.program_id].code)
        or not scope.sees(row.sandbox)
    ):
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
        where.append("r.program_id = ANY(%(programs)s)")
        params["programs"] = ids
    if scope.sandbox is not None:
        where.append("r.sandbox = %(sandbox)s")
        params["sandbox"] = scope.sandbox
    if program is not None:
        info = snap.programs.get(program)
        if info is None or not scope.allows(program):
            return []
        where.append("r.program_id = %(program)s")
        params["program"] = info.id
    for column, value in (("external_id", external_id), ("msisdn", msisdn), ("status", status)):
        if value is not None:
            where.append(f"r.{column} = %({column})s")
            params[column] = value
    if created_from is not None:
        where.append("r.created_at >= %(created_from)s")
        params["created_from"] = created_from
    if created_to is not None:
        where.append("r.created_at < %(created_to)s")
        params["created_to"] = created_to
    if before is not None:
        where.append("r.id < %(before)s")
        params["before"] = before
    statement = (
        _SELECT
        + ("\n WHERE " + " AND ".join(where) if where else "")
        + "\n ORDER BY r.id DESC LIMIT %(limit)s"
    )
    with driver(session).cursor(row_factory=class_row(RedemptionRow)) as cursor:
        rows = cursor.execute(statement, params).fetchall()
    sms = with_sms(session, rows)
    return [to_out(snap, row, sms[row.id]) for row in rows]


def read_redemption(session: Session, redemption_id: uuid.UUID, *, scope: Scope) -> RedemptionOut:
    """One redemption with its SMS: two indexed queries."""
    row = get_redemption(session, redemption_id, scope=scope)
    return to_out(get_snapshot(session), row, with_sms(session, [row])[row.id])


# --- cancel and resend ---------------------------------------------------------------------------


def can_cancel(row: RedemptionRow, card: CardUse | None) -> bool:
    """The cancel rule: a redemption may be cancelled while nobody could have used its reward, i.e. a
    code whose SMS no provider has taken yet (accepted or failed, never sent) and that was never shown
    on the reward page, or a card nobody has touched (`card`: the redemption's card, None for a code).
    A cancelled one has nothing left to cancel (`cancel` answers it as it is). `cancel` applies this
    rule and the console asks it."""
    if row.status == "cancelled":
        return False
    if row.card_id is None:
        return row.first_sent_at is None and row.revealed_at is None and row.status in ("accepted", "failed")
    return card is not None and card.untouched


def cancellable(session: Session, row: RedemptionRow) -> bool:
    """`can_cancel` for a redemption row as `get_redemption` reads it (its card read without a lock)."""
    return can_cancel(row, card_use(session, row.card_id) if row.card_id is not None else None)


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
    card = card_use(session, row.card_id, for_update=True) if row.card_id is not None else None
    if not can_cancel(row, card):
        if card is not None:
            raise NotCancellable("the card has been used, blocked or has expired")
        if row.first_sent_at is None and row.revealed_at is not None:  # as exposed as a sent SMS
            raise NotCancellable("the code has been shown on the reward page")
        raise NotCancellable("the code has been sent to the subscriber")
    if row.card_id is None:
        if row.code_id is not None:  # else a sandbox test code, from no pool
            release_code(driver(session), row.code_id, now=now)
    else:
        cancel_card(driver(session), row.card_id)
    checkpoint("cancel.after_release")
    reversed_ = ledger.write_reversal(driver(session), redemption_id, occurred_at=now)
    if reversed_ != (0 if row.sandbox else 1):
        raise RuntimeError(f"redemption {redemption_id} has {reversed_} issue records")  # invariant 4
    driver(session).execute(MARK_CANCELLED, {"id": redemption_id, "now": now})
    program = snap.programs_by_id[row.program_id]
    if program.monthly_budget_minor is not None and not row.sandbox:
        _release_budget(driver(session), program, row.created_at, row.nominal_minor)
    webhooks.emit(
        driver(session),
        program_id=program.id,
        webhook_url=program.webhook_url,
        redemption_id=redemption_id,
        event="cancelled",
        now=now,
        data={
            "redemption_id": str(redemption_id),
            "external_id": row.external_id,
            "status": "cancelled",
            "sandbox": row.sandbox,
        },
    )
    checkpoint("cancel.after_records")
    return read_redemption(session, redemption_id, scope=scope)


def resend(
    session: Session, redemption_id: uuid.UUID, *, scope: Scope, now: datetime | None = None
) -> RedemptionOut:
    now = now or datetime.now(UTC)
    row = get_redemption(session, redemption_id, scope=scope, for_update=True)
    if row.status == "cancelled":
        raise NotResendable("the redemption is cancelled")
    if row.resend_count >= MAX_RESENDS:
        raise ResendLimitReached(
            f"a reward may be re-sent at most {MAX_RESENDS} times",
        )
    send = row.resend_count + 1
    driver(session).execute(MARK_RESENT, {"send": send, "now": now, "id": redemption_id})
    outbox.enqueue(
        driver(session), jobs.REWARD_SMS, {"redemption_id": str(redemption_id), "send": send}, now=now
    )
    return read_redemption(session, redemption_id, scope=scope)
