"""Partner reconciliation: a partner's report of the codes it activated (CSV `code[,activated_at][,amount]`)
against the codes we issued to subscribers or through card exchanges.

Codes are matched by their keyed fingerprint (the same HMAC the pools store), so full codes are
never stored, logged or echoed: every line of the answer names a code by its last 4 characters and
the fingerprint's hex.

- activated_not_issued: they activated a code we never issued (or whose issue was reversed) — a leak;
- issued_not_activated: codes we issued (net of cancellations) booked in the period that are not in
  the report, with their age in days at the end of the period (or now, if earlier);
- amount_mismatches: the reported amount differs from the face value we issued the code at."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import InvalidOperation
from zoneinfo import ZoneInfo

from psycopg.rows import class_row, scalar_row

from service.catalog.errors import UnknownPartner
from service.kit.db.engine import driver, new_session
from service.kit.http.csv_body import csv_text
from service.kit.http.errors import ValidationFailed
from service.kit.security.crypto import get_vault
from service.kit.values.money import Money, MoneyError, to_minor
from service.kit.values.zones import zone
from service.ledger.periods import month_end
from service.ledger.sql import load

MAX_LISTED = 1000


@dataclass
class ReportLine:
    line: int
    fingerprint: bytes
    last4: str
    activated_at: datetime | None
    amount_minor: int | None


@dataclass(frozen=True)
class RejectedLine:
    line: int
    reason: str


@dataclass
class ParsedReport:
    lines: list[ReportLine] = field(default_factory=list)
    rejected: list[RejectedLine] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    total: int = 0


def _parse_time(value: str, zone: ZoneInfo) -> datetime:
    value = value.strip()
    if len(value) == 10:
        return datetime.combine(date.fromisoformat(value), time(0), zone).astimezone(UTC)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def parse_report(body: bytes, currency: str, zone: ZoneInfo) -> ParsedReport:
    """The report's lines; a body that is not CSV (not UTF-8, JSON) is refused whole (csv_text)."""
    text = csv_text(body)
    vault = get_vault()
    report = ParsedReport()
    seen: dict[bytes, int] = {}
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for cells in reader:
            number = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            if number == 1 and cells[0].strip().lower() == "code":
                continue
            report.total += 1
            if len(cells) > 3:
                report.rejected.append(
                    RejectedLine(number, "too many columns: expected code[,activated_at][,amount]")
                )
                continue
            code = cells[0].strip()
            if not code or len(code) > 256 or not code.isprintable():
                report.rejected.append(RejectedLine(number, "code is empty, too long or not printable"))
                continue
            try:
                activated = _parse_time(cells[1], zone) if len(cells) > 1 and cells[1].strip() else None
            except ValueError:
                report.rejected.append(RejectedLine(number, "activated_at must be RFC 3339 or YYYY-MM-DD"))
                continue
            try:
                amount = to_minor(cells[2].strip(), currency) if len(cells) > 2 and cells[2].strip() else None
            except (MoneyError, InvalidOperation):
                report.rejected.append(
                    RejectedLine(number, f"amount must be a decimal such as 2000.00 ({currency})")
                )
                continue
            fingerprint = vault.fingerprint(code)
            if fingerprint in seen:
                report.duplicates.append(number)
                continue
            seen[fingerprint] = number
            report.lines.append(ReportLine(number, fingerprint, code[-4:], activated, amount))
    except csv.Error as exc:
        raise ValidationFailed(
            f"CSV line {reader.line_num}: {exc}",
            errors=[{"field": "body", "message": "malformed CSV"}],
        ) from None
    return report


@dataclass(frozen=True)
class Partner:
    id: int
    code: str
    name: str


@dataclass(frozen=True)
class IssuedCode:
    """A code of the partner's that we issued and did not take back (sql/issued_codes.sql)."""

    fingerprint: bytes
    last4: str | None
    sku: str
    issued_at: datetime | None
    face_value_minor: int
    currency: str
    redemption_id: str | None
    in_period: bool


PARTNER = load("partner")
PARTNER_CURRENCY = load("partner_currency")
FIRST_PROGRAM_ZONE = load("first_program_zone")
ISSUED_CODES = load("issued_codes")


@dataclass(frozen=True)
class LeakedCode:
    """A code the partner activated that we never issued (or whose issue was reversed)."""

    line: int
    last4: str
    fingerprint: str
    activated_at: datetime | None
    amount: Money | None


@dataclass(frozen=True)
class UnactivatedCode:
    """A code issued in the period that the report does not list."""

    last4: str | None
    fingerprint: str
    sku: str
    issued_at: datetime
    age_days: int
    face_value: Money
    redemption_id: str | None


@dataclass(frozen=True)
class AmountMismatch:
    line: int
    last4: str | None
    fingerprint: str
    sku: str
    reported: Money
    expected: Money


@dataclass(frozen=True)
class DiscrepancyCounts:
    activated_not_issued: int
    issued_not_activated: int
    amount_mismatches: int
    rejected: int
    duplicates: int


@dataclass(frozen=True)
class PartnerReconciliation:
    """A partner's report against what we issued; each list holds at most MAX_LISTED lines (the
    counts count them all)."""

    partner: str
    period: str
    lines: int
    matched: int
    counts: DiscrepancyCounts
    activated_not_issued: tuple[LeakedCode, ...]
    issued_not_activated: tuple[UnactivatedCode, ...]
    amount_mismatches: tuple[AmountMismatch, ...]
    rejected: tuple[RejectedLine, ...]
    duplicate_lines: tuple[int, ...]


def reconcile_partner(
    partner_code: str, month: date, body: bytes, *, now: datetime | None = None
) -> PartnerReconciliation:
    now = now or datetime.now(UTC)
    with new_session() as session:
        db = driver(session)
        with db.cursor(row_factory=class_row(Partner)) as cursor:
            partner = cursor.execute(PARTNER, {"code": partner_code}).fetchone()
        if partner is None:
            raise UnknownPartner(f"no partner {partner_code}")
        # the partner's currency and time zone: from its products and the programs that issued them
        with db.cursor(row_factory=scalar_row) as cursor:
            currency = cursor.execute(PARTNER_CURRENCY, {"partner": partner.id}).fetchone() or "KZT"
            zone_name = cursor.execute(FIRST_PROGRAM_ZONE).fetchone() or "Asia/Almaty"
        program_zone = zone(zone_name)
        report = parse_report(body, currency, program_zone)
        end = min(month_end(month, program_zone), now)
        # Net issued codes of this partner, ever: a cancel reverses its issue.
        issued: dict[bytes, IssuedCode] = {}
        with db.cursor(name="partner_codes", row_factory=class_row(IssuedCode)) as codes:
            codes.itersize = 10_000
            codes.execute(ISSUED_CODES, {"month": month, "partner": partner.id})
            for code in codes:
                issued[code.fingerprint] = code
    reported = {line.fingerprint for line in report.lines}
    leaks: list[LeakedCode] = []
    mismatches: list[AmountMismatch] = []
    matched = 0
    for line in report.lines:
        ours = issued.get(line.fingerprint)
        if ours is None:
            leaks.append(
                LeakedCode(
                    line=line.line,
                    last4=line.last4,
                    fingerprint=line.fingerprint.hex(),
                    activated_at=line.activated_at,
                    amount=_money(line.amount_minor, currency),
                )
            )
            continue
        matched += 1
        face, cur = ours.face_value_minor, ours.currency
        if line.amount_minor is not None and line.amount_minor != face:
            mismatches.append(
                AmountMismatch(
                    line=line.line,
                    last4=ours.last4,
                    fingerprint=line.fingerprint.hex(),
                    sku=ours.sku,
                    reported=Money.of(line.amount_minor, cur),
                    expected=Money.of(face, cur),
                )
            )
    not_activated: list[UnactivatedCode] = []
    for fingerprint, code in issued.items():
        if code.in_period and fingerprint not in reported:
            assert code.issued_at is not None  # issued in the period: it has an issue
            not_activated.append(
                UnactivatedCode(
                    last4=code.last4,
                    fingerprint=fingerprint.hex(),
                    sku=code.sku,
                    issued_at=code.issued_at,
                    age_days=max(0, (end - code.issued_at).days),
                    face_value=Money.of(code.face_value_minor, code.currency),
                    redemption_id=code.redemption_id,
                )
            )
    not_activated.sort(key=lambda item: (-item.age_days, item.fingerprint))
    return PartnerReconciliation(
        partner=partner.code,
        period=f"{month:%Y-%m}",
        lines=report.total,
        matched=matched,
        counts=DiscrepancyCounts(
            activated_not_issued=len(leaks),
            issued_not_activated=len(not_activated),
            amount_mismatches=len(mismatches),
            rejected=len(report.rejected),
            duplicates=len(report.duplicates),
        ),
        activated_not_issued=tuple(leaks[:MAX_LISTED]),
        issued_not_activated=tuple(not_activated[:MAX_LISTED]),
        amount_mismatches=tuple(mismatches[:MAX_LISTED]),
        rejected=tuple(report.rejected[:MAX_LISTED]),
        duplicate_lines=tuple(report.duplicates[:MAX_LISTED]),
    )


def _money(minor: int | None, currency: str) -> Money | None:
    return None if minor is None else Money.of(minor, currency)
