"""Traces, read with the SDK's in-memory exporter: a client span for every upstream call (through the real pooled
client to loopback servers), the trace passed on in ``traceparent``, Letta's first token as an event, server spans
named after their route, statements named after their constant; and nothing at all while tracing is off. (A whole
turn's trace on the real stack: tests/e2e/test_tracing.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import socket
import sys
import threading
import uuid

import httpx
import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient
from opentelemetry.trace import SpanKind, StatusCode

from service.chat import store as chat_store
from service.clients.http import http_client
from service.clients.letta import LettaClient
from service.observability import tracing
from service.settings import SettingsError, load_settings
from tests.unit.conftest import Behaviour

BASE_ENV = {
    "DATABASE_URL": "postgresql://u:p@127.0.0.1:9/db",
    "SUPABASE_URL": "http://127.0.0.1:54321",
    "LETTA_BASE_URL": "http://127.0.0.1:9",
    "LITELLM_BASE_URL": "http://127.0.0.1:9",
    "LITELLM_MASTER_KEY": "sk-unused",
}


def recording(heads: list[bytes], status: int = 200) -> Behaviour:
    """Answers every request with ``status`` and keeps each request's head."""

    async def behaviour(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):  # the client closed its connection
            while head := await reader.readuntil(b"\r\n\r\n"):
                heads.append(head.lower())
                writer.write(b"HTTP/1.1 %d X\r\ncontent-length: 2\r\n\r\n{}" % status)
                await writer.drain()

    return behaviour


def client_for(**upstreams: str) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=5)
    return http_client(limits=limits, timeout=httpx.Timeout(5.0), upstreams=upstreams)


def traceparent(head: bytes) -> str | None:
    for line in head.split(b"\r\n"):
        if line.startswith(b"traceparent:"):
            return line.split(b":", 1)[1].strip().decode()
    return None


async def test_off_by_default_nothing_is_traced_or_sent(serve) -> None:  # type: ignore[no-untyped-def]
    assert tracing.tracer() is None and tracing.server_middleware() == []
    heads: list[bytes] = []
    url = await serve(recording(heads))
    async with client_for(letta=url) as http:
        await http.get(f"{url}/v1/health/")
    assert heads and traceparent(heads[0]) is None


async def test_an_upstream_call_is_a_client_span_of_the_callers_trace(exporter, serve) -> None:  # type: ignore[no-untyped-def]
    heads: list[bytes] = []
    url = await serve(recording(heads))
    tracer = tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("request") as parent:
        async with client_for(letta=url) as http:
            response = await http.get(f"{url}/v1/agents/agent-{uuid.uuid4()}", params={"include": "agent.blocks"})
    assert response.status_code == 200
    (span,) = [s for s in exporter.get_finished_spans() if s.name != "request"]
    assert span.name == "GET letta /v1/agents/{id}" and span.kind is SpanKind.CLIENT
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert span.attributes is not None
    assert span.attributes["url.template"] == "/v1/agents/{id}" and span.attributes["peer.service"] == "letta"
    assert span.attributes["http.response.status_code"] == 200
    assert not any("agent-" in str(v) for v in span.attributes.values())  # ids stay out of names and attributes
    # The upstream was told the trace and the span it is part of.
    assert (traceparent(heads[0]) or "").startswith(f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-")


async def test_failed_calls_are_error_spans(exporter, serve) -> None:  # type: ignore[no-untyped-def]
    url = await serve(recording([], status=502))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    async with client_for(litellm=url) as http:
        assert (await http.post(f"{url}/user/new", json={})).status_code == 502
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{closed}/health/liveliness")
    answered, refused = sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
    assert answered.name == "POST litellm /user/new" and answered.status.status_code is StatusCode.ERROR
    assert refused.name == "GET other /health/liveliness" and refused.status.status_code is StatusCode.ERROR
    assert refused.attributes is not None and refused.attributes["error.type"] == "ConnectError"


async def test_lettas_stream_is_one_span_with_its_first_token_as_an_event(exporter, serve) -> None:  # type: ignore[no-untyped-def]
    async def letta(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        events = [
            b'{"message_type": "ping"}',
            b'{"message_type": "assistant_message", "id": "m1", "content": "Hi"}',
            b'{"message_type": "assistant_message", "id": "m1", "content": "!"}',
            b"[DONE]",
        ]
        for event in events:
            await asyncio.sleep(0.1)
            chunk = b"data: " + event + b"\n\n"
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    url = await serve(letta)
    async with client_for(letta=url) as http:
        client = LettaClient(http, url, None)
        stream = await client.open_stream(client.turn_request(f"agent-{uuid.uuid4()}", "hi", str(uuid.uuid4())))
        assert exporter.get_finished_spans() == ()  # open while the reply streams
        async for _ in stream:
            pass
        await stream.close()
        await asyncio.sleep(0.1)  # the rest of a finished stream is read in the background
    (span,) = exporter.get_finished_spans()
    assert span.name == "POST letta /v1/agents/{id}/messages"
    (event,) = span.events
    assert event.name == "first token"
    assert span.start_time is not None and span.end_time is not None
    # The first token came with the second event, ~0.2 s in; the span ended when the stream did, ~0.4 s in.
    assert 0.18e9 <= event.timestamp - span.start_time < 0.3e9
    assert span.end_time - span.start_time >= 0.38e9


def test_statements_are_named_after_their_constant() -> None:
    names = tracing.statement_names()
    assert names[chat_store.BEGIN_TURN] == "chat.store.BEGIN_TURN"
    assert names[chat_store.STORE_TURN] == "chat.store.STORE_TURN"
    for text, name in names.items():  # each name says where its statement is defined
        module, constant = name.rsplit(".", 1)
        defined = vars(sys.modules[f"service.{module}"])
        assert text in (defined.get(constant), defined.get(f"_{constant}"))


async def test_a_statement_span_takes_its_name_and_others_keep_theirs(exporter) -> None:  # type: ignore[no-untyped-def]
    tracer = tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("WITH", attributes={"db.statement": chat_store.BEGIN_TURN}):
        pass
    with tracer.start_as_current_span("select", attributes={"db.statement": "select 1"}):
        pass
    assert [span.name for span in exporter.get_finished_spans()] == ["chat.store.BEGIN_TURN", "select"]


async def test_a_server_span_is_named_after_its_route(exporter) -> None:  # type: ignore[no-untyped-def]
    @get("/things/{thing_id:str}")
    async def thing(thing_id: FromPath[str]) -> dict[str, str]:
        return {"id": thing_id}

    @get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    app = Litestar([thing, live], middleware=tracing.server_middleware())
    async with AsyncTestClient(app) as client:
        assert (await client.get(f"/things/{uuid.uuid4()}")).status_code == 200
        assert (await client.get("/health/live")).status_code == 200
    (span,) = exporter.get_finished_spans()  # health probes make no traces
    assert span.name == "GET /things/{thing_id}" and span.kind is SpanKind.SERVER
    assert span.attributes is not None and span.attributes["http.route"] == "/things/{thing_id}"


def test_settings_turn_tracing_on_with_an_otlp_endpoint() -> None:
    assert load_settings(BASE_ENV).otlp_traces_endpoint is None
    base = load_settings({**BASE_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert base.otlp_traces_endpoint == "http://collector:4318/v1/traces"
    own = load_settings(
        {
            **BASE_ENV,
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example/v1/traces",
        }
    )
    assert own.otlp_traces_endpoint == "https://traces.example/v1/traces"
    disabled = {**BASE_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"}
    assert load_settings(disabled).otlp_traces_endpoint is None
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {**BASE_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        )
    assert len(caught.value.problems) == 2
    assert "OTEL_EXPORTER_OTLP_ENDPOINT='collector:4317' is not an http(s) URL" in caught.value.problems
    assert any("only http/protobuf" in problem for problem in caught.value.problems)


def test_configure_starts_tracing_to_the_endpoint_and_stops_only_its_own() -> None:
    tracing.configure(load_settings(BASE_ENV))
    assert tracing.tracer() is None
    tracing.configure(load_settings({**BASE_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}))
    try:
        assert tracing.tracer() is not None and len(tracing.server_middleware()) == 2
    finally:
        tracing.stop_configured()
    assert tracing.tracer() is None


def test_a_test_provider_outlives_an_apps_shutdown(exporter) -> None:  # type: ignore[no-untyped-def]
    tracing.stop_configured()  # what an app's lifespan does at shutdown
    assert tracing.tracer() is not None


def test_configured_tracing_sends_its_spans_over_otlp_http() -> None:
    received: list[tuple[str, str, bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append((self.path, self.headers["content-type"], body))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        tracing.configure(
            load_settings({**BASE_ENV, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "chat-a"})
        )
        tracer = tracing.tracer()
        assert tracer is not None
        with tracer.start_as_current_span("a span of ours"):
            pass
        tracing.stop_configured()  # at shutdown: what is buffered is sent
    finally:
        server.shutdown()
    ((path, content_type, body),) = received
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    assert b"a span of ours" in body and b"chat-a" in body  # the span, and the service.name resource attribute
