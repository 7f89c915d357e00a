"""Metrics: counted where things happen, under labels that stay few. Upstream calls go through the real pooled
client to loopback servers; HTTP requests through a Litestar app; the text format read back with Prometheus's own
parser. (The database's gauges and GET /metrics: tests/integration/test_metrics.py and tests/e2e/test_metrics.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from types import SimpleNamespace

import httpx
import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.response import Stream
from litestar.testing import AsyncTestClient
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from service.chat.events import TurnResult
from service.clients.http import http_client
from service.clients.letta import LettaClient
from service.observability.metrics import (
    MAX_ROUTES_PER_SERVICE,
    REGISTRY,
    metrics_middleware,
    observe_cost_drift,
    observe_outcome,
    observe_turn,
    route_template,
)
from service.observability.upstream import Upstreams
from service.rate_limit import PostgresRateLimiter
from tests.unit.conftest import Behaviour


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def answering(status: int, body: bytes = b"{}", *, delay: float = 0.0) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):  # the client closed its connection
            while await reader.readuntil(b"\r\n\r\n"):
                await asyncio.sleep(delay)
                head = f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
                writer.write(head.encode() + body)
                await writer.drain()

    return behaviour


def client_for(**upstreams: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=5)
    return http_client(limits=limits, timeout=httpx.Timeout(5.0, read=1.0), upstreams=upstreams)


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- labels ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v1/agents/agent-0c4d2e1f-0000-4000-8000-000000000003/messages", "/v1/agents/{id}/messages"),
        ("/v1/runs/run-0C4D2E1F-0000-4000-8000-000000000003/usage", "/v1/runs/{id}/usage"),
        ("/v1/providers/provider-0c4d2e1f000040008000000000000003", "/v1/providers/{id}"),
        ("/auth/v1/admin/users/0c4d2e1f-0000-4000-8000-000000000003", "/auth/v1/admin/users/{id}"),
        ("/v1/agents/agent-x/core-memory/blocks/human", "/v1/agents/agent-x/core-memory/blocks/human"),
        ("/spend/logs", "/spend/logs"),
        ("/key/4e1f0a9b8c7d6e5f4e1f0a9b8c7d6e5f", "/key/{id}"),
        ("/items/42/ann@example.com/a%20b", "/items/{id}/{id}/{id}"),
        ("/x/" + "a" * 41, "/x/{id}"),
        ("/v1/health/", "/v1/health/"),
    ],
)
def test_a_route_template_has_no_ids(path: str, template: str) -> None:
    assert route_template(path) == template


def test_calls_are_named_after_the_base_url_they_are_under() -> None:
    upstreams = Upstreams({"letta": "http://127.0.0.1:8283", "litellm": "http://127.0.0.1:4000/proxy/"})
    assert upstreams.classify(httpx.URL("http://127.0.0.1:8283/v1/agents/agent-1/messages")) == (
        "letta",
        "/v1/agents/agent-1/messages",
    )
    assert upstreams.classify(httpx.URL("http://127.0.0.1:4000/proxy/user/info?user_id=u1")) == (
        "litellm",
        "/user/info",
    )
    assert upstreams.classify(httpx.URL("http://127.0.0.1:4001/user/info")) == ("other", "/user/info")


def test_an_upstream_has_at_most_so_many_route_labels() -> None:
    upstreams = Upstreams({"letta": "http://letta"})
    routes = {
        upstreams.classify(httpx.URL(f"http://letta/tool/name{n}"))[1] for n in range(MAX_ROUTES_PER_SERVICE + 50)
    }
    assert len(routes) == MAX_ROUTES_PER_SERVICE + 1 and "other" in routes


# -- upstream calls through the shared client -------------------------------------------------------------------
async def test_an_answered_call_is_timed_under_its_service_and_route(serve) -> None:  # type: ignore[no-untyped-def]
    url = await serve(answering(200, delay=0.05))
    labels = {"service": "letta", "method": "GET", "route": "/v1/agents/{id}"}
    before_count = value("aichat_upstream_request_duration_seconds_count", **labels)
    before_fast = value("aichat_upstream_request_duration_seconds_bucket", **labels, le="0.025")
    async with client_for(letta=url) as http:
        for _ in range(3):
            response = await http.get(f"{url}/v1/agents/agent-{uuid.uuid4()}")
            assert response.status_code == 200
    assert value("aichat_upstream_request_duration_seconds_count", **labels) == before_count + 3
    # Each took the server's 50 ms: none is in the 25 ms bucket.
    assert value("aichat_upstream_request_duration_seconds_bucket", **labels, le="0.025") == before_fast


async def test_an_error_answer_counts_by_its_status(serve) -> None:  # type: ignore[no-untyped-def]
    url = await serve(answering(503))
    labels = {"service": "litellm", "method": "POST", "route": "/user/new"}
    before = value("aichat_upstream_errors_total", **labels, reason="503")
    async with client_for(litellm=url) as http:
        assert (await http.post(f"{url}/user/new", json={})).status_code == 503
    assert value("aichat_upstream_errors_total", **labels, reason="503") == before + 1


async def test_no_answer_counts_as_connect_or_timeout() -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    labels = {"service": "letta", "method": "GET", "route": "/v1/health/"}
    before = value("aichat_upstream_errors_total", **labels, reason="connect")
    async with client_for(letta=url) as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{url}/v1/health/")
    assert value("aichat_upstream_errors_total", **labels, reason="connect") == before + 1


async def test_a_read_timeout_counts_as_timeout(serve) -> None:  # type: ignore[no-untyped-def]
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    url = await serve(silent)
    labels = {"service": "letta", "method": "GET", "route": "/v1/health/"}
    before = value("aichat_upstream_errors_total", **labels, reason="timeout")
    async with client_for(letta=url) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"{url}/v1/health/")
    assert value("aichat_upstream_errors_total", **labels, reason="timeout") == before + 1


async def test_a_body_that_breaks_off_counts_as_stream(serve) -> None:  # type: ignore[no-untyped-def]
    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly a part")
        await writer.drain()
        writer.transport.abort()

    url = await serve(cut_short)
    labels = {"service": "letta", "method": "GET", "route": "/v1/runs/{id}/stream"}
    before = value("aichat_upstream_errors_total", **labels, reason="stream")
    async with (
        client_for(letta=url) as http,
        http.stream("GET", f"{url}/v1/runs/run-{uuid.uuid4()}/stream") as response,
    ):
        with pytest.raises(httpx.ReadError):
            await response.aread()
    assert value("aichat_upstream_errors_total", **labels, reason="stream") == before + 1


# -- turns ----------------------------------------------------------------------------------------------------
def letta_sse(*events: bytes, pause: float = 0.0) -> Behaviour:
    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        for event in events:
            await asyncio.sleep(pause)
            chunk = b"data: " + event + b"\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return behaviour


async def test_a_turn_counts_its_duration_and_first_token(serve) -> None:  # type: ignore[no-untyped-def]
    url = await serve(
        letta_sse(
            b'{"message_type": "reasoning_message", "reasoning": "hm"}',
            b'{"message_type": "assistant_message", "id": "m1", "content": "Hi"}',
            b'{"message_type": "assistant_message", "id": "m1", "content": " there"}',
            b'{"message_type": "stop_reason", "stop_reason": "end_turn"}',
            b"[DONE]",
            pause=0.1,
        )
    )
    first_before = value("aichat_turn_first_delta_seconds_count")
    first_sum_before = value("aichat_turn_first_delta_seconds_sum")
    duration_before = value("aichat_turn_duration_seconds_count", status="complete")
    async with client_for(letta=url) as http:
        letta = LettaClient(http, url, None)
        started = time.perf_counter()
        stream = await letta.open_stream(letta.turn_request("agent-x", "hi", str(uuid.uuid4())))
        kinds = [event.message_type async for event in stream]
        await stream.close()
    assert kinds[:2] == ["reasoning_message", "assistant_message"]
    result = TurnResult(status="complete")
    observe_turn(SimpleNamespace(result=result, started=started, stream=stream))  # type: ignore[arg-type]
    assert value("aichat_turn_duration_seconds_count", status="complete") == duration_before + 1
    assert value("aichat_turn_first_delta_seconds_count") == first_before + 1
    # The first token came with the second event (~0.2 s), not the first one or the last.
    first_delta = value("aichat_turn_first_delta_seconds_sum") - first_sum_before
    assert 0.18 <= first_delta < 0.3


def test_a_turn_without_a_first_token_has_a_duration_only() -> None:
    result = TurnResult()
    result.fail("agent_unavailable", "Letta: HTTP 502: <html>bad gateway</html>")
    first_before = value("aichat_turn_first_delta_seconds_count")
    duration_before = value("aichat_turn_duration_seconds_count", status="failed")
    observe_turn(SimpleNamespace(result=result, started=time.perf_counter(), stream=None))  # type: ignore[arg-type]
    assert value("aichat_turn_duration_seconds_count", status="failed") == duration_before + 1
    assert value("aichat_turn_first_delta_seconds_count") == first_before


def test_an_outcome_counts_once_by_status_and_error_code() -> None:
    failed = TurnResult()
    failed.fail("agent_unavailable", "Letta: HTTP 502: <html>bad gateway</html>")
    weird = TurnResult()
    weird.fail("Not A Code: <html>", "?")
    complete = TurnResult(
        status="complete", error_code="llm_error"
    )  # a code left from an event of a turn that ended well
    before = {
        key: value("aichat_turns_total", status=status, error_code=code)
        for key, (status, code) in {
            "failed": ("failed", "agent_unavailable"),
            "weird": ("failed", "other"),
            "complete": ("complete", "none"),
        }.items()
    }
    observe_outcome(failed, applied=True)
    observe_outcome(failed, applied=False)  # the other of the replica and a recovery stored it already
    observe_outcome(weird, applied=True)
    observe_outcome(complete, applied=True)
    assert value("aichat_turns_total", status="failed", error_code="agent_unavailable") == before["failed"] + 1
    assert value("aichat_turns_total", status="failed", error_code="other") == before["weird"] + 1
    assert value("aichat_turns_total", status="complete", error_code="none") == before["complete"] + 1


# -- refusals, drift --------------------------------------------------------------------------------------------
def test_a_refused_decision_counts_by_bucket() -> None:
    limiter = PostgresRateLimiter(None, {"memory": (5, 60)})  # type: ignore[arg-type] # decisions need no database
    before = value("aichat_rate_limit_refusals_total", bucket="memory")
    assert limiter.decision("memory", {"allowed": True, "remaining": 3, "retry_after_seconds": 0}).allowed
    assert value("aichat_rate_limit_refusals_total", bucket="memory") == before
    refused = limiter.decision("memory", {"allowed": False, "remaining": 0, "retry_after_seconds": 7})
    assert not refused.allowed
    assert value("aichat_rate_limit_refusals_total", bucket="memory") == before + 1


def test_cost_drift_counts_each_direction_apart() -> None:
    more, less = (
        value("aichat_cost_drift_usd_total", direction="charged_more"),
        value("aichat_cost_drift_usd_total", direction="charged_less"),
    )
    observe_cost_drift(Decimal("0.0125"))
    observe_cost_drift(Decimal("-0.002"))
    observe_cost_drift(Decimal("0"))
    observe_cost_drift(None)
    assert value("aichat_cost_drift_usd_total", direction="charged_more") == pytest.approx(more + 0.0125)
    assert value("aichat_cost_drift_usd_total", direction="charged_less") == pytest.approx(less + 0.002)


# -- HTTP requests and SSE streams ------------------------------------------------------------------------------
async def test_requests_count_by_route_template_and_sse_streams_while_open() -> None:
    seen_while_streaming: list[float] = []

    @get("/things/{thing_id:str}")
    async def thing(thing_id: FromPath[str]) -> dict[str, str]:
        return {"id": thing_id}

    @get("/events")
    async def events() -> Stream:
        async def body() -> AsyncIterator[bytes]:
            seen_while_streaming.append(value("aichat_sse_streams_open"))
            yield b"event: delta\ndata: {}\n\n"

        return Stream(body(), media_type="text/event-stream")

    app = Litestar([thing, events], middleware=[metrics_middleware])
    open_before = value("aichat_sse_streams_open")
    ok_before = value("aichat_http_requests_total", method="GET", route="/things/{thing_id}", status="200")
    async with AsyncTestClient(app) as client:
        for name in ("a", "b", str(uuid.uuid4())):
            assert (await client.get(f"/things/{name}")).status_code == 200
        assert (await client.get("/events")).status_code == 200
    assert value("aichat_http_requests_total", method="GET", route="/things/{thing_id}", status="200") == ok_before + 3
    assert seen_while_streaming == [open_before + 1]
    assert value("aichat_sse_streams_open") == open_before
    assert value("aichat_http_request_duration_seconds_count", method="GET", route="/events") >= 1


def test_the_text_format_names_every_metric_with_its_unit() -> None:
    text = generate_latest(REGISTRY).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "aichat_turns",
        "aichat_turn_first_delta_seconds",
        "aichat_turn_duration_seconds",
        "aichat_upstream_request_duration_seconds",
        "aichat_upstream_errors",
        "aichat_rate_limit_refusals",
        "aichat_cost_drift_usd",
        "aichat_http_requests",
        "aichat_sse_streams_open",
        "process_resident_memory_bytes",
    } <= names
