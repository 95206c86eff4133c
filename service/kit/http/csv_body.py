"""CSV uploads: what a CSV body must be, how the OpenAPI document describes it, and reading it from
either form a client may send.

A CSV upload is sent either as the request body (`Content-Type: text/csv`) or as the `file` part of a
`multipart/form-data` body (what generated clients send: openapi-python-client has no text/csv
bodies). Either way the file must be UTF-8 text (a BOM is allowed) that is CSV: its first character
(after the BOM) is not `{` or `[` (nor another BOM), so a JSON document sent as CSV is refused whole with 422
`not_csv` instead of being read as a one-column line. Empty is allowed (a file of no lines). The
text/csv schema's `pattern` states the same rule, so that a body valid by the schema is never
refused as not CSV."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request

from service.kit.http.errors import Problem

CSV_MEDIA_TYPES = ("text/csv", "text/plain", "application/csv")
MULTIPART = "multipart/form-data"
FILE_FIELD = "file"
# Empty, or a first character (after an optional BOM) that does not open a JSON object or array
# (nor is a second BOM).
CSV_PATTERN = r"^\ufeff?(?:[^\[{\ufeff][\s\S]*)?$"


class NotCsv(Problem):
    """The body is not a CSV file of UTF-8 text (a JSON document, binary data)."""

    status, code, title = 422, "not_csv", "Not a CSV file"


def csv_text(data: bytes) -> str:
    """The text of a CSV upload (without its BOM), or NotCsv."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NotCsv(
            "the file must be UTF-8 text", errors=[{"field": "body", "message": "not UTF-8"}]
        ) from None
    if text[:1] in ("{", "[", "\ufeff"):
        raise NotCsv(
            "this is JSON, not CSV: send a CSV file (see the operation's columns)",
            errors=[{"field": "body", "message": "starts with { or [: JSON, not CSV"}],
        )
    return text


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def csv_upload(request: Request) -> bytes | None:
    """The CSV file's bytes from a text/csv body or the `file` part of a multipart body; None for any
    other media type (the caller decides: another format, or 415)."""
    media = media_type(request)
    if media in CSV_MEDIA_TYPES:
        return await request.body()
    if media != MULTIPART:
        return None
    # The file part and nothing else (the schema allows no other property): another field is 400.
    form = await request.form(max_files=1, max_fields=0)
    try:
        part = form.get(FILE_FIELD)
        if isinstance(part, UploadFile):
            return await part.read()
    finally:
        await form.close()
    raise NotCsv(
        f"a multipart upload carries the CSV file in its `{FILE_FIELD}` part",
        errors=[{"field": f"body.{FILE_FIELD}", "message": "missing"}],
    )


def csv_request_body(example: str, columns: str, **others: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI requestBody (for openapi_extra) of a CSV upload: text/csv and multipart with the
    file as bytes, plus `others` (media type -> media object)."""
    return {
        "requestBody": {
            "required": True,
            "description": f"A CSV file, UTF-8: {columns}. As the body (text/csv) or as the `file` part"
            " of multipart/form-data. A body that starts with `{` or `[` is JSON, not CSV: 422 `not_csv`.",
            "content": {
                "text/csv": {
                    "schema": {"type": "string", "pattern": CSV_PATTERN},
                    "example": example,
                },
                MULTIPART: {
                    "schema": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": [FILE_FIELD],
                        "properties": {
                            FILE_FIELD: {
                                "type": "string",
                                "format": "binary",
                                "contentMediaType": "text/csv",
                                "description": f"The CSV file: {columns}",
                            }
                        },
                    },
                    "encoding": {FILE_FIELD: {"contentType": "text/csv"}},
                    "example": {FILE_FIELD: example},
                },
                **others,
            },
        }
    }
