"""OpenTelemetry traces: off unless an OTLP endpoint is configured, and then one trace per request with a span for
every Postgres statement and every call to Letta, LiteLLM and Supabase.

A chat turn's trace holds its request's server span (``POST /api/v1/chat/message``), the statement that starts
the turn (``chat.store.BEGIN_TURN``), Letta's call (``POST letta /v1/agents/{id}/messages``, open as long as the
reply streams, with a ``first token`` event when the reply's first token arrived), and the statement that stores
the turn (``chat.store.STORE_TURN``).

- Server spans: Litestar's OpenTelemetry middleware (the ASGI instrumentation), renamed after routing to the
  route template (``service.observability.tracing.route_names``).
- Postgres: the asyncpg instrumentation; a statement defined as a constant in a ``service`` module is named after
  it (``chat.store.BEGIN_TURN``), others after their first word. Statement texts, never their parameters.
- Upstream calls: the shared HTTP client's transport (``service.clients.http``, ``service.observability.upstream``)
  opens a client span per call and passes the trace on (``traceparent``).

Off (the default), nothing is instrumented: no middleware, no wrapped asyncpg methods, and the transport's only
cost is checking ``tracer()``. Settings: ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(OTLP over HTTP/protobuf), ``OTEL_SERVICE_NAME``, ``OTEL_SDK_DISABLED``; the SDK itself reads
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``.
"""

from __future__ import annotations

import logging
import re
import sys

from litestar.types import ASGIApp, Middleware, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from service.settings import Settings

logger = logging.getLogger("service.tracing")

_tracer: trace.Tracer | None = None  # None: tracing is off
_provider: TracerProvider | None = None
_owned = False  # the provider was made here from the settings (and is shut down here)

# The attribute the asyncpg instrumentation puts the statement in (the old and the new semantic conventions).
_STATEMENT_ATTRIBUTES = ("db.statement", "db.query.text")
_SQL = re.compile(r"\s*(with|select|insert|update|delete)\b", re.IGNORECASE)


def tracer() -> trace.Tracer | None:
    """The service's tracer while tracing is on, else None."""
    return _tracer


def start(provider: TracerProvider, *, owned: bool = False) -> None:
    """Trace with ``provider``: instrument asyncpg, name its statements, open upstream spans. Tests call it with a
    provider of their own (``InMemorySpanExporter``); ``configure`` calls it with the OTLP exporter's."""
    global _tracer, _provider, _owned
    if provider is _provider:
        return
    stop()
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor  # only when tracing is on

    provider.add_span_processor(StatementNames(statement_names()))
    AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    _tracer = provider.get_tracer("service")
    _provider, _owned = provider, owned


def stop() -> None:
    """Stop tracing: asyncpg unwrapped, upstream calls untraced. A provider made by ``configure`` is shut down
    (its spans flushed)."""
    global _tracer, _provider, _owned
    if _provider is None:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    if _owned:
        _provider.shutdown()
    _tracer, _provider, _owned = None, None, False


def stop_configured() -> None:
    """Stop tracing if ``configure`` started it (not when a test did)."""
    if _owned:
        stop()


def configure(settings: Settings) -> None:
    """Start tracing to the configured OTLP endpoint, if one is (and tracing is not on already)."""
    endpoint = settings.otlp_traces_endpoint
    if endpoint is None or _provider is not None:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The sampler is the SDK's default (parent-based, always on) unless OTEL_TRACES_SAMPLER says otherwise.
    provider = TracerProvider(resource=Resource.create({"service.name": settings.otel_service_name}))
    # Exported in batches from a thread of the SDK's: nothing waits for the collector on a request's path.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    start(provider, owned=True)
    logger.info("tracing to %s", endpoint)


def server_middleware() -> list[Middleware]:
    """The middleware that opens each request's server span (Litestar's OpenTelemetry middleware, outermost), and
    the one that names it after its route; none while tracing is off."""
    if _provider is None:
        return []
    from litestar.plugins.opentelemetry import OpenTelemetryConfig
    from opentelemetry.metrics import NoOpMeterProvider

    config = OpenTelemetryConfig(
        tracer_provider=_provider,
        # Our metrics are Prometheus's (service.observability.metrics): the middleware records none of its own.
        meter_provider=NoOpMeterProvider(),
        # Named before routing: the method only, until route_names knows the route (no ids in span names).
        scope_span_details_extractor=lambda scope: (str(scope.get("method") or scope["type"]), {}),
        # One span per request, not one more per ASGI message (a streamed reply sends one per batch of tokens).
        exclude_spans=["receive", "send"],
        exclude=["^/health/", "^/metrics"],
    )
    return [config.middleware, route_names]


def route_names(app: ASGIApp) -> ASGIApp:
    """ASGI middleware (runs after routing): the request's server span named ``METHOD /route/{template}``."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        template = scope.get("path_template")
        span = trace.get_current_span()
        if template and span.is_recording():
            span.update_name(f"{scope.get('method') or 'WEBSOCKET'} {template}")
            span.set_attribute("http.route", template)
        await app(scope, receive, send)

    return middleware


def statement_names() -> dict[str, str]:
    """Every SQL statement defined as a module-level string in a ``service`` module, by its text:
    ``{"with hit as (...": "chat.store.BEGIN_TURN"}``. A text defined in two modules is named after the store."""
    names: dict[str, str] = {}
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith("service.") or module is None:
            continue
        for attribute, value in vars(module).items():
            if attribute.lstrip("_").isupper() and isinstance(value, str) and _SQL.match(value):
                name = f"{module_name.removeprefix('service.')}.{attribute.lstrip('_')}"
                if value not in names or module_name.endswith(".store"):
                    names[value] = name
    return names


class StatementNames(SpanProcessor):
    """Names a Postgres span after the statement it ran (see ``statement_names``)."""

    def __init__(self, names: dict[str, str]) -> None:
        self._names = names

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        attributes = span.attributes or {}
        for key in _STATEMENT_ATTRIBUTES:
            statement = attributes.get(key)
            if isinstance(statement, str):
                name = self._names.get(statement)
                if name is not None:
                    span.update_name(name)
                return

    def on_end(self, span: ReadableSpan) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


__all__ = ["configure", "server_middleware", "start", "stop", "stop_configured", "tracer"]
