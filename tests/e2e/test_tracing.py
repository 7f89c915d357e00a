"""Issue 15, traces, on the real stack: the service in-process, traced into the SDK's in-memory exporter, runs one
chat turn against the real Letta, LiteLLM double and Postgres. The turn's trace holds the statement that starts it,
Letta's call with its first token, and the statement that stores it, in that order."""

from __future__ import annotations

import asyncio

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from devstack.stack import Stack
from service.app import create_app
from service.settings import load_settings
from tests.e2e.conftest import StackClient

pytestmark = pytest.mark.e2e


def one(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    named = [span for span in spans if span.name == name]
    assert len(named) == 1, (name, sorted(span.name for span in spans))
    return named[0]


async def test_a_turns_trace_shows_the_statements_around_letta_and_its_first_token(
    client: StackClient, stack: Stack, exporter: InMemorySpanExporter
) -> None:
    user = await client.sign_up("Tia")  # provisioned by the stack's service process
    app = create_app(load_settings(stack.service_environment()))
    async with AsyncTestClient(app) as service:
        response = await service.post(
            "/api/v1/chat/message",
            headers={**user.headers, "Accept": "text/event-stream"},
            json={"content": "Hello!"},
            timeout=120,
        )
        assert response.status_code == 200 and "event: done" in response.text
        await asyncio.sleep(0.5)  # Letta's stream is read to its end in the background, then its span ends
    finished = list(exporter.get_finished_spans())
    server = one(
        [s for s in finished if s.kind is SpanKind.SERVER and s.name == "POST /api/v1/chat/message"],
        "POST /api/v1/chat/message",
    )
    trace = [span for span in finished if span.context.trace_id == server.context.trace_id]
    begin = one(trace, "chat.store.BEGIN_TURN")
    letta = one(trace, "POST letta /v1/agents/{id}/messages")
    stored = one(trace, "chat.store.STORE_TURN")
    for span in (begin, letta, stored):
        assert span.parent is not None and span.kind is SpanKind.CLIENT
    assert letta.parent is not None and letta.parent.span_id == server.context.span_id
    (first_token,) = [event for event in letta.events if event.name == "first token"]
    assert begin.end_time is not None and letta.start_time is not None and stored.start_time is not None
    # The turn starts in Postgres, Letta answers, its first token comes, and then the turn is stored.
    assert begin.end_time <= letta.start_time < first_token.timestamp < stored.start_time
    assert letta.attributes is not None and letta.attributes["http.response.status_code"] == 200
    # Statements are traced by their text, never their parameters: the message and the user are not in the trace.
    for span in trace:
        for attribute in (span.attributes or {}).values():
            assert "Hello!" not in str(attribute) and str(user.id) not in str(attribute)
