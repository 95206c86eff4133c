"""Reading a JSON request body into a model with the framework's own rules and error shape, for the
few routes that read their request themselves to stay lean (see the redemption route)."""

from __future__ import annotations

from email.message import Message
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from service.kit.http.errors import MalformedJson, ValidationFailed, field_errors_problem

M = TypeVar("M", bound=BaseModel)


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # FastAPI reads a body without a content type as JSON, and so do we
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def json_body(model: type[M], body: bytes, content_type: str | None) -> M:
    """The body as `model`: 400 malformed_json for bytes that are not JSON, 422 validation_error with
    one entry per field (`body.<field>`, the rule, its type) otherwise; never the input's values."""
    if not body:
        raise ValidationFailed(
            "body: Field required", errors=[{"field": "body", "message": "Field required", "type": "missing"}]
        )
    if not _is_json(content_type):
        message = "Input should be a valid dictionary or object to extract fields from"
        errors = [{"field": "body", "message": message, "type": "model_attributes_type"}]
        raise ValidationFailed(f"body: {message}", errors=errors)
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        problems = exc.errors(include_url=False, include_input=False)
        if any(e["type"] == "json_invalid" for e in problems):
            raise MalformedJson("the body is not valid JSON") from None
        fields = [
            {"field": ".".join(("body", *(str(p) for p in e["loc"]))), "message": e["msg"], "type": e["type"]}
            for e in problems
        ]
        raise field_errors_problem(
            fields, "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
        ) from None
