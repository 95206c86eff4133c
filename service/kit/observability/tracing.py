"""Tracing with OpenTelemetry, exported by OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set.

Off (no endpoint), nothing is installed: no SDK, no instrumentation, no middleware, no log processor;
what remains of this module on a request is `enabled()`, a read of a module global, where the
outbox decides whether its rows carry a trace context.

On, each process traces what it does:
- the API: a server span per request (FastAPI), its SQL statements (psycopg, on every connection of
  the pool: the ORM's and the hot path's raw ones alike) and Redis commands;
- the outbox hop: a row written inside a traced operation stores its W3C traceparent; the relay's
  publish span continues that trace (for a pack of rows: the first row's trace, linked to all the
  others) and the Dramatiq message carries the publish span's context in its options;
- the workers: a consumer span per Dramatiq message (this module's middleware), child of the context
  it carries, with the statements and Redis commands under it; retries enqueued from it continue it.
Root spans of database or Redis clients (the relay's polls, the consumers' fetches, health checks)
are not sampled: they would be thousands of one-span traces a minute with nothing to say. Log lines
carry `trace_id` and `span_id`."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from sqlalchemy import event

from service.kit.config import get_settings
from service.kit.observability.logging import configure_logging

if TYPE_CHECKING:
    import dramatiq
    from fastapi import FastAPI
    from opentelemetry.sdk.trace.sampling import Sampler, SamplingResult
    from opentelemetry.trace.span import TraceState
    from opentelemetry.util.types import Attributes
    from psycopg import AsyncConnection, Connection
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import ConnectionPoolEntry

_enabled = False
_lock = threading.Lock()
EXCLUDED_URLS = "/healthz,/readyz,/metrics"


def enabled() -> bool:
    return _enabled


def traceparent() -> str | None:
    """The W3C traceparent of the current span, to store with work that leaves this process."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def context_of(traceparent_: str | None) -> context.Context | None:
    return propagate.extract({"traceparent": traceparent_}) if traceparent_ else None


def traces_endpoint(endpoint: str) -> str:
    """OTLP/HTTP: the traces path under the collector's base URL (as the SDK does with the variable)."""
    return endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"


def setup_tracing(service_name: str) -> bool:
    """Installs tracing for this process if an endpoint is configured; returns whether it is on.
    Instrumentation is imported here, only then: a process without an endpoint never loads it."""
    global _enabled
    settings = get_settings()
    if not settings.otel_exporter_otlp_endpoint:
        return False
    with _lock:
        if _enabled:
            return True
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.instrumentation.redis import RedisInstrumentor
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        except ImportError as missing:
            raise RuntimeError(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set, but the tracing extra is not installed "
                f"({missing.name}): pip install 'rewards[tracing]', or unset the variable"
            ) from None

        provider = TracerProvider(
            resource=Resource.create({"service.name": settings.otel_service_name or service_name}),
            sampler=ParentBased(root=_operations_only(TraceIdRatioBased(settings.otel_traces_sampler_arg))),
        )
        provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(endpoint=traces_endpoint(settings.otel_exporter_otlp_endpoint))
            )
        )
        trace.set_tracer_provider(provider)
        RedisInstrumentor().instrument(tracer_provider=provider)
        _enabled = True
        configure_logging(settings.log_level, settings.log_json, trace_ids=True)
    return True


def _operations_only(ratio: Sampler) -> Sampler:
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class OperationsOnly(Sampler):
        """Root spans of database and Redis clients are dropped; others sampled at the ratio."""

        def should_sample(
            self,
            parent_context: context.Context | None,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Attributes = None,
            links: Sequence[Link] | None = None,
            trace_state: TraceState | None = None,
        ) -> SamplingResult:
            if kind is SpanKind.CLIENT and not links:
                return SamplingResult(Decision.DROP)
            return ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"OperationsOnly({ratio.get_description()})"

    return OperationsOnly()


def instrument_app(app: FastAPI) -> None:
    """FastAPI server spans (not for probes and scrapes), when tracing is on."""
    if not _enabled:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls=EXCLUDED_URLS, exclude_spans=["receive", "send"])


def instrument_engine(engine: Engine) -> None:
    """Every new connection of the pool gets traced cursors, when tracing is on: the ORM's statements
    and the raw psycopg ones of the hot path (`driver(session).execute`) alike."""
    if not _enabled:
        return
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    def on_connect(dbapi_connection: Connection[Any], _record: ConnectionPoolEntry) -> None:
        # The engine's driver is psycopg (sqlalchemy_url), whose connections SQLAlchemy hands on as they are.
        PsycopgInstrumentor.instrument_connection(dbapi_connection)

    event.listen(engine, "connect", on_connect)


async def instrument_async_connection(connection: AsyncConnection[Any]) -> None:
    """The hot path's asyncio pool's `configure`: traced cursors on each new connection."""
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    PsycopgInstrumentor.instrument_connection(connection)


def tracer() -> trace.Tracer:
    return trace.get_tracer("rewards")


def publish_span(actor: str, parents: list[str | None]) -> AbstractContextManager[trace.Span]:
    """The relay's span for a message carrying `parents` (the traceparents of its rows): a child of the
    first, linked to every one (a pack of rows from several operations)."""
    contexts = [c for c in (context_of(p) for p in parents) if c is not None]
    links = [Link(trace.get_current_span(c).get_span_context()) for c in contexts]
    return tracer().start_as_current_span(
        f"{actor} publish",
        context=contexts[0] if contexts else None,
        kind=SpanKind.PRODUCER,
        links=links if len(links) > 1 else None,
        attributes={"messaging.system": "dramatiq", "messaging.operation.type": "publish"},
    )


def message_options() -> dict[str, Any]:
    """Options of a Dramatiq message sent now: the current trace context."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {"trace_context": carrier} if carrier else {}


def dramatiq_middleware() -> dramatiq.Middleware:
    """A consumer span per message, child of the context in its options; the context goes into every
    message enqueued while tracing is on (retries and hand-offs continue the trace)."""
    import dramatiq
    from dramatiq.broker import MessageProxy

    class Tracing(dramatiq.Middleware):
        def __init__(self) -> None:
            self._spans = threading.local()

        def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
            if "trace_context" not in message.options:
                message.options.update(message_options())

        def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
            parent = propagate.extract(message.options.get("trace_context") or {})
            span = tracer().start_span(
                f"{message.actor_name} process",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "dramatiq",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": message.queue_name,
                    "messaging.message.id": message.message_id,
                },
            )
            token = context.attach(trace.set_span_in_context(span))
            self._spans.current = (span, token)

        def after_process_message(
            self,
            broker: dramatiq.Broker,
            message: MessageProxy,
            *,
            result: object = None,
            exception: BaseException | None = None,
        ) -> None:
            current = getattr(self._spans, "current", None)
            if current is None:
                return
            span, token = current
            self._spans.current = None
            if exception is not None:
                span.record_exception(exception)
                span.set_status(Status(StatusCode.ERROR, type(exception).__name__))
            span.end()
            context.detach(token)

        after_skip_message = after_process_message

    return Tracing()
