"""A campaign's recipients file (CSV, JSONL or XLSX) read line by line into phones, offers and refs.

Pure: no database, no HTTP. `read_upload` refuses a file that cannot be read as a whole (UploadRefused,
before it returns) and otherwise returns what it detected and an iterator that streams the lines, each
a `Line` or a `LineError`, in constant memory.

Limits (`max_lines`, default 1 000 000) count data lines: the lines that give a `Line` or a `LineError`,
not the header nor blank lines. CSV and JSONL are counted before `read_upload` returns (one streamed
pass), so a file over the limit is refused up front. An XLSX sheet is counted as it is read: its
iterator raises UploadRefused("too_many_lines") instead of yielding line max_lines + 1 (the caller
must then discard what it took from that file). The iterators of CSV and JSONL keep the same guard
should the file change between the two passes.

Phones: spreadsheets drop the leading + (fine: `77011234567` is normalised) and turn long numbers into
scientific notation (`7.70123E+10`): that line is an error, phone_scientific_notation; the digits are
never guessed. Normalisation is `service.kit.values.phones.normalize_msisdn`'s, with a fast path for the
common forms of Kazakhstan mobile numbers (tests prove the two agree). No message carries a full phone:
`masked_phone` keeps the country code and operator prefix only.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import pathlib
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import openpyxl
from openpyxl.utils.exceptions import InvalidFileException

from service.kit.values.phones import normalize_msisdn

MAX_REF = 64
MAX_OFFER = 64
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # as a person sees it: header = 1, first data row = 2; JSONL/headerless: first line = 1
    phone: str  # E.164, e.g. +77011234567
    offer: str | None  # None: the campaign's default offer
    ref: str  # the external reference, or str(number) when the line has none


@dataclass(frozen=True, slots=True)
class LineError:
    number: int
    code: str  # invalid_phone, phone_scientific_notation, not_mobile, missing_phone, extra_columns, ...
    message: str  # for people; a phone in it is always masked


@dataclass(frozen=True)
class Detected:
    format: str  # "csv" | "jsonl" | "xlsx"
    encoding: str | None  # "utf-8", "utf-8-sig" (BOM), "windows-1251"; None for xlsx
    separator: str | None  # "," or ";" for csv, else None
    header: bool  # whether a header row was recognised


_Upload = tuple[Detected, Iterator[Line | LineError]]


class UploadRefused(Exception):
    """The file as a whole cannot be read: nothing of it is used.

    Codes: empty_file, header_only, unknown_format, unreadable_file, missing_phone_column,
    duplicate_column, too_many_lines.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# --- phones ---------------------------------------------------------------------------------------

# The operator prefixes (the 3 digits after +7) that the numbering plan in `phonenumbers` calls
# Kazakhstan mobile: 7(?:0[0-25-8]|47|6[0-4]|7[15-8]|85)\d{7}. A test checks every prefix 700-799
# against normalize_msisdn, so a change of the plan in a new `phonenumbers` shows up there.
_KZ_MOBILE_PREFIXES = frozenset(
    {"700", "701", "702", "705", "706", "707", "708", "747", "760", "761", "762", "763", "764"}
    | {"771", "775", "776", "777", "778", "785"}
)
_SEPARATORS = str.maketrans("", "", " -()\u00a0")
_MASK_SEPARATORS = str.maketrans("", "", " -().\t\u00a0")
# 7.70123E+10, 7,70123E+10, 7.7012E10, 77E9: what a spreadsheet makes of a long number.
_SCIENTIFIC = re.compile(r"\s*\+?\d+(?:[.,]\d*)?[eE][+-]?\d+\s*")


def masked_phone(raw: str) -> str:
    """'+77011234567' -> '+7 701 …': the country code and operator prefix only.

    Anything that is not a Kazakhstan-shaped number shows at most its first 4 characters (fewer for a
    short one) and '…'.
    """
    text = raw.strip()
    compact = text.translate(_MASK_SEPARATORS)
    plus = compact.startswith("+")
    digits = compact[1:] if plus else compact
    if digits.isascii() and digits.isdigit():
        if len(digits) == 11 and (digits[0] == "7" or (digits[0] == "8" and not plus)):
            return f"+7 {digits[1:4]} …"
        if len(digits) == 10 and not plus:
            return f"+7 {digits[:3]} …"
    return text[: min(4, len(text) // 3)] + "…"


def _fast_msisdn(raw: str) -> str | None:
    """E.164 for the common forms of a Kazakhstan mobile number, None for anything else."""
    text = raw.translate(_SEPARATORS)
    if text.startswith("+"):
        digits = text[1:]
        if len(digits) == 11 and digits[0] == "7" and digits.isascii() and digits.isdigit():
            return text if digits[1:4] in _KZ_MOBILE_PREFIXES else None
        return None
    if not (text.isascii() and text.isdigit()):
        return None
    if len(text) == 11 and text[0] in "78":
        return "+7" + text[1:] if text[1:4] in _KZ_MOBILE_PREFIXES else None
    if len(text) == 10:
        return "+7" + text if text[:3] in _KZ_MOBILE_PREFIXES else None
    return None


def _phone(raw: str) -> tuple[str, str] | str:
    """The E.164 phone, or (code, message) when the line's phone is not a usable mobile number."""
    fast = _fast_msisdn(raw)
    if fast is not None:
        return fast
    if _SCIENTIFIC.fullmatch(raw):
        return (
            "phone_scientific_notation",
            f"phone {masked_phone(raw)}: in scientific notation, its digits are lost (a spreadsheet "
            "turned it into a number); export the phone column as text",
        )
    try:
        phone = normalize_msisdn(raw)
    except ValueError as error:
        reason = str(error)
    else:
        if len(phone) == 12 and phone.startswith("+7") and phone[2:5] in _KZ_MOBILE_PREFIXES:
            return phone
        # Another country's mobile (+7 9.. is Russia's): a campaign's SMS go to Kazakh subscribers only.
        reason = "not a mobile number of Kazakhstan"
    masked = masked_phone(raw)
    if reason.startswith("not a mobile number"):
        return "not_mobile", f"phone {masked}: not a Kazakhstan mobile number (an SMS cannot reach it)"
    return "invalid_phone", f"phone {masked}: not a valid phone number"


def _line(number: int, phone: str | None, offer: str | None, ref: str | None) -> Line | LineError:
    """One data line from its (text) cells: phone checked and normalised, offer and ref trimmed."""
    phone = phone.strip() if phone is not None else ""
    if not phone:
        return LineError(number, "missing_phone", "no phone on this line")
    offer = offer.strip() if offer is not None else ""
    if len(offer) > MAX_OFFER:
        return LineError(number, "offer_too_long", f"offer is {len(offer)} characters, at most {MAX_OFFER}")
    ref = ref.strip() if ref is not None else ""
    if len(ref) > MAX_REF:
        return LineError(number, "ref_too_long", f"ref is {len(ref)} characters, at most {MAX_REF}")
    result = _phone(phone)
    if isinstance(result, tuple):
        return LineError(number, *result)
    return Line(number, result, offer or None, ref or str(number))


# --- columns --------------------------------------------------------------------------------------

_COLUMN_NAMES = {
    **dict.fromkeys(("phone", "msisdn", "телефон", "номер", "phone_number", "номер_телефона"), "phone"),
    **dict.fromkeys(("offer", "оффер", "предложение"), "offer"),
    **dict.fromkeys(("ref", "external_ref", "external_id", "reference"), "ref"),
}
_POSITIONAL = ("phone", "offer", "ref")


@dataclass(frozen=True, slots=True)
class _Columns:
    """Where phone, offer and ref are in a row (None: no such column) and how many columns there are."""

    phone: int
    offer: int | None
    ref: int | None
    width: int


def _column_key(cell: object) -> str:
    text = "" if cell is None else str(cell)
    return " ".join(text.strip().strip("\ufeff").casefold().replace("-", " ").replace("_", " ").split())


def _header(first_row: list[str]) -> _Columns | None:
    """The columns a header row names, or None when the row is data (positional columns).

    A row is a header when one of its cells is a known column name; its other cells name columns that
    are ignored. A row of words none of which is known is a header without a phone column.
    """
    names = [_COLUMN_NAMES.get(_column_key(cell).replace(" ", "_")) for cell in first_row]
    if not any(names):
        first = _column_key(first_row[0]) if first_row else ""
        if first and not any(char.isdigit() for char in first) and any(char.isalpha() for char in first):
            raise UploadRefused(
                "missing_phone_column",
                "the first row names no phone column: call it phone (or msisdn, телефон, номер)",
            )
        return None
    for name in _POSITIONAL:
        if names.count(name) > 1:
            raise UploadRefused("duplicate_column", f"the header names the {name} column twice")
    if "phone" not in names:
        raise UploadRefused(
            "missing_phone_column",
            "the header names no phone column: call it phone (or msisdn, телефон, номер)",
        )
    index = {name: position for position, name in enumerate(names) if name}
    return _Columns(index["phone"], index.get("offer"), index.get("ref"), len(first_row))


_HEADERLESS = _Columns(0, 1, 2, 3)


def _row_line(number: int, cells: list[str], columns: _Columns) -> Line | LineError:
    if len(cells) > columns.width and any(cell.strip() for cell in cells[columns.width :]):
        return LineError(
            number, "extra_columns", f"{len(cells)} cells on this line, the file has {columns.width} columns"
        )

    def cell(position: int | None) -> str | None:
        return cells[position] if position is not None and position < len(cells) else None

    return _line(number, cell(columns.phone), cell(columns.offer), cell(columns.ref))


def _is_blank(cells: list[str]) -> bool:
    return not any(cell.strip() for cell in cells)


# --- format ---------------------------------------------------------------------------------------

_CONTENT_TYPES = {
    "text/csv": "csv",
    "application/csv": "csv",
    "text/comma-separated-values": "csv",
    "application/jsonl": "jsonl",
    "application/x-ndjson": "jsonl",
    "application/x-jsonlines": "jsonl",
    "application/jsonlines": "jsonl",
    XLSX_MIME: "xlsx",
}
# Say nothing of the format: a browser sends a .csv as application/vnd.ms-excel where Excel is installed.
_GENERIC_TYPES = {
    "",
    "application/octet-stream",
    "text/plain",
    "application/vnd.ms-excel",
    "application/json",
}
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".xlsx": "xlsx"}
_GENERIC_EXTENSIONS = {"", ".txt", ".dat", ".json"}
_CHUNK = 1 << 20


def _declared_format(filename: str | None, content_type: str | None) -> str | None:
    """The format the upload says it is, None when it says nothing useful. Raises unknown_format."""
    mime = (content_type or "").split(";")[0].strip().lower()
    if mime in _CONTENT_TYPES:
        return _CONTENT_TYPES[mime]
    suffix = pathlib.PurePath(filename).suffix.lower() if filename else ""
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if suffix in {".xls", ".xlsb", ".ods", ".numbers", ".tsv", ".pdf", ".doc", ".docx", ".zip"}:
        raise UploadRefused("unknown_format", f"a {suffix} file: send CSV, JSONL or XLSX")
    if mime not in _GENERIC_TYPES and suffix not in _GENERIC_EXTENSIONS:
        raise UploadRefused("unknown_format", "send CSV, JSONL or XLSX")
    return None


def _sniff_format(head: bytes) -> str:
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.startswith(b"\xd0\xcf\x11\xe0"):
        raise UploadRefused("unknown_format", "an old Excel (.xls) file: save it as .xlsx or CSV")
    if head.startswith(b"%PDF"):
        raise UploadRefused("unknown_format", "a PDF file: send CSV, JSONL or XLSX")
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"{"):
        return "jsonl"
    if text.startswith(b"["):
        raise UploadRefused("unknown_format", "a JSON array: send JSON Lines, one object per line")
    return "csv"


def read_upload(
    path: pathlib.Path,
    *,
    filename: str | None = None,
    content_type: str | None = None,
    max_lines: int = 1_000_000,
) -> tuple[Detected, Iterator[Line | LineError]]:
    """What the file is and its lines, streamed. Raises UploadRefused for a file unusable as a whole.

    The iterator raises UploadRefused("too_many_lines") instead of yielding line max_lines + 1 of an
    XLSX sheet (CSV and JSONL over the limit are refused before this returns).
    """
    with open(path, "rb") as file:
        head = file.read(4096)
    if len(head) < 4096 and not head.strip(b"\xef\xbb\xbf \t\r\n"):
        raise UploadRefused("empty_file", "the file is empty")  # (a longer one is counted by its reader)
    fmt = _declared_format(filename, content_type) or _sniff_format(head)
    if fmt == "xlsx":
        return _read_xlsx(path, head, max_lines)
    encoding = _text_encoding(path, head)
    if fmt == "jsonl":
        if encoding == "windows-1251":
            raise UploadRefused("unreadable_file", "a JSON Lines file must be UTF-8")
        return _read_jsonl(path, encoding, max_lines)
    return _read_csv(path, encoding, max_lines)


# --- text files -----------------------------------------------------------------------------------

# Bytes that text never has: C0 controls but tab, line feed, form feed, carriage return; and DEL.
_CONTROL = bytes([*range(0, 9), 11, *range(14, 32), 127])


def _text_encoding(path: pathlib.Path, head: bytes) -> str:
    """utf-8-sig (a BOM), utf-8, or windows-1251 when the bytes are not UTF-8 but read as text."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UploadRefused("unreadable_file", "a UTF-16 file: save it as CSV UTF-8")
    size = controls = 0
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            if b"\0" in chunk:
                raise UploadRefused("unreadable_file", "a binary file, not text (it has NUL bytes)")
            size += len(chunk)
            controls += len(chunk) - len(chunk.translate(None, _CONTROL))
    if controls > max(2, size // 100):
        raise UploadRefused("unreadable_file", "a binary file, not text (it has control characters)")
    if _decodes(path, "utf-8"):
        return "utf-8-sig" if head.startswith(codecs.BOM_UTF8) else "utf-8"
    if _decodes(path, "cp1251"):
        return "windows-1251"
    raise UploadRefused("unreadable_file", "neither UTF-8 nor Windows-1251 text: save it as CSV UTF-8")


def _decodes(path: pathlib.Path, encoding: str) -> bool:
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with open(path, "rb") as file:
            while chunk := file.read(_CHUNK):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _open_text(path: pathlib.Path, encoding: str) -> io.TextIOWrapper:
    return io.TextIOWrapper(open(path, "rb", buffering=_CHUNK), encoding=encoding, newline="")


def _separator(path: pathlib.Path, encoding: str) -> str:
    """';' or ',': whichever the first non-blank line has more of outside quotes (',' on a tie).

    A first line with neither (a header of one column) leaves it to the next lines, up to 100.
    """
    with _open_text(path, encoding) as text:
        for line in itertools.islice((line for line in text if line.strip()), 100):
            counts = {",": 0, ";": 0}
            quoted = False
            for char in line:
                if char == '"':
                    quoted = not quoted
                elif not quoted and char in counts:
                    counts[char] += 1
            if counts[";"] or counts[","]:
                return ";" if counts[";"] > counts[","] else ","
    return ","


def _csv_records(text: Iterable[str], separator: str) -> Iterator[tuple[int, list[str]]]:
    """(the line a record starts on, its cells) for every non-blank record."""
    reader = csv.reader(text, delimiter=separator, quotechar='"', doublequote=True, strict=False)
    end = 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if cells and not _is_blank(cells):
                yield start, cells
    except csv.Error as error:
        raise UploadRefused(
            "unreadable_file", f"line {reader.line_num}: {error} (an unclosed quote?)"
        ) from None


def _read_csv(path: pathlib.Path, encoding: str, max_lines: int) -> _Upload:
    separator = _separator(path, encoding)
    count = 0
    columns: _Columns | None = None
    with _open_text(path, encoding) as text:
        for _number, cells in _csv_records(text, separator):
            if count == 0:
                columns = _header(cells)
            count += 1
    if count == 0:
        raise UploadRefused("empty_file", "the file has no lines")
    data = count - 1 if columns is not None else count
    if data == 0:
        raise UploadRefused("header_only", "the file has a header and no lines")
    if data > max_lines:
        raise UploadRefused("too_many_lines", f"{data} lines, at most {max_lines} in one file")
    detected = Detected("csv", encoding, separator, columns is not None)
    return detected, _csv_lines(path, encoding, separator, columns, max_lines)


def _csv_lines(
    path: pathlib.Path, encoding: str, separator: str, columns: _Columns | None, max_lines: int
) -> Iterator[Line | LineError]:
    with _open_text(path, encoding) as text:
        records = _csv_records(text, separator)
        if columns is not None:
            next(records)
        for count, (number, cells) in enumerate(records, start=1):
            if count > max_lines:
                raise UploadRefused("too_many_lines", f"more than {max_lines} lines in one file")
            yield _row_line(number, cells, columns or _HEADERLESS)


class _JsonFloat(str):
    """A JSON number with a fraction or an exponent, kept as its source text."""


_FIELDS = {"phone": "phone", "msisdn": "phone", "offer": "offer", "ref": "ref"}
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")


def _read_jsonl(path: pathlib.Path, encoding: str, max_lines: int) -> _Upload:
    count = 0
    with open(path, encoding=encoding, newline=None) as text:
        for line in text:
            if line.strip():
                count += 1
    if count == 0:
        raise UploadRefused("empty_file", "the file has no lines")
    if count > max_lines:
        raise UploadRefused("too_many_lines", f"{count} lines, at most {max_lines} in one file")
    return Detected("jsonl", encoding, None, False), _jsonl_lines(path, encoding, max_lines)


def _jsonl_lines(path: pathlib.Path, encoding: str, max_lines: int) -> Iterator[Line | LineError]:
    count = 0
    with open(path, encoding=encoding, newline=None, buffering=_CHUNK) as text:
        for number, line in enumerate(text, start=1):
            if not line.strip():
                continue
            count += 1
            if count > max_lines:
                raise UploadRefused("too_many_lines", f"more than {max_lines} lines in one file")
            yield _jsonl_line(number, line)


def _jsonl_line(number: int, line: str) -> Line | LineError:
    try:
        value = json.loads(line, parse_float=_JsonFloat)
    except ValueError as error:
        message = error.msg if isinstance(error, json.JSONDecodeError) else "not JSON"
        return LineError(number, "invalid_json", f"not valid JSON: {message}")
    if not isinstance(value, dict):
        return LineError(number, "invalid_json", "not a JSON object: write one object per line")
    fields: dict[str, Any] = {}
    for key, item in value.items():
        name = _FIELDS.get(key)
        if name is None:
            shown = repr(key) if _FIELD_NAME.fullmatch(key) else "a field"
            message = f"unknown field {shown}: the fields are phone, offer, ref"
            return LineError(number, "unknown_field", message)
        if name in fields:
            return LineError(number, "duplicate_field", "both phone and msisdn: give one")
        fields[name] = item
    phone = fields.get("phone")
    if isinstance(phone, _JsonFloat):
        if "e" in phone.lower():
            return LineError(number, *_phone(phone))  # scientific notation
        return LineError(number, "invalid_phone", f"phone {masked_phone(phone)}: a number with a fraction")
    texts: dict[str, str | None] = {}
    for name in _POSITIONAL:
        item = fields.get(name)
        if item is None or isinstance(item, str):
            texts[name] = item
        elif isinstance(item, int) and not isinstance(item, bool):
            texts[name] = str(item)
        elif isinstance(item, _JsonFloat) and name != "phone":
            texts[name] = str(item)
        else:
            return LineError(number, f"invalid_{name}", f"{name} must be a string")
    return _line(number, texts["phone"], texts["offer"], texts["ref"])


# --- xlsx -----------------------------------------------------------------------------------------


def _read_xlsx(path: pathlib.Path, head: bytes, max_lines: int) -> _Upload:
    if not head.startswith(b"PK\x03\x04") or not zipfile.is_zipfile(path):
        raise UploadRefused("unreadable_file", "not an XLSX file (an XLSX file is a zip archive)")
    rows = _xlsx_rows(path)
    first = next(rows, None)
    if first is None:
        raise UploadRefused("empty_file", "the first sheet is empty")
    _, cells = first
    columns = _header([_cell_text(cell) for cell in cells])
    if columns is None:
        data = itertools.chain([first], rows)
    else:
        second = next(rows, None)
        if second is None:
            raise UploadRefused("header_only", "the first sheet has a header and no lines")
        data = itertools.chain([second], rows)
    detected = Detected("xlsx", None, None, columns is not None)
    return detected, _xlsx_lines(data, columns or _HEADERLESS, max_lines)


def _xlsx_rows(path: pathlib.Path) -> Iterator[tuple[int, list[Any]]]:
    """(sheet row number, cells) for the non-blank rows of the first sheet."""

    handle = open(path, "rb")  # a file, not a path: openpyxl would refuse a name not ending in .xlsx
    try:
        book = openpyxl.load_workbook(handle, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, ValueError, OSError) as error:
        handle.close()
        raise UploadRefused("unreadable_file", f"a broken XLSX file ({type(error).__name__})") from None
    try:
        if not book.worksheets:
            raise UploadRefused("unreadable_file", "the XLSX file has no sheet")
        sheet = book.worksheets[0]
        if hasattr(sheet, "reset_dimensions"):
            sheet.reset_dimensions()  # some writers declare A1:A1: read every row that is there
        try:
            # iter_rows fills the rows a sheet leaves out, so the count is the sheet's row number
            for number, row in enumerate(sheet.iter_rows(), start=1):
                cells = list(row)
                if any(_cell_text(cell).strip() for cell in cells):
                    yield number, cells
        except (zipfile.BadZipFile, KeyError, ValueError, OSError, SyntaxError) as error:
            raise UploadRefused("unreadable_file", f"a broken XLSX sheet ({type(error).__name__})") from None
    finally:
        book.close()
        handle.close()


def _cell_text(cell: Any) -> str:
    """A cell's value as text: numbers with an integer value as their digits, None as ''."""
    value = getattr(cell, "value", None)
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


_SCIENTIFIC_FORMAT = re.compile(r"[eE][+-]")


def _xlsx_number_problem(number: int, cell: Any) -> LineError | None:
    """The error of a phone cell holding a number that cannot be taken as a phone's digits, else None.

    An integer is the digits, and so is a float with an integer value (openpyxl reads a number as a
    float when the file wrote it with a '.' or an exponent). A number shown in scientific notation is
    not: Excel gives that format to what was typed or pasted as 7.70123E+10, whose digits are lost.
    """
    value = getattr(cell, "value", None)
    if isinstance(value, bool):
        return LineError(number, "invalid_phone", "phone: TRUE or FALSE is not a phone number")
    if not isinstance(value, int | float):
        return None
    if _SCIENTIFIC_FORMAT.search(str(getattr(cell, "number_format", "") or "")):
        text = f"{value:.5E}"
        return LineError(
            number,
            "phone_scientific_notation",
            f"phone {masked_phone(text)}: in scientific notation, its digits are lost (a spreadsheet "
            "turned it into a number); format the phone column as text",
        )
    if isinstance(value, float) and not value.is_integer():
        message = f"phone {masked_phone(repr(value))}: a number with a fraction"
        return LineError(number, "invalid_phone", message)
    return None


def _xlsx_lines(
    rows: Iterator[tuple[int, list[Any]]], columns: _Columns, max_lines: int
) -> Iterator[Line | LineError]:
    for count, (number, cells) in enumerate(rows, start=1):
        if count > max_lines:
            raise UploadRefused("too_many_lines", f"more than {max_lines} lines in one file")
        texts = [_cell_text(cell) for cell in cells]
        line = _row_line(number, texts, columns)
        if isinstance(line, Line) or line.code in {"invalid_phone", "phone_scientific_notation"}:
            problem = _xlsx_number_problem(number, cells[columns.phone])
            if problem is not None:
                line = problem
        yield line
