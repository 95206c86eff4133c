"""RFC 9457 problem details with a stable machine `code`, for every error the API returns.

Each domain names its refusals as `Problem` subclasses in its own `errors.py` (status, code and title
on the class, the detail per instance); the problems every route shares live here. A route documents
its error responses by naming the classes it may raise (`responses(...)`), so the OpenAPI document
lists, per operation and status, exactly the codes a client can meet."""

from __future__ import annotations

from collections import defaultdict
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
    """Raised by domain and HTTP code alike; the app turns it into problem+json. Subclasses set
    `status`, `code` and `title`; `extensions` are extra members of the body (RFC 9457 allows them)."""

    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ):
        super().__init__(detail or self.title)
        self.detail = detail
        self.errors = errors
        self.headers = headers
        self.extensions = extensions

    @classmethod
    def of(cls, status: int, code: str, title: str, detail: str | None = None, **kwargs: Any) -> Problem:
        """A problem named at run time (an HTTP status the framework raised), not by a class."""
        problem = cls(detail, **kwargs)
        problem.status, problem.code, problem.title = status, code, title
        return problem

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
        body.update(self.extensions)
        return body


# --- problems every route may answer --------------------------------------------------------------


class BadRequest(Problem):
    status, code, title = 400, "bad_request", "Bad request"


class MalformedJson(Problem):
    status, code, title = 400, "malformed_json", "Malformed JSON"


class InvalidRange(Problem):
    """Two bounds each valid alone that make no range (the first after the last): JSON Schema cannot
    compare two parameters."""

    status, code, title = 422, "invalid_range", "Empty range"


class Unauthorized(Problem):
    status, code, title = 401, "unauthorized", "Unauthorized"

    def __init__(self, detail: str | None = None, **kwargs: Any):
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **kwargs)


class Forbidden(Problem):
    status, code, title = 403, "forbidden", "Forbidden"


class NotFound(Problem):
    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(Problem):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class PayloadTooLarge(Problem):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(Problem):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class ValidationFailed(Problem):
    status, code, title = 422, "validation_error", "Validation failed"

    def __init__(
        self, detail: str | None = None, *, errors: list[dict[str, Any]] | None = None, **kwargs: Any
    ):
        super().__init__(detail, errors=errors if errors is not None else [], **kwargs)


class InvalidMsisdn(Problem):
    """A phone number of the published form (E.164 or a local form) that the numbering plan does not
    know as a mobile number: no SMS could reach it. JSON Schema can state the form, not the plan."""

    status, code, title = 422, "invalid_msisdn", "Not a mobile number"


class InvalidCardNumber(Problem):
    """16 digits whose last one is not their Luhn check digit: a mistyped number, no card has it."""

    status, code, title = 422, "invalid_card_number", "Invalid card number"


# Field errors (pydantic error types) that are refusals of their own, not "the request breaks the
# schema": a body whose only errors are of one of these types is answered with that problem.
SEMANTIC_ERRORS: dict[str, type[Problem]] = {
    InvalidMsisdn.code: InvalidMsisdn,
    InvalidCardNumber.code: InvalidCardNumber,
}


def field_errors_problem(errors: list[dict[str, Any]], detail: str) -> Problem:
    """validation_error with these field errors, unless they are all one semantic refusal."""
    kinds = {e.get("type") for e in errors}
    if len(kinds) == 1:
        semantic = SEMANTIC_ERRORS.get(str(next(iter(kinds))))
        if semantic is not None:
            return semantic(detail, errors=errors)
    return ValidationFailed(detail, errors=errors)


class RateLimited(Problem):
    status, code, title = 429, "rate_limited", "Too many requests"


class InternalError(Problem):
    status, code, title = 500, "internal_error", "Internal error"


class NotReady(Problem):
    status, code, title = 503, "not_ready", "Not ready"


class ServiceUnavailable(Problem):
    status, code, title = 503, "service_unavailable", "Service unavailable"


# --- idempotency, shared by every route that creates something ------------------------------------


class IdempotencyKeyMissing(Problem):
    status, code, title = 400, "idempotency_key_missing", "Idempotency-Key missing"


class IdempotencyInProgress(Problem):
    status, code, title = 409, "idempotency_in_progress", "Request in progress"


class IdempotencyConflict(Problem):
    status, code, title = 422, "idempotency_conflict", "Idempotency-Key reused"


def not_found(what: str) -> Problem:
    return NotFound(f"{what} not found")


def forbidden(detail: str = "this key may not do that") -> Problem:
    return Forbidden(detail)


# --- documentation --------------------------------------------------------------------------------

# Answered by every authenticated route, so clients and schemathesis know every status we send
# (503 service_unavailable, with Retry-After, while the database is away).
AUTH_PROBLEMS: tuple[type[Problem], ...] = (
    BadRequest,
    MalformedJson,
    Unauthorized,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    ServiceUnavailable,
)

_DESCRIPTIONS = {
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


def problem_responses(*problems: type[Problem]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for these problems, one per status, naming its codes, with an example each."""
    by_status: dict[int, list[type[Problem]]] = defaultdict(list)
    for problem in problems:
        if problem not in by_status[problem.status]:
            by_status[problem.status].append(problem)
    documented: dict[int | str, dict[str, Any]] = {}
    for status in sorted(by_status):
        classes = by_status[status]
        codes = ", ".join(f"`{p.code}`" for p in classes)
        documented[status] = {
            "model": ProblemDetails,
            "description": f"{_DESCRIPTIONS.get(status, classes[0].title)}: {codes}",
            "content": {
                PROBLEM_MEDIA_TYPE: {
                    "schema": {"$ref": "#/components/schemas/ProblemDetails"},
                    "examples": {
                        p.code: {
                            "summary": p.title,
                            "value": {
                                "type": f"https://rewards.example/problems/{p.code}",
                                "title": p.title,
                                "status": p.status,
                                "detail": None,
                                "code": p.code,
                            },
                        }
                        for p in classes
                    },
                }
            },
        }
    return documented


def responses(*problems: type[Problem]) -> dict[int | str, dict[str, Any]]:
    """The documented error responses of an authenticated route: the shared ones and its own."""
    return problem_responses(*AUTH_PROBLEMS, *problems)
