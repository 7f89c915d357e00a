"""Prometheus metrics: what happens in this process (turns, upstream calls, refusals, open streams), counted where
it happens, in one registry that ``GET /metrics`` renders (``service.observability.controller``).

Labels are low-cardinality by construction: outcomes, error codes, rate-limit buckets, upstream services and
route templates (``/v1/agents/{id}/messages``, never a raw URL), HTTP methods and statuses. Never a user id.

Each replica counts its own: a scraper sums the per-replica series (``sum by (...)``). The gauges read from the
database at scrape time (``service.observability.collector``) are the same from every replica.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    gc_collector,
    platform_collector,
    process_collector,
)

from service.errors import DomainError
from service.web.problems import spec_of

if TYPE_CHECKING:
    from service.chat.events import TurnResult
    from service.chat.service import Turn

# Our own registry (not prometheus_client's global one): only what is defined here, plus the process's own
# CPU, memory, file descriptors and garbage collections.
REGISTRY = CollectorRegistry()
process_collector.ProcessCollector(registry=REGISTRY)
platform_collector.PlatformCollector(registry=REGISTRY)
gc_collector.GCCollector(registry=REGISTRY)

_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

TURNS = Counter(
    "aichat_turns",
    "Chat turns stored by this replica (run here, failed to start, or finished by its recovery), by outcome "
    "(complete, failed, cancelled) and error code (none unless failed).",
    ["status", "error_code"],
    registry=REGISTRY,
)
TURN_FIRST_DELTA = Histogram(
    "aichat_turn_first_delta_seconds",
    "From a turn's start (its message stored, the lease taken) to the first token of the agent's reply.",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)
TURN_DURATION = Histogram(
    "aichat_turn_duration_seconds",
    "From a turn's start (its message stored, the lease taken) to its outcome being stored, by outcome.",
    ["status"],
    buckets=(0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0),
    registry=REGISTRY,
)
UPSTREAM_DURATION = Histogram(
    "aichat_upstream_request_duration_seconds",
    "Calls to Letta, LiteLLM and Supabase: from sending the request to the response's headers (for a stream, "
    "when the upstream started answering), by service, method and route template.",
    ["service", "method", "route"],
    buckets=_FAST,
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "aichat_upstream_errors",
    "Failed calls to Letta, LiteLLM and Supabase, by service, method, route template and reason: the HTTP status "
    "of an error answer, or timeout, connect, network (no answer), stream (the body broke off).",
    ["service", "method", "route", "reason"],
    registry=REGISTRY,
)
RATE_LIMIT_REFUSALS = Counter(
    "aichat_rate_limit_refusals",
    "Requests refused by a rate limit (429), by bucket.",
    ["bucket"],
    registry=REGISTRY,
)
COST_DRIFT = Counter(
    "aichat_cost_drift_usd",
    "When turns and LLM calls are reconciled: how far what LiteLLM charged was from the estimate recorded at first, "
    "by direction (charged_more, charged_less); the net drift is the difference of the two.",
    ["direction"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "aichat_http_requests",
    "HTTP requests answered by this replica, by method, route template and status.",
    ["method", "route", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "aichat_http_request_duration_seconds",
    "From a request's arrival to its response's headers (for a stream: when it started), by method and route.",
    ["method", "route"],
    buckets=_FAST,
    registry=REGISTRY,
)
FEEDBACK_RETRIES = Counter(
    "aichat_feedback_retries",
    "Feedback this replica's retry loop tried to send to Letta again, by outcome: sent, refused (Letta answered no, "
    "or the reply has no step), unavailable (Letta did not answer); a feedback whose last attempt failed also counts "
    "in given_up.",
    ["outcome"],
    registry=REGISTRY,
)
SSE_STREAMS = Gauge(
    "aichat_sse_streams_open",
    "Server-Sent Events responses being streamed by this replica now (chat turns, resumed streams).",
    registry=REGISTRY,
)

# -- labels ---------------------------------------------------------------------------------------------------
# A path segment that names one thing rather than a kind of thing: a UUID (with Letta's "agent-"/"run-"-style
# prefix), a number, a long hex digest, anything with @ or an escape, anything very long.
_ID_SEGMENT = re.compile(
    r"(?:[a-z]+-)?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}|\d+|[0-9a-f]{16,}|.*[@%].*|.{41,}",
    re.IGNORECASE,
)
_CODE = re.compile(r"[a-z_]{1,40}")
MAX_ROUTES_PER_SERVICE = 100  # past this many templates for one upstream, new ones count as "other"


def route_template(path: str) -> str:
    """``/v1/agents/agent-0c4d…/messages`` -> ``/v1/agents/{id}/messages``."""
    return "/".join("{id}" if segment and _ID_SEGMENT.fullmatch(segment) else segment for segment in path.split("/"))


def _code_label(code: str | None) -> str:
    if not code:
        return "none"
    return code if _CODE.fullmatch(code) else "other"


# -- events ---------------------------------------------------------------------------------------------------
def observe_outcome(result: TurnResult, *, applied: bool) -> None:
    """A turn's outcome, when the statement that stores it applied (``TurnRecorder.store``): a turn that ran here,
    one that failed to start, one a recovery finished; each once, whichever replica stored it."""
    if applied:
        TURNS.labels(result.status, _code_label(result.error_code if result.status == "failed" else None)).inc()


def observe_turn(turn: Turn) -> None:
    """A finished turn's duration and time to first token (``ChatService._finish``)."""
    now = time.perf_counter()
    TURN_DURATION.labels(turn.result.status).observe(now - turn.started)
    first_token = turn.stream.first_token_at if turn.stream is not None else None
    if first_token is not None:
        TURN_FIRST_DELTA.observe(first_token - turn.started)


def observe_refusal(bucket: str) -> None:
    """A hit a rate limit refused (``service.rate_limit``)."""
    RATE_LIMIT_REFUSALS.labels(bucket).inc()


def observe_cost_drift(delta: Any) -> None:
    """What reconciliation moved the recorded cost by: charged minus estimated (``service.billing.reconcile``)."""
    amount = float(delta or 0)
    if amount > 0:
        COST_DRIFT.labels("charged_more").inc(amount)
    elif amount < 0:
        COST_DRIFT.labels("charged_less").inc(-amount)


# -- HTTP requests and SSE streams ----------------------------------------------------------------------------
def _status_of(exc: BaseException) -> int:
    """The status of an error raised by a middleware (an error raised by a handler is rendered before it gets
    here): Litestar's own exceptions carry theirs, a domain error's is in the errors table."""
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, DomainError):
        return spec_of(exc.code).status
    return 500


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: each HTTP request counted by route template and status, the time to its response's
    headers, and the Server-Sent Events streams open."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        route = scope.get("path_template") or "unmatched"
        method = scope.get("method", "")
        status = 0
        streaming = False

        async def observed_send(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                HTTP_DURATION.labels(method, route).observe(time.perf_counter() - started)
                content_type = next((v for k, v in message.get("headers", ()) if k.lower() == b"content-type"), b"")
                if content_type.startswith(b"text/event-stream"):
                    streaming = True
                    SSE_STREAMS.inc()
            await send(message)

        try:
            await app(scope, receive, observed_send)
        except BaseException as exc:
            status = status or _status_of(exc)
            raise
        finally:
            if streaming:
                SSE_STREAMS.dec()
            HTTP_REQUESTS.labels(method, route, str(status or 500)).inc()

    return middleware


__all__ = [
    "REGISTRY",
    "metrics_middleware",
    "observe_cost_drift",
    "observe_outcome",
    "observe_refusal",
    "observe_turn",
    "route_template",
]
