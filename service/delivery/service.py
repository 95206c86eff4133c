"""Delivering a redemption's SMS: claim the message row, render, hand it to the provider outside any
transaction, record the outcome; and receipts. Status moves accepted -> sent -> delivered, or to
failed (permanent error, or still undelivered at the deadline) with the reason."""

from __future__ import annotations

import random
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

import sqlalchemy.exc
import structlog
from psycopg import Connection, OperationalError
from psycopg.rows import class_row

from service.catalog.snapshot import get_snapshot
from service.delivery.notices import apply_notice_receipts
from service.delivery.providers import (
    InDoubtSmsError,
    OutgoingSms,
    Pace,
    PermanentSmsError,
    Provider,
    Receipt,
    SandboxProvider,
    SmsError,
    TransientSmsError,
    UnavailableSmsError,
    build_provider,
    has_bulk_account,
)
from service.delivery.text import format_amount, render
from service.events import webhooks
from service.kit.config import RetryClass, SmsRetry, get_settings
from service.kit.db.engine import batch, driver, transaction
from service.kit.observability.metrics import SMS_OUTCOMES
from service.kit.reliability.faults import checkpoint
from service.kit.security.crypto import get_vault
from service.kit.security.links import link_of
from service.sandbox.service import SMS_DELAYED_RECEIPT, sandbox_code

log = structlog.get_logger("delivery")
DELIVERED_STATES = {"DELIVRD"}
FAILED_STATES = {"EXPIRED", "DELETED", "UNDELIV", "REJECTD"}


class ReceiptTooEarly(Exception):
    """A receipt overtook the commit of its own submit: the provider must offer it again shortly."""


# An attempt younger than this is still being recorded, not in doubt: its receipt waits for it.
SUBMIT_GRACE = timedelta(seconds=5)


class RetryLater(Exception):
    def __init__(self, reason: str, delay_ms: int):
        super().__init__(reason)
        self.delay_ms = delay_ms


@dataclass(frozen=True)
class Claimed:
    message_id: int
    job: Job
    sms: OutgoingSms
    locale: str  # the template's locale the text was rendered in
    sandbox: bool = False  # a sandbox key's redemption: to the sandbox provider only
    failures: dict[str, int] | None = None  # errors so far per class


def text_digest(vault: Any, text: str) -> str:
    """Which text the parts taken so far belong to: a keyed HMAC (the text holds the code)."""
    return vault.fingerprint(text).hex()[:32]


def _settings():
    s = get_settings()
    return timedelta(hours=s.sms_deadline_hours), timedelta(seconds=s.sms_in_doubt_seconds)


@dataclass(frozen=True)
class Job:
    """One send of a redemption's SMS: send 0 is the first, 1..3 are resends."""

    redemption_id: uuid.UUID
    send: int


class SendResult(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    NOTHING_TO_DO = "nothing to do"  # settled already, cancelled, or no such redemption
    RETRY = "retry"


@dataclass(frozen=True)
class SendOutcome:
    result: SendResult
    reason: str = ""
    # For RETRY: in how many milliseconds; None: the caller's backoff (the provider did not take it).
    retry_ms: int | None = None


NOTHING_TO_DO = SendOutcome(SendResult.NOTHING_TO_DO)
SETTLED = ("sent", "delivered", "failed", "cancelled")


@dataclass(frozen=True)
class _Locked:
    """A send of the batch, its message locked (_lock_messages), with its redemption."""

    message_id: int
    send: int
    status: str
    deadline_at: datetime
    submit_started_at: datetime | None
    last_error: str | None
    part_ids: list[str | None] | None
    udh_reference: int | None
    text_digest: str | None
    failures: dict[str, Any]
    redemption_id: uuid.UUID
    redemption_status: str
    program_id: int
    offer_id: int
    product_id: int
    msisdn: str
    locale: str
    nominal_minor: int
    currency: str
    reward_expires_at: datetime | None
    code_id: int | None
    card_id: int | None
    sandbox: bool
    has_link: bool


def _fields(
    row: _Locked, snap, secrets: dict[tuple[str, int], tuple[str, str]]
) -> tuple[str, dict[str, str]]:
    program = snap.programs_by_id[row.program_id]
    product = snap.products[row.product_id]
    locale = row.locale
    fields = {
        "program": program.name,
        "offer": snap.offers_by_id[row.offer_id].name,
        "brand": product.brand or "",
        "partner": product.partner_code or "",
        "nominal": format_amount(row.nominal_minor, row.currency, locale),
        "code": "",
        "pin": "",
        "card_number": "",
        # The reward page (PUBLIC_URL/r/<token>); empty without PUBLIC_URL or for a reward issued before it.
        "link": (link_of(get_vault(), row.redemption_id) or "") if row.has_link else "",
    }
    if row.code_id is not None:
        fields["code"], fields["pin"] = secrets["code", row.code_id]
        return "code", fields
    if row.card_id is None:  # a sandbox test code, from no pool
        fields["code"] = sandbox_code(row.redemption_id)
        return "code", fields
    fields["card_number"], fields["pin"] = secrets["card", row.card_id]
    return "universal_card", fields


def _secrets(db: Connection[Any], rows: list[_Locked]) -> dict[tuple[str, int], tuple[str, str]]:
    """The codes and cards of a batch, decrypted: two queries whatever the batch size."""
    vault = get_vault()
    found: dict[tuple[str, int], tuple[str, str]] = {}
    code_ids = [r.code_id for r in rows if r.code_id is not None]
    card_ids = [r.card_id for r in rows if r.code_id is None and r.card_id is not None]
    if code_ids:
        for id_, code_enc, pin_enc, key_id in db.execute(
            "SELECT id, code_enc, pin_enc, key_id FROM codes WHERE id = ANY(%(ids)s)", {"ids": code_ids}
        ):
            found["code", id_] = (
                vault.decrypt(bytes(code_enc), b"code", key_id),
                vault.decrypt(bytes(pin_enc), b"pin", key_id) if pin_enc else "",
            )
    if card_ids:
        for id_, number_enc, pin_enc, key_id in db.execute(
            "SELECT id, number_enc, pin_enc, key_id FROM cards WHERE id = ANY(%(ids)s)", {"ids": card_ids}
        ):
            found["card", id_] = (
                vault.decrypt(bytes(number_enc), b"card-number", key_id),
                vault.decrypt(bytes(pin_enc), b"card-pin", key_id),
            )
    return found


@dataclass(frozen=True)
class _Failed:
    external_id: str
    program_id: int
    sandbox: bool


def _fail(
    db: Connection[Any],
    *,
    message_id: int,
    redemption_id: uuid.UUID,
    reason: str,
    now: datetime,
    snap,
    error_code: str | None = None,
) -> None:
    db.execute(
        "UPDATE sms_messages SET status = 'failed', last_error = %(reason)s, done_at = %(now)s,"
        " updated_at = %(now)s, error_code = coalesce(%(error_code)s, error_code) WHERE id = %(id)s",
        {"reason": reason, "now": now, "error_code": error_code, "id": message_id},
    )
    changed = (
        db.cursor(row_factory=class_row(_Failed))
        .execute(
            "UPDATE redemptions SET status = 'failed', status_reason = %(reason)s, updated_at = %(now)s"
            " WHERE id = %(id)s AND status IN ('accepted', 'sent')"
            " RETURNING external_id, program_id, sandbox",
            {"reason": reason, "now": now, "id": redemption_id},
        )
        .fetchone()
    )
    if changed:
        program = snap.programs_by_id[changed.program_id]
        webhooks.emit(
            db,
            program_id=program.id,
            webhook_url=program.webhook_url,
            redemption_id=redemption_id,
            event="failed",
            now=now,
            data={
                "redemption_id": str(redemption_id),
                "external_id": changed.external_id,
                "status": "failed",
                "status_reason": reason,
                "sandbox": changed.sandbox,
            },
        )
    if not (changed and changed.sandbox):  # the sandbox's failures are on purpose: no alert counts them
        SMS_OUTCOMES.labels("failed").inc()


def _mark_sent(
    db: Connection[Any], sent: list[tuple[int, uuid.UUID, list[str]]], *, provider: str, now: datetime, snap
) -> None:
    """Records messages the provider took: (message id, redemption id, provider ids) each. A handful of
    statements whatever the batch size."""
    if not sent:
        return
    # One statement per table for the whole batch, not one per message. (A trigger copies the parts'
    # provider ids into sms_provider_messages, where receipts look them up.)
    db.execute(
        "UPDATE sms_messages m SET status = 'sent', provider = %(provider)s, provider_message_ids = u.ids,"
        " part_ids = NULL, sent_at = %(now)s, updated_at = %(now)s, last_error = NULL, error_code = NULL"
        " FROM jsonb_to_recordset(%(batch)s::jsonb) AS u(id bigint, ids varchar[])"
        " WHERE m.id = u.id AND m.id = ANY(%(ids)s) AND m.status = 'submitting'",
        {
            "provider": provider,
            "now": now,
            "batch": batch([{"id": message_id, "ids": ids} for message_id, _, ids in sent]),
            "ids": [message_id for message_id, _, _ in sent],
        },
    )
    changed = db.execute(
        "UPDATE redemptions SET status = 'sent', status_reason = NULL,"
        " first_sent_at = coalesce(first_sent_at, %(now)s), updated_at = %(now)s"
        " WHERE id = ANY(%(ids)s) AND status IN ('accepted', 'failed')"
        " RETURNING id, external_id, program_id, sandbox, code_id",
        {"now": now, "ids": [r for _, r, _ in sent]},
    ).fetchall()
    issued = [code_id for *_, code_id in changed if code_id is not None]
    if issued:  # the codes have left us: they are issued now
        db.execute(
            "UPDATE codes SET status = 'issued', status_changed_at = %(now)s WHERE id = ANY(%(ids)s)"
            " AND status = 'reserved'",
            {"now": now, "ids": issued},
        )
    _emit_status(db, changed, "sent", now, snap)
    if provider != SandboxProvider.name:
        SMS_OUTCOMES.labels("sent").inc(len(sent))


def _emit_status(db: Connection[Any], changed: list[Any], status: str, now: datetime, snap) -> None:
    events = []
    for redemption_id, external_id, program_id, sandbox, *_ in changed:
        program = snap.programs_by_id[program_id]
        events.append(
            webhooks.Event(
                program_id=program.id,
                webhook_url=program.webhook_url,
                redemption_id=redemption_id,
                event=status,
                data={
                    "redemption_id": str(redemption_id),
                    "external_id": external_id,
                    "status": status,
                    "sandbox": sandbox,
                },
            )
        )
    webhooks.emit_many(db, events, now=now)


def _delivered(
    db: Connection[Any], done: list[tuple[int, uuid.UUID]], *, provider: str, now: datetime, snap
) -> None:
    """The redemptions of messages whose every part is delivered (the messages are marked by the caller)."""
    if not done:
        return
    changed = db.execute(
        "UPDATE redemptions SET status = 'delivered', status_reason = NULL, updated_at = %(now)s"
        " WHERE id = ANY(%(ids)s) AND status IN ('sent', 'accepted', 'failed')"
        " RETURNING id, external_id, program_id, sandbox",
        {"now": now, "ids": sorted(r for _, r in done)},
    ).fetchall()
    _emit_status(db, changed, "delivered", now, snap)
    if provider != SandboxProvider.name:
        SMS_OUTCOMES.labels("delivered").inc(len(done))


def claim(jobs: list[Job], now: datetime) -> tuple[list[Claimed], dict[Job, SendOutcome]]:
    """Phase 1, one transaction for the batch: decide which sends may go out now, render them and
    mark them `submitting`. Returns what to submit, and the outcome of every other job."""
    jobs = list(dict.fromkeys(jobs))
    outcomes: dict[Job, SendOutcome] = {job: NOTHING_TO_DO for job in jobs}  # e.g. no such redemption
    # The batch as records, and its keys as an array: the planner cannot tell how many records a
    # JSON document holds, and without `= ANY(keys)` it may scan a whole table to join them.
    wanted = batch([{"rid": j.redemption_id, "send": j.send} for j in jobs])
    rids = [j.redemption_id for j in jobs]
    with transaction() as session:
        db = driver(session)
        snap = get_snapshot(session)
        _create_messages(db, wanted, rids, now)
        rows = _lock_messages(db, wanted, rids)
        ready = _triage(db, rows, outcomes, now, snap)
        claimed = _render(db, ready, snap)
        if claimed:  # the rows are locked above, in id order
            _mark_submitting(db, claimed, now)
    return claimed, outcomes


def _create_messages(db: Connection[Any], wanted: str, rids: list[uuid.UUID], now: datetime) -> None:
    """The sms_messages row of every send that has none yet. The deadline is the program's (or the
    default), counted from the redemption for the first send, which is when the subscriber started
    waiting, and from now for a resend."""
    deadline = _settings()[0]
    db.execute(
        "INSERT INTO sms_messages (redemption_id, send, msisdn, locale, deadline_at, created_at,"
        " updated_at) SELECT r.id, j.send, r.msisdn, r.locale,"
        " CASE WHEN j.send = 0 THEN r.created_at ELSE %(now)s END"
        " + make_interval(secs => coalesce(p.sms_deadline_hours * 3600, %(deadline)s)), %(now)s, %(now)s"
        " FROM jsonb_to_recordset(%(wanted)s::jsonb) AS j(rid uuid, send int)"
        " JOIN redemptions r ON r.id = j.rid JOIN programs p ON p.id = r.program_id"
        " WHERE r.id = ANY(%(rids)s) ORDER BY r.id, j.send ON CONFLICT (redemption_id, send) DO NOTHING",
        {"now": now, "deadline": deadline.total_seconds(), "wanted": wanted, "rids": rids},
    )


def _lock_messages(db: Connection[Any], wanted: str, rids: list[uuid.UUID]) -> list[_Locked]:
    cursor = db.cursor(row_factory=class_row(_Locked))
    return cursor.execute(
        "SELECT m.id AS message_id, m.send, m.status, m.deadline_at, m.submit_started_at, m.last_error,"
        " m.part_ids, m.udh_reference, m.text_digest, m.failures,"
        " r.id AS redemption_id, r.status AS redemption_status, r.program_id, r.offer_id, r.product_id,"
        " r.msisdn, r.locale, r.nominal_minor, r.currency, r.reward_expires_at, r.code_id, r.card_id,"
        " r.sandbox, r.link_hash IS NOT NULL AS has_link"
        " FROM jsonb_to_recordset(%(wanted)s::jsonb) AS j(rid uuid, send int)"
        " JOIN sms_messages m ON m.redemption_id = j.rid AND m.send = j.send"
        " JOIN redemptions r ON r.id = m.redemption_id"
        " WHERE m.redemption_id = ANY(%(rids)s) AND r.id = ANY(%(rids)s)"
        " ORDER BY m.id FOR UPDATE OF m",
        {"wanted": wanted, "rids": rids},
    ).fetchall()


def _triage(
    db: Connection[Any], rows: list[_Locked], outcomes: dict[Job, SendOutcome], now: datetime, snap
) -> list[Any]:
    """The sends that may go out now. Settled ones are skipped, cancelled ones closed, an in-doubt
    one waits out its window, one past its deadline fails; their outcomes go into `outcomes`."""
    in_doubt_window = _settings()[1]
    ready: list[_Locked] = []
    cancelled: list[dict[str, Any]] = []
    for row in rows:
        job = Job(row.redemption_id, row.send)
        if row.status in SETTLED:
            continue  # a duplicate job: this send is settled
        if row.redemption_status == "cancelled":
            cancelled.append({"now": now, "id": row.message_id})
            continue
        if row.status == "submitting":
            assert row.submit_started_at is not None  # _mark_submitting sets both at once
            waited = now - row.submit_started_at
            if waited < in_doubt_window:
                remaining = int((in_doubt_window - waited).total_seconds() * 1000)
                outcomes[job] = SendOutcome(
                    SendResult.RETRY, "a previous attempt may have reached the provider", max(1000, remaining)
                )
                continue
            log.warning("sms_in_doubt_expired", redemption_id=str(row.redemption_id), send=row.send)
        if now >= row.deadline_at:
            _fail(
                db,
                message_id=row.message_id,
                redemption_id=row.redemption_id,
                now=now,
                snap=snap,
                reason=f"undelivered by the deadline: {row.last_error or 'no provider took it'}",
            )
            outcomes[job] = SendOutcome(SendResult.FAILED)
            continue
        ready.append(row)
    if cancelled:
        db.cursor().executemany(
            "UPDATE sms_messages SET status = 'cancelled', updated_at = %(now)s WHERE id = %(id)s", cancelled
        )
    return ready


def _render(db: Connection[Any], ready: list[_Locked], snap) -> list[Claimed]:
    """The SMS of each send, from its program's template in the subscriber's locale. A long SMS keeps
    its UDH reference and the parts earlier attempts got taken, as long as its text is the same (a
    template changed in between starts it afresh, under another reference)."""
    secrets = _secrets(db, ready)
    vault = get_vault()
    claimed = []
    for row in ready:
        program = snap.programs_by_id[row.program_id]
        kind, fields = _fields(row, snap, secrets)
        expires = (
            row.reward_expires_at.astimezone(program.zone).strftime("%d.%m.%Y")
            if row.reward_expires_at
            else None
        )
        rendered = render(program.templates, kind, row.locale, fields, expires=expires)
        part_ids: tuple[str | None, ...] = ()
        reference = row.message_id % 256 if row.udh_reference is None else row.udh_reference
        if row.part_ids and any(row.part_ids):
            if (
                row.text_digest == text_digest(vault, rendered.text)
                and len(row.part_ids) == rendered.segments
            ):
                part_ids = tuple(row.part_ids)
            else:
                reference = (reference + 1) % 256
                log.warning("sms_text_changed_between_attempts", redemption_id=str(row.redemption_id))
        claimed.append(
            Claimed(
                row.message_id,
                Job(row.redemption_id, row.send),
                OutgoingSms(
                    reference=f"{row.redemption_id}:{row.send}",
                    to=row.msisdn,
                    sender=program.sms_sender,
                    text=rendered.text,
                    encoding=rendered.encoding,
                    segments=rendered.segments,
                    udh_reference=reference,
                    part_ids=part_ids,
                    sender_ton=program.sms_sender_ton,
                    sender_npi=program.sms_sender_npi,
                ),
                rendered.locale,
                row.sandbox,
                dict(row.failures or {}),
            )
        )
    return claimed


def _mark_submitting(db: Connection[Any], claimed: list[Claimed], now: datetime) -> None:
    """An attempt starts: `submitting` until its outcome is recorded. Receipts already seen stay for
    the parts still known (taken by earlier attempts of this text); others are dropped. (The parts'
    state is written only when an attempt ends with some parts taken and others not: `_record`.)"""
    submitting = [
        {
            "id": c.message_id,
            "encoding": c.sms.encoding,
            "segments": c.sms.segments,
            "locale": c.locale,
            "parts": [i for i in c.sms.part_ids if i] or None,
        }
        for c in claimed
    ]
    db.execute(
        "UPDATE sms_messages m SET status = 'submitting', attempts = m.attempts + 1,"
        " submit_started_at = %(now)s, encoding = u.encoding, segments = u.segments, locale = u.locale,"
        " updated_at = %(now)s, receipts = CASE WHEN u.parts IS NULL THEN '{}' ELSE coalesce("
        "   (SELECT jsonb_object_agg(k, v) FROM jsonb_each(m.receipts) AS e(k, v) WHERE k = ANY(u.parts)),"
        "   '{}') END"
        " FROM jsonb_to_recordset(%(batch)s::jsonb) AS u(id bigint, encoding varchar, segments int,"
        "   locale varchar, parts varchar[])"
        " WHERE m.id = u.id AND m.id = ANY(%(ids)s)",
        {"now": now, "batch": batch(submitting), "ids": [c.message_id for c in claimed]},
    )


def deliver_many(
    jobs: list[Job],
    *,
    provider: Provider | None = None,
    now: datetime | None = None,
    pace: Pace | None = None,
) -> dict[Job, SendOutcome]:
    """Claims a batch, hands it to the provider outside any transaction, records every outcome in one
    more transaction. Safe to run again for the same jobs: settled sends are skipped, and a send whose
    outcome was never recorded is in doubt, never resent blindly. `pace` is the provider's rate
    limit, asked for the parts each SMS still costs (operators throttle submit_sm PDUs, not SMS)."""
    now = now or datetime.now(UTC)
    claimed, outcomes = claim(jobs, now)
    real = [c for c in claimed if not c.sandbox]
    if real:
        _paced(real, provider or get_provider(), outcomes, now, pace)
    if sandboxed := [c for c in claimed if c.sandbox]:
        _submit(sandboxed, get_sandbox_provider(), outcomes, now)
        settle_sandbox_receipts(now=datetime.now(UTC), messages=[c.message_id for c in sandboxed])
    return outcomes


PACE_PATIENCE = 5.0  # seconds a claimed batch waits for the rate limit before the rest is handed back


def _paced(
    claimed: list[Claimed],
    provider: Provider,
    outcomes: dict[Job, SendOutcome],
    now: datetime,
    pace: Pace | None,
) -> None:
    """Submits the batch as the rate limit grants PDUs: each SMS goes once its parts are granted.

    A grant belongs to one second of the limiter's clock, so what is left of it after the SMS it
    covers is dropped, never spent later: added to the next second's grant, it would put more
    PDUs than the limit in that second at the SMSC. Each ask wants at least the next SMS's parts, so
    a grant too small for it is not taken at all; only an SMS with more parts than a second's whole
    budget gathers its parts over several seconds."""
    if pace is None:
        _submit(claimed, provider, outcomes, now)
        return
    waiting, credit = list(claimed), 0
    deadline = time.monotonic() + PACE_PATIENCE
    while waiting:
        wanted = sum(c.sms.parts_to_send for c in waiting)
        credit += pace(max(0, wanted - credit), max(1, waiting[0].sms.parts_to_send - credit))
        go = []
        while waiting and waiting[0].sms.parts_to_send <= credit:
            credit -= waiting[0].sms.parts_to_send
            go.append(waiting.pop(0))
        if go:
            credit = 0  # the rest of this second's grant: never carried into a later second
            _submit(go, provider, outcomes, now)
        elif time.monotonic() > deadline:
            results: list[list[str] | SmsError] = [
                UnavailableSmsError("the provider's rate limit left no room") for _ in waiting
            ]
            _record_results(waiting, results, provider.name, outcomes, now)
            return


def _submit(
    claimed: list[Claimed], provider: Provider, outcomes: dict[Job, SendOutcome], now: datetime
) -> None:
    """Hands claimed messages to the provider outside any transaction and records every outcome."""
    checkpoint("deliver.before_submit")
    results = provider.submit_many([c.sms for c in claimed])
    checkpoint("deliver.after_submit")
    _record_results(claimed, results, provider.name, outcomes, now)


def retry_policy(provider: str) -> SmsRetry:
    settings = get_settings()
    return settings.sms_retry_http if provider == "http" else settings.sms_retry_smpp


def backoff_ms(policy: RetryClass, failures: int) -> int:
    """The delay before the next attempt after `failures` errors of a class: doubling from the first
    delay to the cap, with up to a fifth of jitter either way."""
    delay = min(policy.max_delay_seconds, policy.first_delay_seconds * 2 ** max(0, failures - 1))
    return int(delay * 1000 * random.uniform(0.8, 1.2))


@dataclass
class _Outcomes:
    """What a submitted batch comes to, for one transaction."""

    sent: list[tuple[int, uuid.UUID, list[str]]]
    retry: list[dict]  # back to pending: the parts taken so far, the error, its class's count
    in_doubt: list[dict]  # stay submitting: the parts taken so far, the error
    failed: list[tuple[Claimed, str, str | None, list[str | None]]]  # message, reason, code, parts taken


def _record_results(
    claimed: list[Claimed],
    results: list[list[str] | SmsError],
    provider: str,
    outcomes: dict[Job, SendOutcome],
    now: datetime,
) -> None:
    """Classifies each result by its error class and that class's policy, and records them all."""
    policy = retry_policy(provider)
    in_doubt_ms = int(_settings()[1].total_seconds() * 1000)
    done = _Outcomes([], [], [], [])
    for c, result in zip(claimed, results, strict=True):
        if not isinstance(result, SmsError):
            done.sent.append((c.message_id, c.job.redemption_id, result))
            outcomes[c.job] = SendOutcome(SendResult.SENT)
            continue
        parts = list(result.part_ids) if any(result.part_ids) else None  # some parts taken
        row = {
            "id": c.message_id,
            "error": str(result),
            "code": result.code,
            "parts": parts,
            "ids": [i for i in parts or () if i is not None] or None,
            "digest": text_digest(get_vault(), c.sms.text) if parts else None,
            "reference": c.sms.udh_reference if parts else None,
        }
        if isinstance(result, PermanentSmsError):
            done.failed.append((c, f"permanent provider error: {result}", result.code, parts or []))
            outcomes[c.job] = SendOutcome(SendResult.FAILED, str(result))
        elif isinstance(result, InDoubtSmsError) or not isinstance(result, TransientSmsError):
            # It may have been taken: leave it `submitting`; a receipt settles it, else the parts not
            # known to be taken go again (same reference) after the in-doubt window.
            done.in_doubt.append(row)
            outcomes[c.job] = SendOutcome(SendResult.RETRY, str(result), in_doubt_ms)
        else:
            kind = result.kind if result.kind in ("throttled", "unavailable") else "transient"
            count = (c.failures or {}).get(kind, 0) + 1
            rules: RetryClass = getattr(policy, kind)
            if kind != "unavailable" and count >= rules.max_attempts:
                reason = f"gave up after {count} {kind} errors: {result}"
                done.failed.append((c, reason, result.code, parts or []))
                outcomes[c.job] = SendOutcome(SendResult.FAILED, reason)
                continue
            done.retry.append({**row, "kind": kind, "count": count})
            outcomes[c.job] = SendOutcome(SendResult.RETRY, str(result), backoff_ms(rules, count))
    _record(done, provider=provider)
    SMS_OUTCOMES.labels("transient").inc(len(done.retry))
    SMS_OUTCOMES.labels("in_doubt").inc(len(done.in_doubt))


# An attempt that ended with some parts taken and others not: the parts' ids, the text they belong to
# and its UDH reference, for the next attempt (nothing is written when no part was taken).
_PARTS_SET = (
    " part_ids = coalesce(u.parts, m.part_ids), text_digest = coalesce(u.digest, m.text_digest),"
    " udh_reference = coalesce(u.reference, m.udh_reference),"
    " provider_message_ids = coalesce(u.ids, m.provider_message_ids)"
)


def _record(done: _Outcomes, *, provider: str, attempts: int = 3) -> None:
    """The outcomes of a submitted batch, in one transaction. Retried on a lock conflict (it is all
    idempotent); if it still fails, the messages stay `submitting` and their receipts settle them."""
    for attempt in range(attempts):
        now = datetime.now(UTC)
        try:
            with transaction() as session:
                db = driver(session)
                snap = get_snapshot(session)
                _mark_sent(db, done.sent, provider=provider, now=now, snap=snap)
                if done.retry:
                    db.execute(
                        "UPDATE sms_messages m SET status = 'pending', last_error = u.error,"
                        " error_code = u.code, updated_at = %(now)s, provider = %(provider)s,"
                        + _PARTS_SET
                        + ", failures = m.failures || jsonb_build_object(u.kind, u.count)"
                        " FROM jsonb_to_recordset(%(batch)s::jsonb) AS u(id bigint, error text, code varchar,"
                        "   parts varchar[], ids varchar[], digest varchar, reference int, kind varchar,"
                        "   count int)"
                        " WHERE m.id = u.id AND m.id = ANY(%(ids)s) AND m.status = 'submitting'",
                        {
                            "now": now,
                            "provider": provider,
                            "batch": batch(done.retry),
                            "ids": [r["id"] for r in done.retry],
                        },
                    )
                if done.in_doubt:
                    db.execute(
                        "UPDATE sms_messages m SET last_error = u.error, updated_at = %(now)s,"
                        " provider = %(provider)s,"
                        + _PARTS_SET
                        + " FROM jsonb_to_recordset(%(batch)s::jsonb) AS u(id bigint, error text,"
                        "   parts varchar[], ids varchar[], digest varchar, reference int)"
                        " WHERE m.id = u.id AND m.id = ANY(%(ids)s) AND m.status = 'submitting'",
                        {
                            "now": now,
                            "provider": provider,
                            "batch": batch(done.in_doubt),
                            "ids": [r["id"] for r in done.in_doubt],
                        },
                    )
                if done.failed:
                    db.execute(
                        "UPDATE sms_messages m SET provider = %(provider)s,"
                        + _PARTS_SET
                        + " FROM jsonb_to_recordset(%(batch)s::jsonb)"
                        " AS u(id bigint, parts varchar[], ids varchar[], digest varchar, reference int)"
                        " WHERE m.id = u.id AND m.id = ANY(%(ids)s) AND u.ids IS NOT NULL",
                        {
                            "provider": provider,
                            "batch": batch(
                                [
                                    {
                                        "id": c.message_id,
                                        "parts": parts or None,
                                        "ids": [i for i in parts if i is not None] or None,
                                        "digest": text_digest(get_vault(), c.sms.text),
                                        "reference": c.sms.udh_reference,
                                    }
                                    for c, _, _, parts in done.failed
                                ]
                            ),
                            "ids": [c.message_id for c, *_ in done.failed],
                        },
                    )
                for c, reason, code, _ in done.failed:
                    _fail(
                        db,
                        message_id=c.message_id,
                        redemption_id=c.job.redemption_id,
                        reason=reason,
                        now=now,
                        snap=snap,
                        error_code=code,
                    )
                _exposed(db, done, now)
            return
        except (OperationalError, sqlalchemy.exc.OperationalError) as exc:
            if attempt == attempts - 1:
                raise
            log.warning("sms_outcome_retry", error=type(exc).__name__)
            time.sleep(0.05 * (attempt + 1))


def _exposed(db: Connection[Any], done: _Outcomes, now: datetime) -> None:
    """Redemptions of which the provider took some parts but not all: the code may have left with
    them, so the reward is no longer cancellable and its code is issued."""
    partial = [r["id"] for r in (*done.retry, *done.in_doubt) if r["ids"]] + [
        c.message_id for c, _, _, parts in done.failed if any(parts)
    ]
    if not partial:
        return
    codes = db.execute(
        "UPDATE redemptions r SET first_sent_at = coalesce(r.first_sent_at, %(now)s) FROM sms_messages m"
        " WHERE m.id = ANY(%(ids)s) AND r.id = m.redemption_id RETURNING r.code_id",
        {"now": now, "ids": partial},
    ).fetchall()
    issued = [code_id for (code_id,) in codes if code_id is not None]
    if issued:
        db.execute(
            "UPDATE codes SET status = 'issued', status_changed_at = %(now)s WHERE id = ANY(%(ids)s)"
            " AND status = 'reserved'",
            {"now": now, "ids": issued},
        )


def deliver(
    redemption_id: uuid.UUID,
    send: int,
    *,
    provider: Provider | None = None,
    now: datetime | None = None,
    pace: Pace | None = None,
) -> SendResult:
    """One send: SENT, FAILED or NOTHING_TO_DO; raises RetryLater (retry at a given time) or
    TransientSmsError (retry with the caller's backoff)."""
    job = Job(redemption_id, send)
    outcome = deliver_many([job], provider=provider, now=now, pace=pace)[job]
    if outcome.result is SendResult.RETRY:
        if outcome.retry_ms is None:
            raise TransientSmsError(outcome.reason)
        raise RetryLater(outcome.reason, outcome.retry_ms)
    return outcome.result


def apply_receipt(
    provider: str, message_id: str, state: str, destination: str | None = None, now: datetime | None = None
) -> bool:
    """One delivery receipt (see `apply_receipts`); raises ReceiptTooEarly if it cannot be placed yet."""
    error = apply_receipts(provider, [Receipt(message_id, state, destination)], now)[0]
    if error is not None:
        raise error
    return True


@dataclass
class _Receipted:
    """A message some receipts of the batch belong to, as the batch leaves it."""

    redemption_id: uuid.UUID
    status: str
    ids: list[str]  # the parts the provider took, as it named them
    seen: dict[str, str]  # receipts so far: provider id -> state
    segments: int
    parts: list[str | None]  # per part, its provider id once taken

    @property
    def in_doubt(self) -> bool:
        """An attempt whose outcome was never recorded (or is not known part by part)."""
        return self.status == "submitting"

    def at_provider(self) -> list[str | None]:
        """Per part, the id the provider knows it by: the parts taken, and for an in-doubt attempt the
        ids its receipts named that no answer ever did, in the places still open."""
        parts = list(self.parts) if len(self.parts) == self.segments else [None] * self.segments
        known = {i for i in parts if i} | set(self.ids)
        unknown = iter(sorted(k for k in self.seen if k not in known))
        return [i if i else next(unknown, None) for i in parts]


@dataclass(frozen=True)
class _ReceiptedRow:
    """A message as receipts are placed on it (RECEIPTED_MESSAGES' columns)."""

    id: int
    redemption_id: uuid.UUID
    status: str
    provider_message_ids: list[str] | None
    receipts: dict[str, str] | None
    segments: int | None
    part_ids: list[str | None] | None


@dataclass(frozen=True)
class _SpelledRow(_ReceiptedRow):
    """A recent message of a destination, whose parts' ids a receipt may spell in the other base."""

    msisdn: str


@dataclass(frozen=True)
class _InDoubtRow(_SpelledRow):
    """A destination's attempt whose outcome was never recorded."""

    submit_started_at: datetime


def _receipted(row: _ReceiptedRow, status: str | None = None) -> _Receipted:
    return _Receipted(
        row.redemption_id,
        status or row.status,
        list(row.provider_message_ids or ()),
        dict(row.receipts or {}),
        row.segments or 1,
        list(row.part_ids or ()),
    )


# The messages a batch of receipts names, locked in id order; the newest of several with one id wins.
RECEIPTED_MESSAGES = (
    "SELECT id, redemption_id, status, provider_message_ids, receipts, segments, part_ids FROM sms_messages"
    " WHERE id = ANY(ARRAY(SELECT sms_message_id FROM sms_provider_messages WHERE provider = %(provider)s"
    " AND provider_message_id = ANY(%(ids)s))) ORDER BY id FOR UPDATE"
)


def apply_receipts(
    provider: str, receipts: list[Receipt], now: datetime | None = None
) -> list[Exception | None]:
    """Delivery receipts, in one transaction: final states settle the message and the redemption.

    A receipt is placed by its provider's message id (on the newest message with that id: providers
    may recycle ids), else by the same number spelled the other way (hex in submit_sm_resp, decimal
    in the receipt text) among the destination's messages. One with an unknown id for a destination
    that has an in-doubt attempt (`submitting`, its outcome never recorded) belongs to that attempt:
    it did reach the provider, but maybe not whole, since a worker can die between the parts of a
    long SMS. Only receipts for every part not already known to be taken settle it as sent;
    otherwise its missing parts go again after the in-doubt window.

    Per receipt: None, or ReceiptTooEarly (usually it overtook the commit of its own submit) for the
    provider to offer it again."""
    now = now or datetime.now(UTC)
    with transaction() as session:
        db = driver(session)
        snap = get_snapshot(session)
        messages, by_id = _receipted_messages(db, provider, receipts)
        placed, errors = _place(db, provider, receipts, messages, by_id, now)
        touched = {sms_id: messages[sms_id] for sms_id in sorted(placed)}
        settled = []
        for sms_id, m in touched.items():
            parts = m.at_provider() if m.in_doubt else []
            if parts and all(parts):
                log.info("sms_in_doubt_settled_by_receipt", redemption_id=str(m.redemption_id))
                m.status, m.ids = "sent", [i for i in parts if i]
                settled.append((sms_id, m.redemption_id, m.ids))
        _mark_sent(db, settled, provider=provider, now=now, snap=snap)
        _notices(db, provider, receipts, errors)
        delivered, failed = _final_states(touched)
        if touched:
            _store_receipts(db, touched, {sms_id for sms_id, _ in delivered}, now)
        for sms_id, m, state in failed:
            _fail(
                db,
                message_id=sms_id,
                redemption_id=m.redemption_id,
                now=now,
                snap=snap,
                reason=f"undeliverable: {state}",
                error_code=state,
            )
        _delivered(db, delivered, provider=provider, now=now, snap=snap)
    return errors


def _notices(
    db: Connection[Any], provider: str, receipts: list[Receipt], errors: list[Exception | None]
) -> None:
    """Receipts no reward SMS owns may be a notice's (a one-time code, a certificate, a reminder)."""
    unknown = [i for i, error in enumerate(errors) if isinstance(error, ReceiptTooEarly)]
    if not unknown:
        return
    known = apply_notice_receipts(db, provider, [receipts[i] for i in unknown])
    for i in unknown:
        if receipts[i].message_id in known:
            errors[i] = None


def _receipted_messages(
    db: Connection[Any], provider: str, receipts: list[Receipt]
) -> tuple[dict[int, _Receipted], dict[str, int]]:
    """The messages the receipts name (locked), and which message each provider id belongs to."""
    messages: dict[int, _Receipted] = {}
    by_id: dict[str, int] = {}
    cursor = db.cursor(row_factory=class_row(_ReceiptedRow))
    for row in cursor.execute(
        RECEIPTED_MESSAGES, {"provider": provider, "ids": [r.message_id for r in receipts]}
    ):
        messages[row.id] = _receipted(row)
        by_id.update({message_id: row.id for message_id in row.provider_message_ids or ()})
    return messages, by_id


_HEX = re.compile(r"[0-9A-Fa-f]+")
# How far back a receipt naming its message in another spelling is looked for
OTHER_SPELLING_DAYS = 7


def _number(message_id: str) -> tuple[str, int] | None:
    """A message id read as a number, when its spelling says which base: ("hex", n) for hex digits
    with a letter or a leading zero (0000002A, 0000002C), ("dec", n) for decimal digits (42)."""
    if message_id.isdigit() and not (message_id.startswith("0") and len(message_id) > 1):
        return "dec", int(message_id)
    if _HEX.fullmatch(message_id) and (not message_id.isdigit() or message_id.startswith("0")):
        return "hex", int(message_id, 16)
    return None


def _place(
    db: Connection[Any],
    provider: str,
    receipts: list[Receipt],
    messages: dict[int, _Receipted],
    by_id: dict[str, int],
    now: datetime,
) -> tuple[set[int], list[Exception | None]]:
    """Puts each receipt on its message: by provider id, else by the same number spelled the other
    way for the same destination, else on the destination's earliest in-doubt attempt (added to
    `messages`). Returns the messages touched, and per receipt its error."""
    errors: list[Exception | None] = [None] * len(receipts)
    unplaced, placed = [], set()
    for index, receipt in enumerate(receipts):
        if receipt.message_id in by_id:
            messages[by_id[receipt.message_id]].seen[receipt.message_id] = receipt.state
            placed.add(by_id[receipt.message_id])
        else:
            unplaced.append(index)
    if unplaced:
        unplaced = _place_by_other_spelling(db, provider, receipts, unplaced, messages, placed, now)
    destinations = {_e164(d) for d in (receipts[i].destination for i in unplaced) if d}
    in_doubt: dict[str, tuple[int, datetime]] = {}  # destination -> its earliest in-doubt attempt
    if destinations:
        cursor = db.cursor(row_factory=class_row(_InDoubtRow))
        for row in cursor.execute(
            "SELECT id, redemption_id, msisdn, submit_started_at, provider_message_ids, receipts, segments,"
            " part_ids, status FROM sms_messages WHERE status = 'submitting' AND msisdn = ANY(%(msisdns)s)"
            " ORDER BY id FOR UPDATE",
            {"msisdns": list(destinations)},
        ):
            if row.msisdn not in in_doubt or row.submit_started_at < in_doubt[row.msisdn][1]:
                in_doubt[row.msisdn] = (row.id, row.submit_started_at)
            messages.setdefault(row.id, _receipted(row))
    for index in unplaced:
        receipt = receipts[index]
        attempt = in_doubt.get(_e164(receipt.destination)) if receipt.destination else None
        if attempt is None:
            errors[index] = ReceiptTooEarly(f"no message {receipt.message_id} (yet)")
        elif now - attempt[1] < SUBMIT_GRACE:
            errors[index] = ReceiptTooEarly(
                f"the submit of message {receipt.message_id} is still being recorded"
            )
        else:
            messages[attempt[0]].seen[receipt.message_id] = receipt.state
            placed.add(attempt[0])
    return placed, errors


def _place_by_other_spelling(
    db: Connection[Any],
    provider: str,
    receipts: list[Receipt],
    unplaced: list[int],
    messages: dict[int, _Receipted],
    placed: set[int],
    now: datetime,
) -> list[int]:
    """Receipts whose id is the number of a part's id in the other base (SMSCs answer submit_sm in
    hex and write decimal in the receipt text), looked for among the destination's recent messages
    only. Returns the receipts still unplaced."""
    wanted = {
        i: number
        for i in unplaced
        if receipts[i].destination and (number := _number(receipts[i].message_id)) is not None
    }
    if not wanted:
        return unplaced
    cursor = db.cursor(row_factory=class_row(_SpelledRow))
    rows = cursor.execute(
        "SELECT m.id, m.redemption_id, m.status, m.provider_message_ids, m.receipts, m.segments, m.part_ids,"
        " m.msisdn FROM redemptions r JOIN sms_messages m ON m.redemption_id = r.id"
        " WHERE r.msisdn = ANY(%(msisdns)s) AND m.provider = %(provider)s"
        " AND cardinality(m.provider_message_ids) > 0 AND m.created_at > %(since)s"
        " ORDER BY m.id FOR UPDATE OF m",
        {
            "msisdns": sorted({_e164(receipts[i].destination or "") for i in wanted}),
            "provider": provider,
            "since": now - timedelta(days=OTHER_SPELLING_DAYS),
        },
    ).fetchall()
    parts: dict[tuple[str, str, int], tuple[int, str]] = {}  # (msisdn, base, number) -> (message, id)
    for row in rows:  # in id order: the newest message with the number wins
        for message_id in row.provider_message_ids or ():
            if (number := _number(message_id)) is not None:
                parts[(row.msisdn, *number)] = (row.id, message_id)
    still = []
    for index in unplaced:
        receipt, number = receipts[index], wanted.get(index)
        other = {"dec": "hex", "hex": "dec"}[number[0]] if number else None
        found = parts.get((_e164(receipt.destination or ""), other, number[1])) if number and other else None
        if found is None:
            still.append(index)
            continue
        sms_id, message_id = found
        row = next(r for r in rows if r.id == sms_id)
        messages.setdefault(sms_id, _receipted(row)).seen[message_id] = receipt.state
        placed.add(sms_id)
    return still


def _final_states(
    touched: dict[int, _Receipted],
) -> tuple[list[tuple[int, uuid.UUID]], list[tuple[int, _Receipted, str]]]:
    """Sent messages whose every part is delivered, and those with a part that failed."""
    delivered, failed = [], []
    for sms_id, m in touched.items():
        if m.status != "sent":
            continue
        failed_state = next((m.seen[i] for i in m.ids if m.seen.get(i) in FAILED_STATES), None)
        if failed_state:
            failed.append((sms_id, m, failed_state))
        elif all(m.seen.get(i) in DELIVERED_STATES for i in m.ids):
            delivered.append((sms_id, m.redemption_id))
    return delivered, failed


def _store_receipts(
    db: Connection[Any], touched: dict[int, _Receipted], done: set[int], now: datetime
) -> None:
    """The receipts seen so far and, where every part is delivered, the final status: one statement
    and one new row version per message."""
    db.execute(
        "UPDATE sms_messages m SET receipts = u.seen, updated_at = %(now)s, receipt_at = %(now)s,"
        " status = CASE WHEN u.delivered THEN 'delivered' ELSE m.status END,"
        " done_at = CASE WHEN u.delivered THEN %(now)s ELSE m.done_at END"
        " FROM jsonb_to_recordset(%(batch)s::jsonb) AS u(id bigint, seen jsonb, delivered bool)"
        " WHERE m.id = u.id AND m.id = ANY(%(ids)s)",
        {
            "now": now,
            "batch": batch(
                [{"id": sms_id, "seen": m.seen, "delivered": sms_id in done} for sms_id, m in touched.items()]
            ),
            "ids": list(touched),
        },
    )


def _e164(destination: str) -> str:
    return destination if destination.startswith("+") else "+" + destination


def apply_smpp_receipts(receipts: list[Receipt]) -> list[Exception | None]:
    return apply_receipts("smpp", receipts)


@lru_cache
def get_provider() -> Provider:
    """This process's provider (one SMPP session per process), built on first use."""
    return build_provider(on_receipts=apply_smpp_receipts)


@lru_cache
def get_bulk_provider() -> Provider:
    """This process's provider for campaigns' SMS: the bulk account's session when there is one,
    else the one provider of the process."""
    if not has_bulk_account():
        return get_provider()
    return build_provider(on_receipts=apply_smpp_receipts, bulk=True)


def close_provider() -> None:
    """Closes this process's provider if it was built (an SMPP session unbinds first)."""
    if get_provider.cache_info().currsize:
        provider = get_provider()
        close = getattr(provider, "close", None)
        if close is not None:
            close()
        get_provider.cache_clear()
    if get_bulk_provider.cache_info().currsize and has_bulk_account():  # else: the one closed above
        bulk = get_bulk_provider()
        close = getattr(bulk, "close", None)
        if close is not None:
            close()
    get_bulk_provider.cache_clear()


@lru_cache
def get_sandbox_provider() -> SandboxProvider:
    """Where sandbox keys' SMS go, whatever SMS_PROVIDER says: a file, never a subscriber."""
    settings = get_settings()
    return SandboxProvider(settings.sms_sandbox_file or settings.data_dir / "sms-sandbox.jsonl")


def settle_sandbox_receipts(*, now: datetime | None = None, messages: list[int] | None = None) -> int:
    """The sandbox's delivery receipts: `DELIVRD` for its sent messages, at once, except for the magic
    number of the delayed receipt, whose receipt comes once SANDBOX_RECEIPT_DELAY_SECONDS have passed
    (the housekeeping applies those). `messages`: only these (the batch just sent). Returns how many
    receipts were applied."""
    now = now or datetime.now(UTC)
    delay = timedelta(seconds=get_settings().sandbox_receipt_delay_seconds)
    with transaction() as session:
        rows = (
            driver(session)
            .execute(
                "SELECT provider_message_ids FROM sms_messages WHERE provider = 'sandbox' AND status = 'sent'"
                " AND (msisdn <> %(delayed)s OR sent_at <= %(before)s)"
                " AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s))",
                {"delayed": SMS_DELAYED_RECEIPT, "before": now - delay, "ids": messages},
            )
            .fetchall()
        )
    receipts = [Receipt(message_id, "DELIVRD", None) for (ids,) in rows for message_id in ids]
    if receipts:
        apply_receipts("sandbox", receipts, now)
    return len(receipts)
