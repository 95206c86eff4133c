"""How schemathesis sends a text/csv body (imported by the schemathesis tests; registering is global)."""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.serializer("text/csv")
def _csv(ctx: Any, value: Any) -> bytes:
    # A CSV upload is `type: string`. A negative case that is not a string has no text form: sent as
    # its JSON text it would be a perfectly valid CSV file (`[]` is one line), so it goes on the wire
    # as bytes that are no text at all (not UTF-8), which is what "not a string" can mean for text/csv.
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return b"\xff" + json.dumps(value).encode()


# A campaign's file (PUT /v1/campaigns/{id}/lines): JSON Lines and XLSX are binary strings as well;
# whatever the value, its bytes go on the wire, and the service answers each with a report or a refusal.
@schemathesis.serializer(
    "application/jsonl",
    "application/x-ndjson",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
)
def _campaign_file(ctx: Any, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return b"\xff" + json.dumps(value).encode()
