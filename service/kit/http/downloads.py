"""Downloads (CSV, JSON Lines, XLSX, PDF) as the OpenAPI document describes them: bytes, i.e. binary
string schemas, under each media type the route sends, and under `application/octet-stream` first.

A generated client reads a response by its first media type it knows (openapi-python-client: JSON,
`text/*` as text, octet-stream as bytes); listing octet-stream first makes it hand a download over
as bytes, whichever file it is. The route sends the file's own media type, or octet-stream when the
client's Accept header asks for octet-stream and not for the file's type."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

OCTET_STREAM = "application/octet-stream"


def _binary(media_type: str) -> dict[str, Any]:
    return {"schema": {"type": "string", "format": "binary", "contentMediaType": media_type}}


def download_response(description: str, *media_types: str) -> dict[int | str, dict[str, Any]]:
    """The 200 response of a download route (for `responses=`)."""
    content = {OCTET_STREAM: _binary(OCTET_STREAM)}
    content.update({media_type: _binary(media_type.split(";")[0]) for media_type in media_types})
    return {200: {"description": description, "content": content}}


def download_media_type(request: Request, media_type: str) -> str:
    """The file's media type, or octet-stream when the client asks for that and not for the type."""
    accept = request.headers.get("accept", "")
    wanted = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    essence = media_type.split(";")[0].strip().lower()
    if OCTET_STREAM in wanted and essence not in wanted:
        return OCTET_STREAM
    return media_type
