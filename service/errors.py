"""RFC 9457 problem details with a stable machine `code`, for every error the API returns."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

PROBLEM_MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    field: str = Field(description="Dotted location of the offending field, e.g. body.msisdn")
    message: str
    type: str | None = None


class ProblemDetails(BaseModel):
    type: str = Field(
        description="URI of the problem type", examples=["https://rewards.example/problems/out_of_stock"]
    )
    title: str
    status: int
    detail: str | None = None
    code: str = Field(description="Stable machine-readable code", examples=["validation_error"])
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class Problem(Exception):
    """Raised by domain and HTTP code alike; the app turns it into problem+json."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(detail or title)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.errors = errors
        self.headers = headers

    def body(self, instance: str | None = None, request_id: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://rewards.example/problems/{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if instance:
            body["instance"] = instance
        if request_id:
            body["request_id"] = request_id
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def not_found(what: str) -> Problem:
    return Problem(404, "not_found", "Not found", f"{what} not found")


def forbidden(detail: str = "this key may not do that") -> Problem:
    return Problem(403, "forbidden", "Forbidden", detail)


def validation_error(detail: str, errors: list[dict[str, Any]] | None = None) -> Problem:
    return Problem(422, "validation_error", "Validation failed", detail, errors=errors or [])


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Bad request",
        401: "Missing or invalid API key",
        403: "Wrong role or scope",
        404: "Not found (or outside the key's scope)",
        409: "Conflict",
        413: "Body too large",
        415: "Unsupported media type",
        422: "Validation failed",
        423: "Locked",
        429: "Too many requests",
        503: "Dependency unavailable",
    }
    return {
        s: {
            "model": ProblemDetails,
            "description": descriptions[s],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
        }
        for s in statuses
    }


# Documented on every authenticated route, so clients and schemathesis know every status we send.
AUTH_RESPONSES = _responses(400, 401, 403, 404, 413, 415, 422)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {**AUTH_RESPONSES, **_responses(*statuses)}
