"""Tracing with OpenTelemetry, exported by OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Off (no endpoint), nothing is installed: no SDK, no instrumentation, no middleware; the only trace of
this module on a request is `enabled()`, a read of a module global, where the outbox decides whether
its rows carry a trace context."""

from __future__ import annotations

_enabled = False


def enabled() -> bool:
    return _enabled


def traceparent() -> str | None:
    """The W3C traceparent of the current span, to store with work that leaves this process."""
    return None


def setup_tracing(service_name: str) -> bool:
    """Installs tracing for this process if an endpoint is configured; returns whether it did."""
    return False
