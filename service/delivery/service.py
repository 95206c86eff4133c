"""Delivering a redemption's SMS: claim the message row, render, hand it to the provider outside any
transaction, record the outcome; and receipts. Status moves accepted -> sent -> delivered, or to
failed (permanent error, or still undelivered at the deadline) with the reason."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any

import sqlalchemy.exc
import structlog
from psycopg import OperationalError
from psycopg.rows import namedtuple_row

from service.catalog.snapshot import get_snapshot
from service.delivery.notices import apply_notice_receipts
from service.delivery.providers import (
    OutgoingSms,
    PermanentSmsError,
    Provider,
    Receipt,
    SandboxProvider,
    SmsError,
    TransientSmsError,
    build_provider,
)
from service.delivery.text import NO_EXPIRY, format_amount, render
from service.events import webhooks
from service.kit.config import get_settings
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


def _fields(row: Any, snap, secrets: dict[tuple[str, int], tuple[str, str]]) -> tuple[str, dict[str, str]]:
    program = snap.programs_by_id[row.program_id]
    product = snap.products[row.product_id]
    locale = row.locale
    fields = {
        "program": program.name,
        "offer": snap.offers_by_id[row.offer_id].name,
        "brand": product.brand or "",
        "partner": product.partner_code or "",
        "nominal": format_amount(row.nominal_minor, row.currency, locale),
        "expires": (
            row.reward_expires_at.astimezone(program.zone).strftime("%d.%m.%Y")
            if row.reward_expires_at
            else NO_EXPIRY.get(locale, NO_EXPIRY["ru"])
        ),
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


def _secrets(db: Any, rows: list[Any]) -> dict[tuple[str, int], tuple[str, str]]:
    """The codes and cards of a batch, decrypted: two queries whatever the batch size."""
    vault = get_vault()
    found: dict[tuple[str, int], tuple[str, str]] = {}
    code_ids = [r.code_id for r in rows if r.code_id is not None]
    card_ids = [r.card_id for r in rows if r.code_id is None and r.card_id is not None]
    if code_ids:
        for id_, code_enc, pin_enc, key_id in db.execute(
            "SELECT id, code_enc, pin_enc, key_id FROM codes WHERE id = ANY(%s)", (code_ids,)
        ):
            found["code", id_] = (
                vault.decrypt(bytes(code_enc), b"code", key_id),
                vault.decrypt(bytes(pin_enc), b"pin", key_id) if pin_enc else "",
            )
    if card_ids:
        for id_, number_enc, pin_enc, key_id in db.execute(
            "SELECT id, number_enc, pin_enc, key_id FROM cards WHERE id = ANY(%s)", (card_ids,)
        ):
            found["card", id_] = (
                vault.decrypt(bytes(number_enc), b"card-number", key_id),
                vault.decrypt(bytes(pin_enc), b"card-pin", key_id),
            )
    return found


def _fail(db: Any, *, message_id: int, redemption_id: uuid.UUID, reason: str, now: datetime, snap) -> None:
    db.execute(
        "UPDATE sms_messages SET status = 'failed', last_error = %s, done_at = %s, updated_at = %s"
        " WHERE id = %s",
        (reason, now, now, message_id),
    )
    changed = db.execute(
        "UPDATE redemptions SET status = 'failed', status_reason = %s, updated_at = %s"
        " WHERE id = %s AND status IN ('accepted', 'sent') RETURNING external_id, program_id, sandbox",
        (reason, now, redemption_id),
    ).fetchone()
    if changed:
        program = snap.programs_by_id[changed[1]]
        webhooks.emit(
            db,
            program_id=program.id,
            webhook_url=program.webhook_url,
            redemption_id=redemption_id,
            event="failed",
            now=now,
            data={
                "redemption_id": str(redemption_id),
                "external_id": changed[0],
                "status": "failed",
                "status_reason": reason,
                "sandbox": changed[2],
            },
        )
    if not (changed and changed[2]):  # the sandbox's failures are on purpose: no alert counts them
        SMS_OUTCOMES.labels("failed").inc()


def _mark_sent(
    db: Any, sent: list[tuple[int, uuid.UUID, list[str]]], *, provider: str, now: datetime, snap
) -> None:
    """Records messages the provider took: (message id, redemption id, provider ids) each. A handful of
    statements whatever the batch size."""
    if not sent:
        return
    # One statement per table for the whole batch, not one per message. (A trigger copies the parts'
    # provider ids into sms_provider_messages, where receipts look them up.)
    db.execute(
        "UPDATE sms_messages m SET status = 'sent', provider = %s, provider_message_ids = u.ids,"
        " sent_at = %s, updated_at = %s, last_error = NULL"
        " FROM jsonb_to_recordset(%s::jsonb) AS u(id bigint, ids varchar[])"
        " WHERE m.id = u.id AND m.id = ANY(%s) AND m.status = 'submitting'",
        (
            provider,
            now,
            now,
            batch([{"id": message_id, "ids": ids} for message_id, _, ids in sent]),
            [message_id for message_id, _, _ in sent],
        ),
    )
    changed = db.execute(
        "UPDATE redemptions SET status = 'sent', status_reason = NULL,"
        " first_sent_at = coalesce(first_sent_at, %s), updated_at = %s"
        " WHERE id = ANY(%s) AND status IN ('accepted', 'failed')"
        " RETURNING id, external_id, program_id, sandbox, code_id",
        (now, now, [r for _, r, _ in sent]),
    ).fetchall()
    issued = [code_id for *_, code_id in changed if code_id is not None]
    if issued:  # the codes have left us: they are issued now
        db.execute(
            "UPDATE codes SET status = 'issued', status_changed_at = %s WHERE id = ANY(%s)"
            " AND status = 'reserved'",
            (now, issued),
        )
    _emit_status(db, changed, "sent", now, snap)
    if provider != SandboxProvider.name:
        SMS_OUTCOMES.labels("sent").inc(len(sent))


def _emit_status(db: Any, changed: list[Any], status: str, now: datetime, snap) -> None:
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


def _delivered(db: Any, done: list[tuple[int, uuid.UUID]], *, provider: str, now: datetime, snap) -> None:
    """The redemptions of messages whose every part is delivered (the messages are marked by the caller)."""
    if not done:
        return
    changed = db.execute(
        "UPDATE redemptions SET status = 'delivered', status_reason = NULL, updated_at = %s"
        " WHERE id = ANY(%s) AND status IN ('sent', 'accepted', 'failed')"
        " RETURNING id, external_id, program_id, sandbox",
        (now, sorted(r for _, r in done)),
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


def _create_messages(db: Any, wanted: str, rids: list[uuid.UUID], now: datetime) -> None:
    """The sms_messages row of every send that has none yet. The deadline is the program's (or the
    default), counted from the redemption for the first send, which is when the subscriber started
    waiting, and from now for a resend."""
    deadline = _settings()[0]
    db.execute(
        "INSERT INTO sms_messages (redemption_id, send, msisdn, locale, deadline_at, created_at,"
        " updated_at) SELECT r.id, j.send, r.msisdn, r.locale,"
        " CASE WHEN j.send = 0 THEN r.created_at ELSE %s END"
        " + make_interval(secs => coalesce(p.sms_deadline_hours * 3600, %s)), %s, %s"
        " FROM jsonb_to_recordset(%s::jsonb) AS j(rid uuid, send int) JOIN redemptions r ON r.id = j.rid"
        " JOIN programs p ON p.id = r.program_id"
        " WHERE r.id = ANY(%s) ORDER BY r.id, j.send ON CONFLICT (redemption_id, send) DO NOTHING",
        (now, deadline.total_seconds(), now, now, wanted, rids),
    )


def _lock_messages(db: Any, wanted: str, rids: list[uuid.UUID]) -> list[Any]:
    cursor = db.cursor(row_factory=namedtuple_row)
    return cursor.execute(
        "SELECT m.id AS message_id, m.send, m.status, m.deadline_at, m.submit_started_at, m.last_error,"
        " r.id AS redemption_id, r.status AS redemption_status, r.program_id, r.offer_id, r.product_id,"
        " r.msisdn, r.locale, r.nominal_minor, r.currency, r.reward_expires_at, r.code_id, r.card_id,"
        " r.sandbox, r.link_hash IS NOT NULL AS has_link"
        " FROM jsonb_to_recordset(%s::jsonb) AS j(rid uuid, send int)"
        " JOIN sms_messages m ON m.redemption_id = j.rid AND m.send = j.send"
        " JOIN redemptions r ON r.id = m.redemption_id WHERE m.redemption_id = ANY(%s) AND r.id = ANY(%s)"
        " ORDER BY m.id FOR UPDATE OF m",
        (wanted, rids, rids),
    ).fetchall()


def _triage(db: Any, rows: list[Any], outcomes: dict[Job, SendOutcome], now: datetime, snap) -> list[Any]:
    """The sends that may go out now. Settled ones are skipped, cancelled ones closed, an in-doubt
    one waits out its window, one past its deadline fails; their outcomes go into `outcomes`."""
    in_doubt_window = _settings()[1]
    ready, cancelled = [], []
    for row in rows:
        job = Job(row.redemption_id, row.send)
        if row.status in SETTLED:
            continue  # a duplicate job: this send is settled
        if row.redemption_status == "cancelled":
            cancelled.append((now, row.message_id))
            continue
        if row.status == "submitting":
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
            "UPDATE sms_messages SET status = 'cancelled', updated_at = %s WHERE id = %s", cancelled
        )
    return ready


def _render(db: Any, ready: list[Any], snap) -> list[Claimed]:
    """The SMS of each send, from its program's template in the subscriber's locale."""
    secrets = _secrets(db, ready)
    claimed = []
    for row in ready:
        program = snap.programs_by_id[row.program_id]
        kind, fields = _fields(row, snap, secrets)
        rendered = render(program.templates, kind, row.locale, fields)
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
                ),
                rendered.locale,
                row.sandbox,
            )
        )
    return claimed


def _mark_submitting(db: Any, claimed: list[Claimed], now: datetime) -> None:
    submitting = [
        {"id": c.message_id, "encoding": c.sms.encoding, "segments": c.sms.segments, "locale": c.locale}
        for c in claimed
    ]
    db.execute(
        "UPDATE sms_messages m SET status = 'submitting', attempts = m.attempts + 1,"
        " submit_started_at = %s, encoding = u.encoding, segments = u.segments, locale = u.locale,"
        " updated_at = %s, receipts = '{}'"
        " FROM jsonb_to_recordset(%s::jsonb) AS u(id bigint, encoding varchar, segments int, locale varchar)"
        " WHERE m.id = u.id AND m.id = ANY(%s)",
        (now, now, batch(submitting), [c.message_id for c in claimed]),
    )


def deliver_many(
    jobs: list[Job], *, provider: Provider | None = None, now: datetime | None = None
) -> dict[Job, SendOutcome]:
    """Claims a batch, hands it to the provider outside any transaction, records every outcome in one
    more transaction. Safe to run again for the same jobs: settled sends are skipped, and a send whose
    outcome was never recorded is in doubt, never resent blindly."""
    now = now or datetime.now(UTC)
    claimed, outcomes = claim(jobs, now)
    real = [c for c in claimed if not c.sandbox]
    if real:
        _submit(real, provider or get_provider(), outcomes, now)
    if sandboxed := [c for c in claimed if c.sandbox]:
        _submit(sandboxed, get_sandbox_provider(), outcomes, now)
        settle_sandbox_receipts(now=datetime.now(UTC), messages=[c.message_id for c in sandboxed])
    return outcomes


def _submit(
    claimed: list[Claimed], provider: Provider, outcomes: dict[Job, SendOutcome], now: datetime
) -> None:
    """Hands claimed messages to the provider outside any transaction and records every outcome."""
    checkpoint("deliver.before_submit")
    results = provider.submit_many([c.sms for c in claimed])
    checkpoint("deliver.after_submit")
    in_doubt_ms = int(_settings()[1].total_seconds() * 1000)
    sent, pending, in_doubt, permanent = [], [], [], []
    for c, result in zip(claimed, results, strict=True):
        if isinstance(result, TransientSmsError):  # not taken: back to pending, retried with backoff
            pending.append((str(result), now, c.message_id))
            outcomes[c.job] = SendOutcome(SendResult.RETRY, str(result))
        elif isinstance(result, PermanentSmsError):
            permanent.append((c, f"permanent provider error: {result}"))
            outcomes[c.job] = SendOutcome(SendResult.FAILED, str(result))
        elif isinstance(result, SmsError):
            # It may have been taken: leave it `submitting`; a receipt settles it, else a resend after
            # the in-doubt window.
            in_doubt.append((str(result), now, c.message_id))
            outcomes[c.job] = SendOutcome(SendResult.RETRY, str(result), in_doubt_ms)
        else:
            sent.append((c.message_id, c.job.redemption_id, result))
            outcomes[c.job] = SendOutcome(SendResult.SENT)
    _record(sent=sent, pending=pending, in_doubt=in_doubt, permanent=permanent, provider=provider.name)
    SMS_OUTCOMES.labels("transient").inc(len(pending))
    SMS_OUTCOMES.labels("in_doubt").inc(len(in_doubt))


def _record(*, sent, pending, in_doubt, permanent, provider: str, attempts: int = 3) -> None:
    """The outcomes of a submitted batch, in one transaction. Retried on a lock conflict (it is all
    idempotent); if it still fails, the messages stay `submitting` and their receipts settle them."""
    for attempt in range(attempts):
        now = datetime.now(UTC)
        try:
            with transaction() as session:
                db = driver(session)
                snap = get_snapshot(session)
                _mark_sent(db, sent, provider=provider, now=now, snap=snap)
                if pending:
                    db.cursor().executemany(
                        "UPDATE sms_messages SET status = 'pending', last_error = %s,"
                        " updated_at = %s WHERE id = %s",
                        pending,
                    )
                if in_doubt:
                    db.cursor().executemany(
                        "UPDATE sms_messages SET last_error = %s, updated_at = %s WHERE id = %s", in_doubt
                    )
                for c, reason in permanent:
                    _fail(
                        db,
                        message_id=c.message_id,
                        redemption_id=c.job.redemption_id,
                        reason=reason,
                        now=now,
                        snap=snap,
                    )
            return
        except (OperationalError, sqlalchemy.exc.OperationalError) as exc:
            if attempt == attempts - 1:
                raise
            log.warning("sms_outcome_retry", error=type(exc).__name__)
            time.sleep(0.05 * (attempt + 1))


def deliver(
    redemption_id: uuid.UUID, send: int, *, provider: Provider | None = None, now: datetime | None = None
) -> SendResult:
    """One send: SENT, FAILED or NOTHING_TO_DO; raises TransientSmsError (retry with backoff) or
    RetryLater (retry at a given time)."""
    job = Job(redemption_id, send)
    outcome = deliver_many([job], provider=provider, now=now)[job]
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
    ids: list[str]
    seen: dict[str, str]
    segments: int
    in_doubt: bool


# The messages a batch of receipts names, locked in id order; the newest of several with one id wins.
RECEIPTED_MESSAGES = (
    "SELECT id, redemption_id, status, provider_message_ids, receipts, segments FROM sms_messages"
    " WHERE id = ANY(ARRAY(SELECT sms_message_id FROM sms_provider_messages WHERE provider = %s"
    " AND provider_message_id = ANY(%s))) ORDER BY id FOR UPDATE"
)


def apply_receipts(
    provider: str, receipts: list[Receipt], now: datetime | None = None
) -> list[Exception | None]:
    """Delivery receipts, in one transaction: final states settle the message and the redemption.

    A receipt is placed by its provider's message id (on the newest message with that id: providers
    may recycle ids). One with an unknown id for a destination that has an in-doubt attempt
    (`submitting`, its outcome never recorded) belongs to that attempt: it did reach the provider, but
    maybe not whole, since a worker can die between the parts of a long SMS. Only receipts for every
    part settle it as sent; otherwise it is resent after the in-doubt window.

    Per receipt: None, or ReceiptTooEarly (usually it overtook the commit of its own submit) for the
    provider to offer it again."""
    now = now or datetime.now(UTC)
    with transaction() as session:
        db = driver(session)
        snap = get_snapshot(session)
        messages, by_id = _receipted_messages(db, provider, receipts)
        placed, errors = _place(db, receipts, messages, by_id, now)
        touched = {sms_id: messages[sms_id] for sms_id in sorted(placed)}
        settled = [(sms_id, m) for sms_id, m in touched.items() if m.in_doubt and len(m.seen) >= m.segments]
        for _, m in settled:
            log.info("sms_in_doubt_settled_by_receipt", redemption_id=str(m.redemption_id))
            m.status, m.ids = "sent", sorted(m.seen)
        _mark_sent(
            db,
            [(sms_id, m.redemption_id, m.ids) for sms_id, m in settled],
            provider=provider,
            now=now,
            snap=snap,
        )
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
            )
        _delivered(db, delivered, provider=provider, now=now, snap=snap)
    return errors


def _notices(db: Any, provider: str, receipts: list[Receipt], errors: list[Exception | None]) -> None:
    """Receipts no reward SMS owns may be a notice's (a one-time code, a certificate, a reminder)."""
    unknown = [i for i, error in enumerate(errors) if isinstance(error, ReceiptTooEarly)]
    if not unknown:
        return
    known = apply_notice_receipts(db, provider, [receipts[i] for i in unknown])
    for i in unknown:
        if receipts[i].message_id in known:
            errors[i] = None


def _receipted_messages(
    db: Any, provider: str, receipts: list[Receipt]
) -> tuple[dict[int, _Receipted], dict[str, int]]:
    """The messages the receipts name (locked), and which message each provider id belongs to."""
    messages: dict[int, _Receipted] = {}
    by_id: dict[str, int] = {}
    for sms_id, redemption_id, status, ids, seen, segments in db.execute(
        RECEIPTED_MESSAGES, (provider, [r.message_id for r in receipts])
    ):
        messages[sms_id] = _Receipted(
            redemption_id, status, list(ids), dict(seen or {}), segments or 1, False
        )
        by_id.update({message_id: sms_id for message_id in ids})
    return messages, by_id


def _place(
    db: Any, receipts: list[Receipt], messages: dict[int, _Receipted], by_id: dict[str, int], now: datetime
) -> tuple[set[int], list[Exception | None]]:
    """Puts each receipt on its message: by provider id, else on the destination's earliest in-doubt
    attempt (added to `messages`). Returns the messages touched, and per receipt its error."""
    errors: list[Exception | None] = [None] * len(receipts)
    unplaced, placed = [], set()
    for index, receipt in enumerate(receipts):
        if receipt.message_id in by_id:
            messages[by_id[receipt.message_id]].seen[receipt.message_id] = receipt.state
            placed.add(by_id[receipt.message_id])
        else:
            unplaced.append(index)
    destinations = {_e164(d) for d in (receipts[i].destination for i in unplaced) if d}
    in_doubt: dict[str, tuple[int, datetime]] = {}  # destination -> its earliest in-doubt attempt
    if destinations:
        for sms_id, redemption_id, msisdn, started, seen, segments in db.execute(
            "SELECT id, redemption_id, msisdn, submit_started_at, receipts, segments FROM sms_messages"
            " WHERE status = 'submitting' AND msisdn = ANY(%s) ORDER BY id FOR UPDATE",
            (list(destinations),),
        ):
            if msisdn not in in_doubt or started < in_doubt[msisdn][1]:
                in_doubt[msisdn] = (sms_id, started)
            messages.setdefault(
                sms_id, _Receipted(redemption_id, "submitting", [], dict(seen or {}), segments or 1, True)
            )
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


def _store_receipts(db: Any, touched: dict[int, _Receipted], done: set[int], now: datetime) -> None:
    """The receipts seen so far and, where every part is delivered, the final status: one statement
    and one new row version per message."""
    db.execute(
        "UPDATE sms_messages m SET receipts = u.seen, updated_at = %s,"
        " status = CASE WHEN u.delivered THEN 'delivered' ELSE m.status END,"
        " done_at = CASE WHEN u.delivered THEN %s ELSE m.done_at END"
        " FROM jsonb_to_recordset(%s::jsonb) AS u(id bigint, seen jsonb, delivered bool)"
        " WHERE m.id = u.id AND m.id = ANY(%s)",
        (
            now,
            now,
            batch(
                [{"id": sms_id, "seen": m.seen, "delivered": sms_id in done} for sms_id, m in touched.items()]
            ),
            list(touched),
        ),
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
                " AND (msisdn <> %s OR sent_at <= %s) AND (%s::bigint[] IS NULL OR id = ANY(%s))",
                (SMS_DELAYED_RECEIPT, now - delay, messages, messages),
            )
            .fetchall()
        )
    receipts = [Receipt(message_id, "DELIVRD", None) for (ids,) in rows for message_id in ids]
    if receipts:
        apply_receipts("sandbox", receipts, now)
    return len(receipts)
