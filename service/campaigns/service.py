"""A campaign's life: a draft gets its file, which is validated as a whole before anything is
reserved; a submission freezes what was validated (the file's hash, its line count and value); above
the program's threshold a second person approves exactly that, which reserves the value against the
program's budget; the runner then turns line after line into an ordinary redemption (the same domain
function as the API, external id `campaign:<id>:<ref>`) at the campaign's rate, until it is done,
paused or cancelled. What the lines did not use goes back to the budget when the campaign ends."""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from psycopg import Connection
from psycopg.rows import class_row, scalar_row
from sqlalchemy.orm import Session

from service.campaigns import errors
from service.campaigns.sql import load
from service.campaigns.upload import Line, LineError, UploadRefused, read_upload
from service.catalog.errors import UnknownOffer, UnknownProgram
from service.catalog.snapshot import CatalogSnapshot, ProgramInfo, get_snapshot
from service.events import webhooks
from service.kit.config import get_settings
from service.kit.db.engine import driver, one, transaction
from service.kit.messaging import jobs, outbox
from service.kit.reliability.faults import checkpoint
from service.kit.values.ids import uuid7
from service.kit.values.money import Money
from service.kit.values.quiet_hours import quiet_hours
from service.kit.values.zones import zone
from service.pools.errors import OutOfStock
from service.redemptions import service as redemptions
from service.redemptions.errors import (
    BudgetExceeded,
    DuplicateExternalId,
    LimitExceeded,
    OfferInactive,
    TariffNotEligible,
)
from service.redemptions.schemas import RedemptionIn

# Lines turned into redemptions per transaction: small, so that a pause is seen within a second and a
# killed worker loses at most this many lines' work (which runs again: the lines stay pending).
CHUNK = 20
# Lines per runner step when the campaign has no rate cap (a step is about a second's work).
UNCAPPED_STEP = 400
REPORT_PREVIEW = 50


@dataclass(frozen=True)
class Actor:
    """Who moves a campaign: a person (`staff:<id>`, in the console or through an API key that
    person holds) or a key without an owner (`key:<id>`). `api_key`: the key's id when the move
    came through the API; `staff_id`: the staff account behind it, if any."""

    id: str
    name: str
    role: str
    api_key: str | None = None
    staff_id: int | None = None


@dataclass(frozen=True)
class Problem:
    line: int | None
    code: str
    message: str


@dataclass(frozen=True)
class Campaign:
    id: uuid.UUID
    program_id: int
    tariff_id: int
    offer_id: int
    name: str
    currency: str
    locale: str
    budget_cap_minor: int | None
    starts_at: datetime | None
    rate_per_second: int | None
    status: str
    file_name: str | None
    file_sha256: bytes | None
    file_format: str | None
    file_encoding: str | None
    file_separator: str | None
    line_count: int
    problem_count: int
    total_minor: int
    validated_at: datetime | None
    needs_approval: bool | None
    submitted_by: str | None
    submitted_at: datetime | None
    submitted_sha256: bytes | None
    submitted_lines: int | None
    submitted_total_minor: int | None
    approved_by: str | None
    approved_at: datetime | None
    rejected_by: str | None
    rejected_at: datetime | None
    rejection_reason: str | None
    reserved_minor: int
    budget_month: date | None
    started_at: datetime | None
    finished_at: datetime | None
    created_by: str
    api_key_id: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class LineCounts:
    pending: int
    done: int
    failed: int
    cancelled: int
    spent_minor: int
    silent: int  # granted without an SMS: the subscriber opted out of bulk SMS


@dataclass(frozen=True)
class Progress:
    campaign: Campaign
    program: ProgramInfo
    offer_code: str
    tariff_code: str
    lines: LineCounts
    eta_seconds: int | None
    problems: list[Problem]


@dataclass(frozen=True)
class ResultLine:
    line_no: int
    ref: str
    msisdn: str
    status: str
    redemption_id: uuid.UUID | None
    redemption_status: str | None
    status_reason: str | None
    error_code: str | None


_CAMPAIGN = class_row(Campaign)
CAMPAIGN = load("campaign")


def _db(session: Session) -> Connection[Any]:
    return driver(session)


def _program(snap: CatalogSnapshot, code: str, programs: frozenset[str] | None) -> ProgramInfo:
    program = snap.programs.get(code)
    if program is None or not program.active or (programs is not None and code not in programs):
        raise UnknownProgram(f"no program {code}")
    return program


def _campaign(
    db: Connection[Any],
    campaign_id: uuid.UUID,
    programs: frozenset[str] | None,
    snap: CatalogSnapshot,
    *,
    lock: bool = False,
) -> Campaign:
    row = (
        db.cursor(row_factory=_CAMPAIGN)
        .execute(CAMPAIGN + (" FOR UPDATE" if lock else ""), {"id": campaign_id})
        .fetchone()
    )
    if row is None or (programs is not None and snap.programs_by_id[row.program_id].code not in programs):
        raise errors.CampaignNotFound(f"no campaign {campaign_id}")
    return row


def _move(
    db: Connection[Any],
    campaign: Campaign,
    actor: Actor,
    action: str,
    to: str | None,
    now: datetime,
    **details: Any,
) -> None:
    db.execute(
        load("move"),
        {
            "campaign": campaign.id,
            "at": now,
            "actor": f"{actor.name} ({actor.id}, {actor.role})",
            "action": action,
            "from_status": campaign.status,
            "to_status": to,
            "details": json.dumps(details, default=str),
        },
    )
    if actor.api_key is not None:
        # A move through the API is in the staff audit log too, beside the console's (which the
        # console writes itself, with the staff member's session and address): one log of every move.
        db.execute(
            load("audit_api_move"),
            {
                "who": f"api key {actor.api_key}"[:254],
                "staff": actor.staff_id,
                "role": actor.role,
                "action": f"campaign_{action}",
                "target": str(campaign.id),
                "details": json.dumps({"from": campaign.status, "to": to, **details}, default=str),
                "at": now,
            },
        )


def _price(snap: CatalogSnapshot, program: ProgramInfo, tariff: str, offer: str, now: datetime) -> int:
    """The offer's face value on the tariff, with the API's refusals (unknown, inactive, not eligible)."""
    request = RedemptionIn.model_construct(
        program=program.code, tariff=tariff, offer=offer, msisdn="+77010000000", points=0, external_id="-"
    )
    return redemptions.price(
        snap, request, scope=redemptions.Scope(None), now=now, granted=True
    ).nominal_minor


def create(
    session: Session,
    *,
    program: str,
    tariff: str,
    offer: str,
    name: str,
    locale: str,
    budget_cap_minor: int | None,
    starts_at: datetime | None,
    rate_per_second: int | None,
    actor: Actor,
    api_key_id: int | None,
    programs: frozenset[str] | None,
    now: datetime | None = None,
) -> Campaign:
    now = now or datetime.now(UTC)
    snap = get_snapshot(session)
    info = _program(snap, program, programs)
    _price(snap, info, tariff, offer, now)
    db = _db(session)
    campaign_id = uuid7()
    db.execute(
        load("create"),
        {
            "id": campaign_id,
            "program": info.id,
            "tariff": snap.tariffs[(info.id, tariff)].id,
            "offer": snap.offers[(info.id, offer)].id,
            "name": name,
            "currency": info.currency,
            "locale": locale,
            "cap": budget_cap_minor,
            "starts_at": starts_at,
            "rate": rate_per_second,
            "by": f"{actor.name} ({actor.id})",
            "api_key": api_key_id,
            "now": now,
        },
    )
    created = _campaign(db, campaign_id, None, snap)
    _move(db, created, actor, "create", "draft", now)
    return created


def upload(
    session: Session,
    campaign_id: uuid.UUID,
    path: Path,
    *,
    filename: str | None,
    content_type: str | None,
    actor: Actor,
    programs: frozenset[str] | None,
    now: datetime | None = None,
    max_lines: int = 1_000_000,
) -> Progress:
    """The draft's lines from the file, replacing any earlier upload, and the validation of all of
    them: the file's own problems (the parser's), duplicates, offers, stock, budget and the Kazakh
    template. Nothing is reserved. A file that cannot be read at all raises errors.UploadRefused and
    writes nothing (the caller's transaction rolls back)."""
    now = now or datetime.now(UTC)
    snap = get_snapshot(session)
    db = _db(session)
    campaign = _campaign(db, campaign_id, programs, snap, lock=True)
    if campaign.status != "draft":
        raise errors.NotADraft(f"campaign {campaign.id} is {campaign.status}: only a draft takes a file")
    try:
        detected, lines = read_upload(path, filename=filename, content_type=content_type, max_lines=max_lines)
        db.execute(load("clear_lines"), {"campaign": campaign.id})
        problems = _load_lines(db, campaign.id, lines)
    except UploadRefused as refused:
        raise errors.UploadRefused(refused.message, reason=refused.code) from None
    program = snap.programs_by_id[campaign.program_id]
    problems += _validate(db, snap, campaign, program, now)
    digest = _sha256(path)
    db.execute(
        load("validated"),
        {
            "id": campaign.id,
            "file_name": (filename or path.name)[:200],
            "sha": digest,
            "format": detected.format,
            "encoding": detected.encoding,
            "separator": detected.separator,
            "now": now,
        },
    )
    updated = _campaign(db, campaign.id, None, snap)
    _move(
        db,
        campaign,
        actor,
        "upload",
        "draft",
        now,
        file=updated.file_name,
        sha256=digest.hex(),
        lines=updated.line_count,
        problems=updated.problem_count,
        format=detected.format,
        encoding=detected.encoding,
        separator=detected.separator,
    )
    return progress(session, campaign.id, programs=None)


def _sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.digest()


def _load_lines(db: Connection[Any], campaign_id: uuid.UUID, lines: Iterator[Line | LineError]) -> int:
    """COPY of the good lines into campaign_lines, and of the parser's problems into
    campaign_problems (spooled: a file of a million bad lines stays out of memory). Returns how many
    problems there were."""
    problems = 0
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        with db.cursor().copy(
            "COPY campaign_lines (campaign_id, line_no, ref, msisdn, offer_code) FROM STDIN"
        ) as copy:
            for item in lines:
                if isinstance(item, LineError):
                    problems += 1
                    spool.write(f"{item.number}\t{_tsv(item.code)}\t{_tsv(item.message)}\n")
                else:
                    copy.write_row((campaign_id, item.number, item.ref, item.phone, item.offer))
        spool.seek(0)
        with db.cursor().copy(
            "COPY campaign_problems (campaign_id, line_no, code, message) FROM STDIN"
        ) as copy:
            for row in spool:
                number, code, message = row.rstrip("\n").split("\t", 2)
                copy.write_row((campaign_id, int(number), _untsv(code), _untsv(message)))
    return problems


def _tsv(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _untsv(text: str) -> str:
    return text.replace("\\n", "\n").replace("\\t", "\t").replace("\\\\", "\\")


@dataclass(frozen=True)
class _Totals:
    lines: int
    total: Decimal | None  # sum() of a bigint is numeric; NULL for no line


def _validate(
    db: Connection[Any], snap: CatalogSnapshot, campaign: Campaign, program: ProgramInfo, now: datetime
) -> int:
    """The checks of the lines as a whole, in SQL over campaign_lines; each finding is a report line.
    Returns how many it found."""
    found = 0
    params = {"campaign": campaign.id}
    found += db.execute(load("duplicate_refs"), params).rowcount
    found += db.execute(load("duplicate_lines"), params).rowcount
    tariff = snap.tariffs_by_id[campaign.tariff_id]
    default_offer = next(o for o in snap.offers.values() if o.id == campaign.offer_id)
    # The program's offers that this tariff may have now, with their face values.
    priced: list[tuple[str, int, int]] = []
    for (program_id, code), offer in snap.offers.items():
        if program_id != program.id:
            continue
        try:
            nominal = _price(snap, program, tariff.code, code, now)
        except (UnknownOffer, OfferInactive, TariffNotEligible):
            continue
        priced.append((code, offer.id, nominal))
    db.execute(
        load("resolve_offers"),
        {
            **params,
            "default_offer": default_offer.code,
            "codes": [code for code, _, _ in priced],
            "offer_ids": [offer_id for _, offer_id, _ in priced],
            "nominals": [nominal for _, _, nominal in priced],
        },
    )
    found += db.execute(load("unknown_offers"), params).rowcount
    found += db.execute(load("unpriced_lines"), {**params, "tariff": tariff.code}).rowcount
    problems: list[tuple[str, str]] = []
    for (kind,) in db.execute(load("reward_kinds"), params).fetchall():
        if not ((program.templates or {}).get(kind) or {}).get("kk"):
            problems.append(
                (
                    "no_kk_template",
                    f"program {program.code} has no Kazakh (kk) SMS template for a {kind}:"
                    " the law wants Kazakh in every advertisement",
                )
            )
    totals = one(db.cursor(row_factory=class_row(_Totals)).execute(load("line_totals"), params).fetchone())
    lines, total = totals.lines, int(totals.total or 0)
    if lines == 0:
        problems.append(("no_lines", "the file has no line that can run"))
    for sku, wanted, available in db.execute(load("stock_needed"), params).fetchall():
        if wanted > available:
            problems.append(
                (
                    "out_of_stock",
                    f"product {sku}: the campaign needs {wanted} codes, the pool holds {available}",
                )
            )
    cur = campaign.currency

    def amount(minor: int) -> str:
        return f"{Money.of(minor, cur).amount} {cur}"

    if campaign.budget_cap_minor is not None and total > campaign.budget_cap_minor:
        problems.append(
            (
                "over_budget_cap",
                f"the lines are worth {amount(total)}, over the campaign's cap of"
                f" {amount(campaign.budget_cap_minor)}",
            )
        )
    if program.monthly_budget_minor is not None:
        left = program.monthly_budget_minor - _spent(db, program, now)
        if total > left:
            problems.append(
                (
                    "over_program_budget",
                    f"the lines are worth {amount(total)}; the program's budget has"
                    f" {amount(max(left, 0))} left this month",
                )
            )
    for code, message in problems:
        db.execute(load("problem"), {**params, "code": code, "message": message})
    return found + len(problems)


def _budget_month(program: ProgramInfo, now: datetime) -> date:
    return now.astimezone(program.zone).date().replace(day=1)


def _spent(db: Connection[Any], program: ProgramInfo, now: datetime) -> int:
    # No row: nothing spent this month yet.
    spent = (
        db.cursor(row_factory=scalar_row)
        .execute(load("budget_spent"), {"program": program.id, "month": _budget_month(program, now)})
        .fetchone()
    )
    return int(spent) if spent is not None else 0


def submit(
    session: Session,
    campaign_id: uuid.UUID,
    *,
    actor: Actor,
    programs: frozenset[str] | None,
    now: datetime | None = None,
) -> Campaign:
    """Freezes what was validated. At or below the program's threshold the campaign is approved at
    once (by nobody: the move says so); above it, it waits for a second person."""
    now = now or datetime.now(UTC)
    snap = get_snapshot(session)
    db = _db(session)
    campaign = _campaign(db, campaign_id, programs, snap, lock=True)
    if campaign.status != "draft":
        raise errors.WrongState(f"campaign {campaign.id} is {campaign.status}: only a draft is submitted")
    if campaign.validated_at is None:
        raise errors.NotValidated("upload the campaign's lines first")
    if campaign.problem_count:
        raise errors.NotValidated(
            f"the validation report has {campaign.problem_count} problems: fix the file and upload it again"
        )
    program = snap.programs_by_id[campaign.program_id]
    threshold = program.campaign_approval_minor
    needs = threshold is None or campaign.total_minor > threshold
    db.execute(load("submit"), {"id": campaign.id, "by": actor.id, "needs": needs, "now": now})
    _move(
        db,
        campaign,
        actor,
        "submit",
        "submitted",
        now,
        lines=campaign.line_count,
        total_minor=campaign.total_minor,
    )
    submitted = _campaign(db, campaign.id, None, snap)
    if not needs:
        return _approve(db, snap, submitted, Actor("system", "below the approval threshold", "system"), now)
    return submitted


def _decider(actor: Actor, campaign: Campaign, decision: str) -> None:
    """Maker-checker: a decision is a known person's, and never the submitter's, whatever their role or
    channel (a key an owner holds is that owner: one person in the console and through the API)."""
    if actor.id == campaign.submitted_by:
        raise errors.SamePerson(f"the person who submitted a campaign may not {decision} it")
    if not actor.id.startswith("staff:"):
        raise errors.UnknownPerson(
            f"only a person may {decision} a campaign: this key has no owner (rewards keys create --owner)"
        )


def approve(
    session: Session,
    campaign_id: uuid.UUID,
    *,
    actor: Actor,
    programs: frozenset[str] | None,
    sha256: bytes | None = None,
    now: datetime | None = None,
) -> Campaign:
    """A second person approves the submitted snapshot (`sha256`, when given, must be the one they
    saw). The submitter may never approve, whatever their role."""
    now = now or datetime.now(UTC)
    snap = get_snapshot(session)
    db = _db(session)
    campaign = _campaign(db, campaign_id, programs, snap, lock=True)
    if campaign.status != "submitted":
        raise errors.WrongState(
            f"campaign {campaign.id} is {campaign.status}: only a submitted one is approved"
        )
    _decider(actor, campaign, "approve")
    if sha256 is not None and sha256 != campaign.submitted_sha256:
        raise errors.SnapshotChanged("the campaign is not the one you saw: read it again")
    return _approve(db, snap, campaign, actor, now)


def _approve(
    db: Connection[Any], snap: CatalogSnapshot, campaign: Campaign, actor: Actor, now: datetime
) -> Campaign:
    program = snap.programs_by_id[campaign.program_id]
    month = _budget_month(program, now)
    total = campaign.submitted_total_minor or 0
    if program.monthly_budget_minor is not None:
        taken = db.execute(
            load("reserve_budget"),
            {"program": program.id, "month": month, "amount": total, "budget": program.monthly_budget_minor},
        ).rowcount
        if not taken:
            raise BudgetExceeded("the program's monthly budget cannot hold this campaign")
    db.execute(
        load("approve"), {"id": campaign.id, "by": actor.id, "reserved": total, "month": month, "now": now}
    )
    _move(db, campaign, actor, "approve", "approved", now, reserved_minor=total)
    send_runners(db, campaign.id, now=now)
    webhooks.emit(
        db,
        program_id=program.id,
        webhook_url=program.webhook_url,
        redemption_id=None,
        event="campaign.approved",
        data={
            "campaign_id": str(campaign.id),
            "name": campaign.name,
            "lines": campaign.submitted_lines,
            "total": Money.of(total, campaign.currency).model_dump(mode="json"),
            "approved_by": actor.name,
        },
        now=now,
    )
    return _campaign(db, campaign.id, None, snap)


def reject(
    session: Session,
    campaign_id: uuid.UUID,
    *,
    actor: Actor,
    reason: str,
    programs: frozenset[str] | None,
    now: datetime | None = None,
) -> Campaign:
    """Back to draft, with who rejected it and why."""
    now = now or datetime.now(UTC)
    snap = get_snapshot(session)
    db = _db(session)
    campaign = _campaign(db, campaign_id, programs, snap, lock=True)
    if campaign.status != "submitted":
        raise errors.WrongState(
            f"campaign {campaign.id} is {campaign.status}: only a submitted one is rejected"
        )
    _decider(actor, campaign, "reject")
    db.execute(load("reject"), {"id": campaign.id, "by": actor.id, "reason": reason, "now": now})
    _move(db, campaign, actor, "reject", "draft", now, reason=reason)
    return _campaign(db, campaign.id, None, snap)


def change(
    session: Session,
    campaign_id: uuid.UUID,
    *,
    actor: Actor,
    programs: frozenset[str] | None,
    fields: dict[str, Any],
    now: datetime | None = None,
) -> Campaign:
    """A change of the name, cap, start or rate. After submission it sends the campaign back to draft
    (an approval's reservation goes back to the budget): what was approved is what runs."""
    now = now or datetime.now(UTC)
    snap = get_snapshot(session)
    db = _db(session)
    campaign = _campaign(db, campaign_id, programs, snap, lock=True)
    if campaign.status not in ("draft", "submitted", "approved"):
        raise errors.WrongState(f"campaign {campaign.id} is {campaign.status}: it can no longer change")
    if campaign.status == "approved":
        _release(db, snap, campaign, campaign.reserved_minor)
    db.execute(
        load("change"),
        {
            "id": campaign.id,
            "name": fields.get("name", campaign.name),
            "cap": fields.get("budget_cap_minor", campaign.budget_cap_minor),
            "starts_at": fields.get("starts_at", campaign.starts_at),
            "rate": fields.get("rate_per_second", campaign.rate_per_second),
            "now": now,
        },
    )
    _move(db, campaign, actor, "change", "draft", now, **{k: v for k, v in fields.items()})
    changed = _campaign(db, campaign.id, None, snap)
    if campaign.budget_cap_minor != changed.budget_cap_minor and changed.validated_at is not None:
        # the cap is part of the validation: say again what it finds
        db.execute(load("clear_campaign_problems"), {"campaign": campaign.id})
        found = _validate_again(db, snap, changed, now)
        db.execute(load("set_problem_count"), {"id": campaign.id, "count": found})
        changed = _campaign(db, campaign.id, None, snap)
    return changed


def _validate_again(db: Connection[Any], snap: CatalogSnapshot, campaign: Campaign, now: datetime) -> int:
    line_problems: int = one(
        db.cursor(row_factory=scalar_row)
        .execute(load("line_problem_count"), {"campaign": campaign.id})
        .fetchone()
    )
    db.execute(load("clear_line_checks"), {"campaign": campaign.id})
    return line_problems + _validate(db, snap, campaign, snap.programs_by_id[campaign.program_id], now)


def pause(
    session: Session,
    campaign_id: uuid.UUID,
    *,
    actor: Actor,
    programs: frozenset[str] | None,
    now: datetime | None = None,
) -> Campaign:
    return _switch(session, campaign_id, actor, programs, ("approved", "running"), "paused", "pause", now)


def resume(
    session: Session,
    campaign_id: uuid.UUID,
    *,
    actor: Actor,
    programs: frozenset[str] | None,
    now: datetime | None = None,
) -> Campaign:
    resumed = _switch(session, campaign_id, actor, programs, ("paused",), "running", "resume", now)
    send_runners(_db(session), campaign_id, now=now or datetime.now(UTC))
    return resumed


def cancel(
    session: Session,
    campaign_id: uuid.UUID,
    *,
    actor: Actor,
    programs: frozenset[str] | None,
    now: datetime | None = None,
) -> Campaign:
    """Stops the lines that have not run; the ones that ran stay (cancel those redemptions one by one
    if needed). The value they did not use goes back to the budget."""
    now = now or datetime.now(UTC)
    snap = get_snapshot(session)
    db = _db(session)
    campaign = _campaign(db, campaign_id, programs, snap, lock=True)
    if campaign.status in ("done", "cancelled"):
        raise errors.WrongState(f"campaign {campaign.id} is {campaign.status}")
    stopped = db.execute(load("cancel_lines"), {"campaign": campaign.id, "now": now}).rowcount
    _finish(db, snap, campaign, "cancelled", now)
    _move(db, campaign, actor, "cancel", "cancelled", now, lines_stopped=stopped)
    return _campaign(db, campaign.id, None, snap)


def _switch(
    session: Session,
    campaign_id: uuid.UUID,
    actor: Actor,
    programs: frozenset[str] | None,
    allowed: tuple[str, ...],
    to: str,
    action: str,
    now: datetime | None,
) -> Campaign:
    now = now or datetime.now(UTC)
    snap = get_snapshot(session)
    db = _db(session)
    campaign = _campaign(db, campaign_id, programs, snap, lock=True)
    if campaign.status not in allowed:
        raise errors.WrongState(f"campaign {campaign.id} is {campaign.status}: it cannot {action}")
    db.execute(load("set_status"), {"id": campaign.id, "status": to, "now": now})
    _move(db, campaign, actor, action, to, now)
    return _campaign(db, campaign.id, None, snap)


def _release(db: Connection[Any], snap: CatalogSnapshot, campaign: Campaign, amount: int) -> None:
    program = snap.programs_by_id[campaign.program_id]
    if amount > 0 and program.monthly_budget_minor is not None and campaign.budget_month is not None:
        db.execute(
            redemptions.RELEASE_BUDGET,
            {"program": program.id, "month": campaign.budget_month, "amount": amount},
        )


def _finish(
    db: Connection[Any], snap: CatalogSnapshot, campaign: Campaign, status: str, now: datetime
) -> None:
    """Done or cancelled: the reservation the lines did not use goes back, and what stays reserved is
    what the lines used."""
    kept = campaign.reserved_minor
    if campaign.status in ("approved", "running", "paused"):
        # sum() always returns its row: None here is a campaign with no line done (not one()).
        used = (
            db.cursor(row_factory=scalar_row)
            .execute(load("used_value"), {"campaign": campaign.id})
            .fetchone()
        )
        kept = int(used or 0)
        _release(db, snap, campaign, campaign.reserved_minor - kept)
    db.execute(load("finish"), {"id": campaign.id, "status": status, "now": now, "kept": kept})
    if status == "done":
        program = snap.programs_by_id[campaign.program_id]
        counts = _counts(db, campaign.id)
        webhooks.emit(
            db,
            program_id=program.id,
            webhook_url=program.webhook_url,
            redemption_id=None,
            event="campaign.completed",
            data={
                "campaign_id": str(campaign.id),
                "name": campaign.name,
                "done": counts.done,
                "failed": counts.failed,
                "spent": Money.of(counts.spent_minor, campaign.currency).model_dump(mode="json"),
            },
            now=now,
        )


# --- running --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    ran: int  # lines that became redemptions (or failed) in this step
    again_in_ms: int | None  # None: the campaign does not run on (done, paused, cancelled)


@dataclass(frozen=True)
class _Pending:
    line_no: int
    ref: str
    msisdn: str
    offer_code: str
    opted_out: bool


def send_runners(db: Connection[Any], campaign_id: uuid.UUID, *, now: datetime) -> None:
    """The campaign's runner chains (settings.campaign_runners), through the outbox in the caller's
    transaction: each is a run_campaign message that sends itself on after its step."""
    for _ in range(get_settings().campaign_runners):
        outbox.enqueue(db, jobs.RUN_CAMPAIGN, {"campaign_id": str(campaign_id)}, now=now)


def run_step(campaign_id: uuid.UUID, *, now: datetime | None = None, budget_s: float = 1.0) -> Step:
    """About a second of the campaign's work: CHUNK lines per transaction, each line an ordinary
    redemption written in the same transaction as the line's result, paced to the campaign's rate
    (shared by every worker: pace.sql). Any number of workers may run steps of one campaign at once:
    lines are taken with SKIP LOCKED, so none runs twice. `now` pins the clock (tests)."""
    started = time.monotonic()
    with transaction() as session:
        snap = get_snapshot(session)
        db = _db(session)
        campaign = _campaign(db, campaign_id, None, snap)
        at = now or datetime.now(UTC)
        if campaign.status == "approved":
            if campaign.starts_at is not None and campaign.starts_at > at:
                db.execute(load("touch"), {"id": campaign.id, "now": at})
                return Step(0, min(20_000, int((campaign.starts_at - at).total_seconds() * 1000) + 1))
            if db.execute(load("start"), {"id": campaign.id, "now": at}).rowcount:
                # The lines came in by COPY, and autovacuum analyzes the table only a minute or so
                # later: until then take_lines' plan read campaign_lines whole for every chunk of
                # 20 lines (a 1,000,000-line campaign ran at 10 lines/s for its first minute).
                db.execute("ANALYZE campaign_lines")
        elif campaign.status != "running":
            return Step(0, None)
    ran = 0
    while time.monotonic() - started < budget_s:
        size, wait_s = _pace(campaign, now)
        if not size:
            if time.monotonic() - started + wait_s >= budget_s:
                return Step(ran, max(1, int(wait_s * 1000)))
            time.sleep(wait_s)
            continue
        chunk_started = time.monotonic()
        taken = _run_chunk(campaign, size, now)
        if taken is None:  # paused or cancelled meanwhile
            return Step(ran, None)
        if taken < size:
            with transaction() as session:
                if _finish_if_drained(
                    _db(session), get_snapshot(session), campaign_id, now or datetime.now(UTC)
                ):
                    return Step(ran + taken, None)
            if taken == 0:
                return Step(ran, 1000)  # lines another worker holds: look again
        ran += taken
        rest_s = rest_after(time.monotonic() - chunk_started, get_settings().campaign_runner_share)
        if time.monotonic() - started + rest_s >= budget_s:
            return Step(ran, round(rest_s * 1000))
        time.sleep(rest_s)
    return Step(ran, 0)


def rest_after(chunk_s: float, share: float) -> float:
    """How long a runner chain rests after a chunk that took `chunk_s`, so that it runs lines for
    `share` of its time (settings.campaign_runner_share): the cores it leaves are the on-demand
    redemptions' and autovacuum's."""
    return chunk_s * (1 - share) / share


def _pace(campaign: Campaign, now: datetime | None) -> tuple[int, float]:
    """(lines granted now, or 0 and the seconds to wait for some)."""
    if campaign.rate_per_second is None:
        return CHUNK, 0.0
    size = min(CHUNK, campaign.rate_per_second)
    with transaction() as session:
        db = _db(session)
        at = now or datetime.now(UTC)
        params = {"id": campaign.id, "lines": size, "now": at}
        if db.execute(load("pace"), params).fetchone() is not None:
            return size, 0.0
        wait = db.cursor(row_factory=scalar_row).execute(load("pace_wait"), params).fetchone()
        return 0, float(wait) if wait is not None else 1.0


def _run_chunk(campaign: Campaign, size: int, now: datetime | None) -> int | None:
    """Up to `size` pending lines as redemptions, in one transaction; None when the campaign no
    longer runs."""
    with transaction() as session:
        snap = get_snapshot(session)
        db = _db(session)
        status = (
            db.cursor(row_factory=scalar_row).execute(load("status_for_run"), {"id": campaign.id}).fetchone()
        )
        if status != "running":
            return None
        pending = (
            db.cursor(row_factory=class_row(_Pending))
            .execute(load("take_lines"), {"campaign": campaign.id, "limit": size})
            .fetchall()
        )
        program = snap.programs_by_id[campaign.program_id]
        tariff = snap.tariffs_by_id[campaign.tariff_id].code
        # Each line runs inside the savepoint `line`. The savepoint of the next line is set in the same
        # round trip as this line's result (_settle): a line costs two round trips, not four.
        if pending:
            db.execute("SAVEPOINT line")
        for n, line in enumerate(pending, start=1):
            more = n < len(pending)
            at = now or datetime.now(UTC)
            request = RedemptionIn.model_construct(
                program=program.code,
                tariff=tariff,
                offer=line.offer_code,
                msisdn=line.msisdn,
                points=0,
                external_id=f"campaign:{campaign.id}:{line.ref}",
                locale=campaign.locale,  # type: ignore[arg-type]  # a CampaignIn locale
            )
            try:
                made = redemptions.redeem(
                    session,
                    request,
                    scope=redemptions.Scope(None),
                    api_key_id=campaign.api_key_id,
                    now=at,
                    campaign_id=campaign.id,
                    silent=line.opted_out,
                )
            except DuplicateExternalId:
                # This line ran before (its result was not recorded): the redemption it made stands.
                _settle(
                    db,
                    "ROLLBACK TO SAVEPOINT line",
                    load("line_done_earlier"),
                    {
                        "campaign": campaign.id,
                        "line": line.line_no,
                        "external_id": request.external_id,
                        "program": program.id,
                        "now": at,
                    },
                    more=more,
                )
                continue
            except (OutOfStock, LimitExceeded, OfferInactive, TariffNotEligible, UnknownOffer) as refused:
                _settle(
                    db,
                    "ROLLBACK TO SAVEPOINT line",
                    load("line_failed"),
                    {"campaign": campaign.id, "line": line.line_no, "code": refused.code, "now": at},
                    more=more,
                )
                continue
            _settle(
                db,
                "RELEASE SAVEPOINT line",
                load("line_done"),
                {"campaign": campaign.id, "line": line.line_no, "redemption": made.id, "now": at},
                more=more,
            )
            checkpoint("campaign.after_line")  # tests cut the chunk here: its lines run again, once
        db.execute(load("touch"), {"id": campaign.id, "now": now or datetime.now(UTC)})
        return len(pending)


def _settle(db: Connection[Any], savepoint: str, result: str, params: dict[str, Any], *, more: bool) -> None:
    """A line's end in one round trip: its savepoint released (or rolled back to), its result, and the
    next line's savepoint when there is one."""
    with db.pipeline():
        db.execute(savepoint)
        db.execute(result, params)
        if more:
            db.execute("SAVEPOINT line")


def _finish_if_drained(
    db: Connection[Any], snap: CatalogSnapshot, campaign_id: uuid.UUID, now: datetime
) -> bool:
    campaign = _campaign(db, campaign_id, None, snap, lock=True)
    if campaign.status != "running":
        return True
    left: int = one(
        db.cursor(row_factory=scalar_row).execute(load("pending_count"), {"campaign": campaign_id}).fetchone()
    )
    if left:
        return False
    _finish(db, snap, campaign, "done", now)
    _move(db, campaign, Actor("runner", "runner", "system"), "complete", "done", now)
    return True


def stalled(db: Connection[Any], *, before: datetime) -> list[uuid.UUID]:
    """Running (or approved) campaigns whose runner has not stepped since `before`: a worker died
    between a step and sending the next one. Housekeeping sends them again."""
    return db.cursor(row_factory=scalar_row).execute(load("stalled"), {"before": before}).fetchall()


# --- reading --------------------------------------------------------------------------------------


def _counts(db: Connection[Any], campaign_id: uuid.UUID) -> LineCounts:
    row = (
        db.cursor(row_factory=class_row(LineCounts))
        .execute(load("line_counts"), {"campaign": campaign_id})
        .fetchone()
    )
    assert row is not None
    return row


def progress(session: Session, campaign_id: uuid.UUID, *, programs: frozenset[str] | None) -> Progress:
    snap = get_snapshot(session)
    db = _db(session)
    campaign = _campaign(db, campaign_id, programs, snap)
    counts = _counts(db, campaign.id)
    problems = (
        db.cursor(row_factory=class_row(Problem))
        .execute(load("problems"), {"campaign": campaign.id, "limit": REPORT_PREVIEW})
        .fetchall()
    )
    eta = None
    if campaign.status in ("approved", "running") and counts.pending:
        now = datetime.now(UTC)
        ran = counts.done + counts.failed
        if campaign.rate_per_second:
            seconds = counts.pending / campaign.rate_per_second
        elif campaign.started_at is not None and ran:  # uncapped: at the pace it has had so far
            seconds = counts.pending * (now - campaign.started_at).total_seconds() / ran
        else:
            seconds = counts.pending / UNCAPPED_STEP
        if campaign.starts_at is not None and campaign.starts_at > now:
            seconds += (campaign.starts_at - now).total_seconds()
        eta = int(seconds + 0.999)
    offer = next(o for o in snap.offers.values() if o.id == campaign.offer_id)
    return Progress(
        campaign,
        snap.programs_by_id[campaign.program_id],
        offer.code,
        snap.tariffs_by_id[campaign.tariff_id].code,
        counts,
        eta,
        problems,
    )


def list_campaigns(
    session: Session,
    *,
    programs: frozenset[str] | None,
    limit: int = 100,
    before: uuid.UUID | None = None,
    status: str | None = None,
) -> list[Campaign]:
    """Newest first (ids are time-ordered), from `before` on (exclusive), in the given programs."""
    snap = get_snapshot(session)
    ids = None if programs is None else [p.id for c, p in snap.programs.items() if c in programs]
    return list(
        _db(session)
        .cursor(row_factory=_CAMPAIGN)
        .execute(load("list"), {"programs": ids, "limit": limit, "before": before, "status": status})
        .fetchall()
    )


def problems(db: Connection[Any], campaign_id: uuid.UUID) -> Iterator[Problem]:
    """The whole validation report, in line order (campaign-wide problems first), streamed."""
    with db.cursor(name=f"report-{campaign_id.hex}", row_factory=class_row(Problem)) as cur:
        cur.itersize = 5000
        cur.execute(load("problems_all"), {"campaign": campaign_id})
        yield from cur


def results(db: Connection[Any], campaign_id: uuid.UUID) -> Iterator[ResultLine]:
    """Every line with what became of it, in file order, streamed (a server-side cursor)."""
    with db.cursor(name=f"results-{campaign_id.hex}", row_factory=class_row(ResultLine)) as cur:
        cur.itersize = 5000
        cur.execute(load("results"), {"campaign": campaign_id})
        yield from cur


# --- opt-outs -------------------------------------------------------------------------------------


def opt_out(
    session: Session, program: str, msisdns: list[str], *, programs: frozenset[str] | None = None
) -> int:
    snap = get_snapshot(session)
    info = _program(snap, program, programs)
    return _db(session).execute(load("opt_out"), {"program": info.id, "msisdns": msisdns}).rowcount


def opt_in(
    session: Session, program: str, msisdns: list[str], *, programs: frozenset[str] | None = None
) -> int:
    snap = get_snapshot(session)
    info = _program(snap, program, programs)
    return _db(session).execute(load("opt_in"), {"program": info.id, "msisdns": msisdns}).rowcount


def opted_out(session: Session, program: str, *, programs: frozenset[str] | None = None) -> list[str]:
    snap = get_snapshot(session)
    info = _program(snap, program, programs)
    return (
        _db(session)
        .cursor(row_factory=scalar_row)
        .execute(load("opted_out"), {"program": info.id})
        .fetchall()
    )


# --- the bulk channel -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _QuietHours:
    quiet_hours: str | None
    timezone: str


def bulk_sms_not_before(db: Connection[Any], redemption_id: uuid.UUID, now: datetime) -> datetime:
    """When a campaign line's SMS may go: now, or when its program's quiet hours end (the program's
    zone by name, so the wall clock of Asia/Almaty is today's, whatever offset it had before)."""
    row = (
        db.cursor(row_factory=class_row(_QuietHours))
        .execute(load("program_quiet_hours"), {"id": redemption_id})
        .fetchone()
    )
    window = quiet_hours(row.quiet_hours) if row else None
    return window.next_allowed(now, zone(row.timezone)) if row and window else now
