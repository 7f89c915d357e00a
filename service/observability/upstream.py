"""Every call the shared HTTP client (``service.clients.http``) makes, observed in one place: its latency and errors
by upstream and route template (metrics), and its client span (traces, when on)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import httpx
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from service.observability import tracing
from service.observability.metrics import MAX_ROUTES_PER_SERVICE, UPSTREAM_DURATION, UPSTREAM_ERRORS, route_template

_CALL = "service.upstream_call"  # the response extension that holds its call (while tracing)


class Upstreams:
    """Which upstream a URL belongs to, by the configured base URLs (``{"letta": LETTA_BASE_URL, ...}``), and the
    route templates seen for each (at most ``MAX_ROUTES_PER_SERVICE``: the labels stay few whatever is called)."""

    def __init__(self, bases: Mapping[str, str] | None = None) -> None:
        parsed = [(httpx.URL(base), name) for name, base in (bases or {}).items()]
        # The longest path prefix first: a base under another one's host wins for its paths.
        self._bases = sorted(
            ((url.scheme, url.host, url.port, url.path.rstrip("/"), name) for url, name in parsed),
            key=lambda base: -len(base[3]),
        )
        self._routes: dict[str, set[str]] = {}

    def classify(self, url: httpx.URL) -> tuple[str, str]:
        """``(service, route template)`` of a request's URL; an unknown host is the service ``other``."""
        path = url.path
        for scheme, host, port, prefix, name in self._bases:
            if url.host == host and url.port == port and url.scheme == scheme and path.startswith(prefix):
                return name, self._route(name, route_template(path[len(prefix) :] or "/"))
        return "other", self._route("other", route_template(path))

    def _route(self, service: str, template: str) -> str:
        seen = self._routes.setdefault(service, set())
        if template in seen:
            return template
        if len(seen) >= MAX_ROUTES_PER_SERVICE:
            return "other"
        seen.add(template)
        return template


class UpstreamCall:
    """One call: made by the transport when the request goes out, told what came of it."""

    __slots__ = ("_ended", "method", "route", "service", "span", "started")

    def __init__(self, upstreams: Upstreams, request: httpx.Request) -> None:
        self.service, self.route = upstreams.classify(request.url)
        self.method = request.method
        self.span: trace.Span | None = None
        self._ended = False
        tracer = tracing.tracer()
        if tracer is not None:
            self.span = tracer.start_span(
                f"{self.method} {self.service} {self.route}",
                kind=SpanKind.CLIENT,
                attributes={
                    "http.request.method": self.method,
                    "url.template": self.route,
                    "server.address": request.url.host,
                    "server.port": request.url.port or (443 if request.url.scheme == "https" else 80),
                    "peer.service": self.service,
                },
            )
            # The upstream joins the trace if it reads traceparent (Letta and LiteLLM can export their own spans).
            propagate.inject(request.headers, context=trace.set_span_in_context(self.span))
        self.started = time.perf_counter()

    def answered(self, response: httpx.Response) -> None:
        """The response's headers arrived (its body may still be streaming)."""
        UPSTREAM_DURATION.labels(self.service, self.method, self.route).observe(time.perf_counter() - self.started)
        status = response.status_code
        if status >= 400:
            UPSTREAM_ERRORS.labels(self.service, self.method, self.route, str(status)).inc()
        if self.span is not None:
            self.span.set_attribute("http.response.status_code", status)
            if status >= 400:
                self.span.set_status(StatusCode.ERROR)
            response.extensions[_CALL] = self

    def failed(self, exc: BaseException) -> None:
        """No answer came: refused, timed out, reset; or the caller gave up waiting (cancelled: not an error)."""
        if not isinstance(exc, asyncio.CancelledError):
            self._count(_reason(exc))
        self._error(exc)
        self.closed()

    def broke(self, exc: BaseException) -> None:
        """The answer's body broke off."""
        self._count("stream")
        self._error(exc)

    def event(self, name: str) -> None:
        if self.span is not None:
            self.span.add_event(name)

    def closed(self) -> None:
        """The response was closed: its span ends (a stream's lasts as long as the stream)."""
        if self.span is not None and not self._ended:
            self._ended = True
            self.span.end()

    def _count(self, reason: str) -> None:
        UPSTREAM_ERRORS.labels(self.service, self.method, self.route, reason).inc()

    def _error(self, exc: BaseException) -> None:
        if self.span is not None:
            self.span.set_attribute("error.type", type(exc).__name__)
            if not isinstance(exc, asyncio.CancelledError):
                self.span.set_status(StatusCode.ERROR)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return "connect"
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return "network"


def first_token(response: httpx.Response) -> float:
    """Now (``time.perf_counter()``), when the first token of a streamed reply arrived in ``response``: also the
    ``first token`` event of its call's span while tracing."""
    call = response.extensions.get(_CALL)
    if isinstance(call, UpstreamCall):
        call.event("first token")
    return time.perf_counter()


__all__ = ["UpstreamCall", "Upstreams", "first_token"]
