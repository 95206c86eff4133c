"""Code pools: import (API upload and CLI share this pipeline) and stock.

Import streams the file in chunks: each line is validated, encrypted and fingerprinted, then
COPYed (binary) into a temporary staging table; one INSERT ... SELECT moves the new codes into the
pool with ON CONFLICT DO NOTHING on (partner, fingerprint). Re-uploading adds nothing, duplicates
within a file count once, and the whole file is one transaction."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

from psycopg import Connection
from psycopg.rows import scalar_row
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.catalog.models import Product
from service.kit.db.engine import driver
from service.kit.http.csv_body import CSV_MEDIA_TYPES, csv_text
from service.kit.http.errors import MalformedJson, UnsupportedMediaType, ValidationFailed, not_found
from service.kit.security.crypto import Vault, get_vault
from service.kit.values.zones import zone
from service.pools.errors import NotACodeProduct
from service.pools.models import CodeUpload
from service.pools.sql import compose, load

MAX_CODE_LENGTH = 128
MAX_PIN_LENGTH = 32
MAX_REPORTED_LINES = 1000
CHUNK = 20_000
# Date-only expiries mean "valid through that day" where the first customer lives.
DEFAULT_TIMEZONE = zone("Asia/Almaty")


@dataclass
class RawLine:
    line: int
    code: Any
    pin: Any = None
    expires_at: Any = None
    error: str | None = None


@dataclass(frozen=True)
class RejectedLine:
    """A line of an upload that was not imported, and why."""

    line: int
    reason: str


@dataclass
class ImportResult:
    upload_id: int
    sku: str
    lines: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    rejected_lines: list[RejectedLine] = field(default_factory=list)
    duplicate_lines: list[int] = field(default_factory=list)
    truncated: bool = False


class LineRejected(ValueError):
    pass


def _clean(value: Any, name: str, max_length: int, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if required:
            raise LineRejected(f"{name} is empty")
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise LineRejected(f"{name} must be a string")
    value = str(value).strip()
    if len(value) > max_length:
        raise LineRejected(f"{name} is longer than {max_length} characters")
    if not value.isprintable():
        raise LineRejected(f"{name} contains control characters")
    return value


def parse_expiry(value: Any, now: datetime) -> datetime | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise LineRejected("expires_at must be an RFC 3339 timestamp or a YYYY-MM-DD date")
    value = value.strip()
    try:
        if len(value) == 10:
            moment = datetime.combine(date.fromisoformat(value), time(23, 59, 59), DEFAULT_TIMEZONE)
        else:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise LineRejected("expires_at must be an RFC 3339 timestamp or a YYYY-MM-DD date") from None
    if moment.tzinfo is None:
        raise LineRejected("expires_at needs a time zone offset")
    if moment <= now:
        raise LineRejected("code has already expired")
    return moment.astimezone(UTC)


def read_csv(stream: Iterable[str]) -> Iterator[RawLine]:
    """`code[,pin][,expires_at]`, with or without a header line."""
    reader = csv.reader(stream)
    for cells in reader:
        line = reader.line_num
        if not cells or all(not c.strip() for c in cells):
            continue
        if line == 1 and cells[0].strip().lower() == "code":
            continue
        if len(cells) > 3:
            yield RawLine(line, None, error="too many columns: expected code[,pin][,expires_at]")
        else:
            yield RawLine(
                line, cells[0], cells[1] if len(cells) > 1 else None, cells[2] if len(cells) > 2 else None
            )


def read_json(payload: Any) -> Iterator[RawLine]:
    """`{"codes": [{"code": ..., "pin": ..., "expires_at": ...}]}` (each item an object or a code string).
    A bare list is not taken (issue 23: it made the body's schema a union with an array, which
    generated clients cannot send); it is refused with 422 `validation_error`.

    Checked before any line is read: an item that is neither a code string nor an object (e.g.
    `[null, null]`), or an object whose code, pin or expiry is not a string, is a body the schema
    forbids, refused whole with 422 `validation_error` rather than imported as rejected lines."""
    if not isinstance(payload, dict):
        raise ValidationFailed(
            'expected {"codes": [{"code": "...", "pin": "...", "expires_at": "..."}]}',
            errors=[{"field": "body", "message": "must be an object with `codes`"}],
        )
    items = payload.get("codes")
    if not isinstance(items, list):
        raise ValidationFailed(
            'expected {"codes": [{"code": "...", "pin": "...", "expires_at": "..."}]}',
            errors=[{"field": "body.codes", "message": "must be a list"}],
        )
    bad = [index for index, item in enumerate(items) if not isinstance(item, str | dict)]
    if bad:
        raise ValidationFailed(
            "each item must be a code string or an object with a code",
            errors=[
                {"field": f"body.codes[{index}]", "message": "must be a string or an object"}
                for index in bad[:100]
            ],
        )
    # An object's code, pin and expiry are strings (or null) by the schema; their content is the
    # line's business (rejected lines), their type is the body's (refused whole).
    mistyped = [
        f"body.codes[{index}].{name}"
        for index, item in enumerate(items)
        if isinstance(item, dict)
        for name in _ITEM_FIELDS
        if item.get(name) is not None and not isinstance(item[name], str)
    ]
    if mistyped:
        raise ValidationFailed(
            "code, pin and expires_at must be strings",
            errors=[{"field": field, "message": "must be a string or null"} for field in mistyped[:100]],
        )
    return _json_lines(items)


_ITEM_FIELDS = ("code", "pin", "expires_at")


def _json_lines(items: list[Any]) -> Iterator[RawLine]:
    for index, item in enumerate(items, start=1):
        if isinstance(item, str):
            yield RawLine(index, item)
        else:
            yield RawLine(index, item.get("code"), item.get("pin"), item.get("expires_at"))


def code_product(session: Session, sku: str, partner: str | None = None) -> Product:
    """The code product `sku`; with `partner`, only if it is that partner's (another partner's
    product is as unknown to it as one that does not exist)."""
    product = session.scalar(select(Product).where(Product.sku == sku))
    if product is None or (
        partner is not None and (product.partner is None or product.partner.code != partner)
    ):
        raise not_found(f"product {sku}")
    if product.kind != "code":
        raise NotACodeProduct(
            f"{sku} is a {product.kind}: only code products have code pools",
        )
    return product


@lru_cache
def take_code_sql(*, when: str = "true", returning: str = "id, last4, fingerprint, expires_at") -> str:
    """The statement (or CTE body) that takes a code (sql/take_code.sql: earliest expiry first, from
    where the connection's last take of the product ended); `when` is an SQL condition that must hold
    for any code to be taken (a redemption's limits, decided in the same statement). Parameters:
    code_status, product, now."""
    return compose("take_code", when=when, returning=returning)


TAKE_CODE = take_code_sql(returning="id, last4, fingerprint, expires_at, code_enc, pin_enc, key_id")


@dataclass(frozen=True)
class TakenCode:
    id: int
    last4: str
    fingerprint: bytes
    expires_at: datetime | None
    code_enc: bytes
    pin_enc: bytes | None
    key_id: str | None


def take_code(db: Connection[Any], product_id: int, *, status: str, now: datetime) -> TakenCode | None:
    """Takes one available code of the product into `status` (`reserved` for a redemption until its
    SMS leaves, `issued` for a certificate handed over at once); None when the pool is empty."""
    row = db.execute(TAKE_CODE, {"code_status": status, "product": product_id, "now": now}).fetchone()
    if row is None:
        return None
    code_id, last4, fingerprint, expires_at, code_enc, pin_enc, key_id, _take_after = row
    return TakenCode(
        code_id,
        last4,
        bytes(fingerprint),
        expires_at,
        bytes(code_enc),
        bytes(pin_enc) if pin_enc is not None else None,
        key_id,
    )


def has_stock(db: Connection[Any], product_id: int, *, now: datetime) -> bool:
    """Whether a code of the product could be taken now (a hint: take_code decides)."""
    return (
        db.execute(
            "SELECT 1 FROM codes WHERE product_id = %(product)s AND status = 'available'"
            " AND coalesce(expires_at, 'infinity') > %(now)s LIMIT 1",
            {"product": product_id, "now": now},
        ).fetchone()
        is not None
    )


def issue_reserved_code(db: Connection[Any], code_id: int, *, now: datetime) -> None:
    """A reserved code has left us another way than by SMS (shown on the reward page): issued."""
    db.execute(
        "UPDATE codes SET status = 'issued', status_changed_at = %(now)s"
        " WHERE id = %(id)s AND status = 'reserved'",
        {"id": code_id, "now": now},
    )


def read_code(db: Connection[Any], code_id: int) -> tuple[str, str | None]:
    """A code and its PIN, decrypted (for the holder's own page, which shows them on a POST)."""
    row = db.execute(
        "SELECT code_enc, pin_enc, key_id FROM codes WHERE id = %(id)s", {"id": code_id}
    ).fetchone()
    if row is None:
        raise LookupError(f"no code {code_id}")
    vault = get_vault()
    code_enc, pin_enc, key_id = row
    return (
        vault.decrypt(bytes(code_enc), b"code", key_id),
        vault.decrypt(bytes(pin_enc), b"pin", key_id) if pin_enc is not None else None,
    )


def release_code(db: Connection[Any], code_id: int, *, now: datetime) -> None:
    """Puts a reserved code that never left back into its pool (a cancelled redemption)."""
    db.execute(
        "UPDATE codes SET status = 'available', status_changed_at = %(now)s WHERE id = %(id)s",
        {"id": code_id, "now": now},
    )


def _encrypt_chunk(vault: Vault, chunk: list[RawLine], now: datetime, result: ImportResult) -> list[tuple]:
    rows = []
    for raw in chunk:
        result.lines += 1
        try:
            if raw.error:
                raise LineRejected(raw.error)
            code = _clean(raw.code, "code", MAX_CODE_LENGTH, required=True) or ""
            pin = _clean(raw.pin, "pin", MAX_PIN_LENGTH, required=False)
            expires = parse_expiry(raw.expires_at, now)
        except LineRejected as exc:
            result.rejected += 1
            if len(result.rejected_lines) < MAX_REPORTED_LINES:
                result.rejected_lines.append(RejectedLine(raw.line, str(exc)))
            else:
                result.truncated = True
            continue
        rows.append(
            (
                raw.line,
                vault.fingerprint(code),
                code[-4:],
                vault.encrypt(code, b"code"),
                vault.encrypt(pin, b"pin") if pin else None,
                expires,
            )
        )
    return rows


def import_codes(
    session: Session,
    sku: str,
    lines: Iterable[RawLine],
    *,
    source: str,
    filename: str | None = None,
    sha256: str = "",
    api_key_id: int | None = None,
    partner: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Runs in the caller's transaction. `partner`: the uploading partner, who may fill only its own
    pools. `progress` gets the number of lines read so far."""
    product = code_product(session, sku, partner)
    vault = get_vault()
    now = datetime.now(UTC)
    upload = CodeUpload(
        product_id=product.id,
        source=source,
        filename=filename,
        sha256=sha256,
        lines=0,
        accepted=0,
        duplicates=0,
        rejected=0,
        api_key_id=api_key_id,
    )
    session.add(upload)
    session.flush()
    result = ImportResult(upload_id=upload.id, sku=sku)

    conn = driver(session)  # the psycopg connection, for COPY
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS code_staging (line int, fingerprint bytea, last4 text,"
            " code_enc bytea, pin_enc bytea, expires_at timestamptz) ON COMMIT DROP"
        )
        cur.execute("TRUNCATE code_staging")
        chunk: list[RawLine] = []

        def flush() -> None:
            rows = _encrypt_chunk(vault, chunk, now, result)
            with cur.copy("COPY code_staging FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "bytea", "text", "bytea", "bytea", "timestamptz"])
                for row in rows:
                    copy.write_row(row)
            chunk.clear()
            if progress:
                progress(result.lines)

        for raw in lines:
            chunk.append(raw)
            if len(chunk) >= CHUNK:
                flush()
        flush()
        cur.execute("ANALYZE code_staging")
        cur.execute(
            "INSERT INTO codes (product_id, partner_id, fingerprint, last4, code_enc, pin_enc, key_id,"
            " expires_at, upload_id) SELECT DISTINCT ON (fingerprint) %(product)s, %(partner)s, fingerprint,"
            " last4, code_enc, pin_enc, %(key_id)s, expires_at, %(upload)s"
            " FROM code_staging ORDER BY fingerprint, line"
            " ON CONFLICT (partner_id, fingerprint) DO NOTHING",
            {
                "product": product.id,
                "partner": product.partner_id,
                "upload": upload.id,
                "key_id": vault.key_id,
            },
        )
        result.accepted = cur.rowcount
        valid = result.lines - result.rejected
        result.duplicates = valid - result.accepted
        if result.duplicates:
            duplicates = conn.cursor(row_factory=scalar_row).execute(
                "SELECT s.line FROM code_staging s"
                " JOIN (SELECT fingerprint, min(line) AS first FROM code_staging GROUP BY fingerprint) f"
                "   USING (fingerprint)"
                " LEFT JOIN codes c ON c.partner_id = %(partner)s AND c.fingerprint = s.fingerprint"
                "   AND c.upload_id = %(upload)s"
                " WHERE c.id IS NULL OR s.line <> f.first ORDER BY s.line LIMIT %(limit)s",
                {"partner": product.partner_id, "upload": upload.id, "limit": MAX_REPORTED_LINES},
            )
            result.duplicate_lines = duplicates.fetchall()
            result.truncated = result.truncated or result.duplicates > len(result.duplicate_lines)
        cur.execute("DROP TABLE code_staging")

    upload.lines, upload.accepted = result.lines, result.accepted
    upload.duplicates, upload.rejected = result.duplicates, result.rejected
    session.flush()
    return result


def body_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lines_from_body(body: bytes, content_type: str) -> Iterator[RawLine]:
    media = content_type.split(";")[0].strip().lower()
    if media in CSV_MEDIA_TYPES:
        return read_csv(io.StringIO(csv_text(body), newline=""))
    if media == "application/json":
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise MalformedJson("the body is not valid JSON") from None
        return read_json(payload)
    raise UnsupportedMediaType(
        "send text/csv (code[,pin][,expires_at]), multipart/form-data (the CSV as `file`)"
        " or application/json",
    )


@dataclass
class StockLine:
    sku: str
    partner: str | None
    available: int
    reserved: int
    issued: int
    voided: int
    expired: int
    expiring_soon: int
    low_stock: bool


# Per code product: available (not expired), reserved, issued, voided, expired, and expiring before
# %(soon)s; a partner's own products when %(partner)s is given.
STOCK = load("stock")


def stock(
    session: Session, *, partner: str | None = None, expiring_days: int = 30, default_threshold: int = 50
) -> list[StockLine]:
    """One aggregate over the pool (index-only for most of it); products with no codes show zeros."""
    soon = datetime.now(UTC) + timedelta(days=expiring_days)
    params: dict[str, Any] = {"soon": soon, "partner": partner}
    rows = session.connection().exec_driver_sql(STOCK, params)
    return [
        StockLine(
            r.sku,
            r.partner,
            r.available,
            r.reserved,
            r.issued,
            r.voided,
            r.expired,
            r.expiring_soon,
            r.available < (r.low_stock_threshold if r.low_stock_threshold is not None else default_threshold),
        )
        for r in rows
    ]
