"""Contract and failure paths of our Letta client: what letta-client 1.12.1 sends for our calls, and how
Letta 0.16.8's answers (bodies, SSE streams, errors) come back through ``LettaClient``.

The SSE fixtures are copied from what Letta 0.16.8's own schemas serialise (``LettaPing``,
``AssistantMessage``... ``.model_dump_json()``, see ``letta/services/streaming_service.py`` and
``letta/agents/letta_agent_v3.py``), including its mid-stream error form
``data: <stop_reason>`` / ``event: error`` / ``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pytest_httpx import HTTPXMock, IteratorStream

from service.agents.spec import agent_name, provider_name, user_tag
from service.clients import letta_stream as letta_stream_module
from service.clients.errors import UpstreamError
from service.clients.letta import LettaClient
from service.clients.letta_stream import LettaStream
from service.clients.retry import with_retries

OTID = "0c4d2e1f-0000-4000-8000-000000000003"  # the stored user message id a turn carries

BASE = "http://letta.test:8283"
LITELLM_V1 = "http://litellm.test:4000/v1"
USER = "7f9c2a4e-0000-4000-8000-000000000001"
AGENT = "agent-0a1b2c3d-0000-4000-8000-000000000001"
PROVIDER = "provider-1b2c3d4e-0000-4000-8000-000000000001"
RUN = "run-5f0c5b1e-3c8e-4b8e-9d55-0f3a1f2a7c11"
STREAM_URL = f"{BASE}/v1/agents/{AGENT}/messages"


# -- Letta 0.16.8's bodies ---------------------------------------------------------------------------------


def provider_json(provider_id: str = PROVIDER, name: str = "user-u1") -> dict[str, Any]:
    """``Provider.model_dump_json()`` of Letta 0.16.8 for a BYOK OpenAI provider."""
    return {
        "id": provider_id,
        "name": name,
        "provider_type": "openai",
        "provider_category": "byok",
        "api_key": None,
        "base_url": LITELLM_V1,
        "access_key": None,
        "region": None,
        "api_version": None,
        "organization_id": "org-00000000-0000-4000-8000-000000000000",
        "updated_at": "2025-11-21T13:00:00Z",
        "last_synced": None,
        "api_key_enc": None,
        "access_key_enc": None,
    }


def agent_json(agent_id: str = AGENT, created_at: str = "2025-11-21T13:00:00Z") -> dict[str, Any]:
    return {
        "id": agent_id,
        "name": agent_name(USER),
        "agent_type": "letta_v1_agent",
        "created_at": created_at,
        "tags": [user_tag(USER)],
        "system": "You are a helpful companion.",
        "blocks": [],
        "memory": {"blocks": []},
        "sources": [],
        "tools": [],
        "llm_config": {
            "model": "gpt-4o-mini",
            "model_endpoint_type": "openai",
            "model_endpoint": LITELLM_V1,
            "context_window": 128000,
            "provider_name": provider_name(USER),
            "provider_category": "byok",
        },
    }


def not_found(what: str) -> dict[str, Any]:
    return {"detail": f"{what} not found"}  # Letta's error_handler_with_code(code=404)


def _common(seq: int, message_id: str, step: str | None) -> dict[str, Any]:
    return {
        "id": message_id,
        "date": "2025-11-21T13:00:00+00:00",
        "name": None,
        "otid": None,
        "sender_id": None,
        "step_id": step,
        "is_err": None,
        "seq_id": seq,
        "run_id": RUN,
    }


PING = {**_common(0, "ping-1", None), "message_type": "ping"}
TOOL_CALL = {
    **_common(1, "message-aa", "step-1"),
    "message_type": "tool_call_message",
    "tool_call": {
        "name": "memory_insert",
        "arguments": '{"label": "human", "new_str": "likes tea"}',
        "tool_call_id": "call_1",
    },
    "tool_calls": None,
}
TOOL_RETURN = {
    **_common(2, "message-bb", "step-1"),
    "message_type": "tool_return_message",
    "tool_return": "None",
    "status": "success",
    "tool_call_id": "call_1",
    "stdout": None,
    "stderr": None,
    "tool_returns": None,
}
TOKENS = [
    {**_common(3 + i, "message-cc", "step-2"), "otid": "otid-cc", "message_type": "assistant_message", "content": text}
    for i, text in enumerate(["Hel", "lo", "!"])
]
END_TURN = {"message_type": "stop_reason", "stop_reason": "end_turn"}
LLM_API_ERROR = {"message_type": "stop_reason", "stop_reason": "llm_api_error"}
USAGE = {
    "message_type": "usage_statistics",
    "completion_tokens": 56,
    "prompt_tokens": 1234,
    "total_tokens": 1290,
    "step_count": 2,
    "run_ids": [RUN],
    "cached_input_tokens": None,
    "cache_write_tokens": None,
    "reasoning_tokens": None,
    "context_tokens": None,
}
ERROR_MESSAGE = {
    "message_type": "error_message",
    "run_id": RUN,
    "error_type": "llm_error",
    "message": "An error occurred with the LLM request.",
    "detail": "Budget has been exceeded! Current cost: 5.01, Max budget: 5.0",
    "seq_id": None,
}


def data(event: dict[str, Any] | str) -> bytes:
    payload = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


def error_event(body: dict[str, Any]) -> bytes:
    return f"event: error\ndata: {json.dumps(body, separators=(',', ':'))}\n\n".encode()


def rechunk(body: bytes, size: int) -> list[bytes]:
    """Split a stream at arbitrary byte offsets, as the network does."""
    return [body[i : i + size] for i in range(0, len(body), size)]


def sse_response(httpx_mock: HTTPXMock, chunks: list[bytes] | Iterator[bytes], **kwargs: Any) -> None:
    httpx_mock.add_response(
        method="POST",
        url=STREAM_URL,
        headers={"content-type": "text/event-stream"},
        stream=IteratorStream(chunks),
        **kwargs,
    )


async def collect(stream: LettaStream) -> list[Any]:
    return [event async for event in stream]


# -- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _no_letta_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # letta-client reads LETTA_API_KEY / LETTA_CUSTOM_HEADERS from the environment: keep the caller's out.
    for name in ("LETTA_API_KEY", "LETTA_CUSTOM_HEADERS", "LETTA_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def letta(http: httpx.AsyncClient) -> LettaClient:
    return LettaClient(http, BASE + "/", None)


def only_request(httpx_mock: HTTPXMock) -> httpx.Request:
    requests = httpx_mock.get_requests()
    assert len(requests) == 1, [str(r.url) for r in requests]
    return requests[0]


# -- authorization -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, ""], ids=["none", "empty"])
async def test_no_token_sends_no_authorization_header(
    http: httpx.AsyncClient, httpx_mock: HTTPXMock, token: str | None
) -> None:
    httpx_mock.add_response(method="GET", url=f"{BASE}/v1/agents/{AGENT}", json=agent_json())

    await LettaClient(http, BASE, token).get_agent(AGENT)

    request = only_request(httpx_mock)
    assert "authorization" not in request.headers, request.headers.get("authorization")


async def test_token_is_sent_as_bearer(http: httpx.AsyncClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{BASE}/v1/providers/{PROVIDER}", json=provider_json())
    sse_response(httpx_mock, [data(END_TURN), data("[DONE]")])
    letta = LettaClient(http, BASE, "letta-server-password")

    await letta.get_provider(PROVIDER)
    await collect(await letta.open_stream(letta.turn_request(AGENT, "hi", OTID)))  # the one call made without the SDK

    assert [r.headers["authorization"] for r in httpx_mock.get_requests()] == ["Bearer letta-server-password"] * 2


async def test_no_token_ignores_letta_api_key_from_the_environment(
    http: httpx.AsyncClient, httpx_mock: HTTPXMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BUG (service/clients/letta.py:59): ``api_key=token or None`` lets letta-client fall back to
    ``os.environ["LETTA_API_KEY"]``. With ``LETTA_API_KEY=`` (empty) in the service's environment it sends
    ``Authorization: Bearer `` again, the regression this client was written to avoid; with a non-empty one
    it sends a token our settings (``LETTA_API_TOKEN``) never configured."""
    monkeypatch.setenv("LETTA_API_KEY", "")
    httpx_mock.add_response(method="GET", url=f"{BASE}/v1/agents/{AGENT}", json=agent_json())

    await LettaClient(http, BASE, None).get_agent(AGENT)

    assert "authorization" not in only_request(httpx_mock).headers


# -- providers ---------------------------------------------------------------------------------------------


async def test_find_provider_lists_by_name(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    name = provider_name(USER)
    other = provider_json("provider-other", "user-someone-else")
    mine = provider_json(PROVIDER, name)
    httpx_mock.add_response(method="GET", url=f"{BASE}/v1/providers/?name={name}", json=[other, mine])

    found = await letta.find_provider(name)

    assert found is not None
    assert found["id"] == PROVIDER  # the exact-name match, not the first row
    request = only_request(httpx_mock)
    assert request.url.path == "/v1/providers/"
    assert dict(request.url.params) == {"name": name}


@pytest.mark.parametrize(
    "body", [[], [provider_json(name="user-other")], {"detail": "odd"}], ids=["empty", "other", "obj"]
)
async def test_find_provider_without_match_is_none(letta: LettaClient, httpx_mock: HTTPXMock, body: Any) -> None:
    httpx_mock.add_response(method="GET", url=f"{BASE}/v1/providers/?name=user-u1", json=body)

    assert await letta.find_provider("user-u1") is None


async def test_create_provider_body(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/v1/providers/", json=provider_json())

    created = await letta.create_provider("user-u1", "sk-user-key", LITELLM_V1)

    assert created["id"] == PROVIDER
    request = only_request(httpx_mock)
    assert request.method == "POST"
    assert request.url.path == "/v1/providers/"
    assert json.loads(request.content) == {
        "name": "user-u1",
        "provider_type": "openai",
        "api_key": "sk-user-key",
        "base_url": LITELLM_V1,
    }


async def test_update_provider_key_patches(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="PATCH", url=f"{BASE}/v1/providers/{PROVIDER}", json=provider_json())

    assert await letta.update_provider_key(PROVIDER, "sk-rotated", LITELLM_V1) is None

    request = only_request(httpx_mock)
    assert request.method == "PATCH"
    assert json.loads(request.content) == {"api_key": "sk-rotated", "base_url": LITELLM_V1}


async def test_get_provider(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{BASE}/v1/providers/{PROVIDER}", json=provider_json())

    provider = await letta.get_provider(PROVIDER)

    assert provider is not None
    assert provider["provider_category"] == "byok"


async def test_get_unknown_provider_is_none(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/v1/providers/{PROVIDER}", status_code=404, json=not_found("Provider"))

    assert await letta.get_provider(PROVIDER) is None


async def test_delete_provider(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="DELETE",
        url=f"{BASE}/v1/providers/{PROVIDER}",
        json={"message": f"Provider id={PROVIDER} successfully deleted"},
    )

    await letta.delete_provider(PROVIDER)

    assert only_request(httpx_mock).method == "DELETE"


async def test_delete_unknown_provider_is_not_an_error(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="DELETE", url=f"{BASE}/v1/providers/{PROVIDER}", status_code=404, json=not_found("Provider")
    )

    assert await letta.delete_provider(PROVIDER) is None
    assert len(httpx_mock.get_requests()) == 1


async def test_delete_provider_server_error_is_raised(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="DELETE",
        url=f"{BASE}/v1/providers/{PROVIDER}",
        status_code=500,
        json={"detail": "An unknown error occurred"},
    )

    with pytest.raises(UpstreamError) as caught:
        await letta.delete_provider(PROVIDER)

    assert caught.value.status == 500
    assert caught.value.transient is True


# -- agents ------------------------------------------------------------------------------------------------


async def test_agents_of_filters_by_user_tag_and_sorts_oldest_first(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    agents = [
        agent_json("agent-c", "2025-11-21T13:00:02Z"),
        agent_json("agent-a", "2025-11-21T13:00:00.250000Z"),
        agent_json("agent-d", "2025-11-21T13:00:00Z"),
        agent_json("agent-b", "2025-11-21T13:00:00.250000Z"),
    ]
    httpx_mock.add_response(method="GET", url=re_agents_list(), json=agents)

    result = await letta.agents_tagged(user_tag(USER))

    assert [a.id for a in result] == ["agent-d", "agent-a", "agent-b", "agent-c"]
    request = only_request(httpx_mock)
    assert request.url.path == "/v1/agents/"
    assert request.url.params.get_list("tags") == [f"user:{USER}"]
    assert request.url.params["match_all_tags"] == "true"
    assert request.url.params["limit"] == "50"


def re_agents_list() -> re.Pattern[str]:
    return re.compile(re.escape(f"{BASE}/v1/agents/") + r"\?.*")


async def test_agents_of_nobody_is_empty(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=re_agents_list(), json=[])

    assert await letta.agents_tagged(user_tag(USER)) == []


async def test_create_agent_sends_the_spec(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    spec = {
        "name": agent_name(USER),
        "agent_type": "letta_v1_agent",
        "tags": [user_tag(USER)],
        "llm_config": agent_json()["llm_config"],
        "embedding": "openai/text-embedding-3-small",
    }
    httpx_mock.add_response(method="POST", url=f"{BASE}/v1/agents/", json=agent_json())

    agent = await letta.create_agent(spec)

    assert agent.id == AGENT
    assert agent.llm_config.provider_name == provider_name(USER)
    body = json.loads(only_request(httpx_mock).content)
    assert body["llm_config"]["provider_name"] == provider_name(USER)
    assert body["llm_config"]["provider_category"] == "byok"
    assert body["tags"] == [f"user:{USER}"]
    assert body["name"] == f"agent-{USER}"


async def test_get_agent_parses_agent_state(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{BASE}/v1/agents/{AGENT}", json=agent_json())

    agent = await letta.get_agent(AGENT)

    assert agent is not None
    assert agent.id == AGENT
    assert agent.tags == [f"user:{USER}"]


async def test_get_unknown_agent_is_none(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/v1/agents/{AGENT}", status_code=404, json={"detail": "Agent not found"})

    assert await letta.get_agent(AGENT) is None


async def test_delete_agent_deletes_its_archives_too(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    # Letta 0.16.8 keeps an agent's archive (passages, embeddings) when the agent is deleted.
    archives = f"{BASE}/v1/archives/?agent_id={AGENT}"
    httpx_mock.add_response(method="GET", url=archives, json=[{"id": "archive-1", "name": "user-u1"}])
    httpx_mock.add_response(
        method="DELETE", url=f"{BASE}/v1/agents/{AGENT}", json={"message": f"Agent id={AGENT} successfully deleted"}
    )
    httpx_mock.add_response(method="GET", url=f"{BASE}/v1/archives/archive-1/agents", json=[])
    httpx_mock.add_response(method="DELETE", url=f"{BASE}/v1/archives/archive-1", status_code=204)

    await letta.delete_agent(AGENT)

    assert [(r.method, r.url.path) for r in httpx_mock.get_requests()] == [
        ("GET", "/v1/archives/"),
        ("DELETE", f"/v1/agents/{AGENT}"),
        ("GET", "/v1/archives/archive-1/agents"),
        ("DELETE", "/v1/archives/archive-1"),
    ]


async def test_an_archive_another_agent_uses_is_kept(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{BASE}/v1/archives/?agent_id={AGENT}", json=[{"id": "archive-1"}])
    httpx_mock.add_response(method="DELETE", url=f"{BASE}/v1/agents/{AGENT}", json={})
    httpx_mock.add_response(method="GET", url=f"{BASE}/v1/archives/archive-1/agents", json=[{"id": "agent-other"}])

    await letta.delete_agent(AGENT)

    assert ("DELETE", "/v1/archives/archive-1") not in [(r.method, r.url.path) for r in httpx_mock.get_requests()]


async def test_delete_unknown_agent_is_not_an_error(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{BASE}/v1/archives/?agent_id={AGENT}", json=[])
    httpx_mock.add_response(method="DELETE", url=f"{BASE}/v1/agents/{AGENT}", status_code=404, json=not_found("Agent"))

    assert await letta.delete_agent(AGENT) is None


# -- failures ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
async def test_server_errors_are_transient(letta: LettaClient, httpx_mock: HTTPXMock, status: int) -> None:
    httpx_mock.add_response(url=f"{BASE}/v1/agents/{AGENT}", status_code=status, json={"detail": "boom"})

    with pytest.raises(UpstreamError) as caught:
        await letta.get_agent(AGENT)

    assert caught.value.status == status
    assert caught.value.transient is True
    assert caught.value.service == "letta"
    assert f"HTTP {status}" in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 403, 409, 422])
async def test_client_errors_are_final(letta: LettaClient, httpx_mock: HTTPXMock, status: int) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/v1/providers/", status_code=status, json={"detail": "no"})

    with pytest.raises(UpstreamError) as caught:
        await letta.create_provider("user-u1", "sk", LITELLM_V1)

    assert caught.value.status == status
    assert caught.value.transient is False


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("timed out"), httpx.RemoteProtocolError("closed")],
    ids=["connect", "timeout", "protocol"],
)
async def test_transport_failures_are_transient(letta: LettaClient, httpx_mock: HTTPXMock, exc: Exception) -> None:
    httpx_mock.add_exception(exc, url=f"{BASE}/v1/agents/{AGENT}")

    with pytest.raises(UpstreamError) as caught:
        await letta.get_agent(AGENT)

    assert caught.value.transient is True
    assert caught.value.status is None
    # Only a timeout after the request went out may still be acted on by Letta.
    assert caught.value.timed_out is isinstance(exc, httpx.ReadTimeout)


async def test_a_connect_timeout_never_reached_letta(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ConnectTimeout("slow connect"), url=STREAM_URL)
    with pytest.raises(UpstreamError) as caught:
        await letta.open_stream(letta.turn_request(AGENT, "hi", OTID))
    assert caught.value.transient is True and caught.value.timed_out is False


async def test_real_connection_refused_is_transient(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    letta = LettaClient(http, f"http://127.0.0.1:{port}", None)

    with pytest.raises(UpstreamError) as caught:
        await letta.find_provider("user-u1")

    assert caught.value.transient is True
    assert caught.value.status is None
    assert "APIConnectionError" in str(caught.value)
    assert "All connection attempts failed" in str(caught.value)  # httpx's cause is kept in the message
    assert isinstance(caught.value.__cause__.__cause__, httpx.ConnectError)


async def test_with_retries_recovers_from_two_503s(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    url = f"{BASE}/v1/agents/{AGENT}"
    httpx_mock.add_response(url=url, status_code=503, json={"detail": "An unknown error occurred"})
    httpx_mock.add_response(url=url, status_code=503, json={"detail": "An unknown error occurred"})
    httpx_mock.add_response(url=url, json=agent_json())

    agent = await with_retries(lambda: letta.get_agent(AGENT), attempts=3, base=0.001)

    assert agent is not None and agent.id == AGENT
    assert len(httpx_mock.get_requests()) == 3  # the SDK itself retried nothing (max_retries=0)


async def test_with_retries_does_not_retry_a_rejected_create(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/v1/agents/", status_code=422, json={"detail": "bad spec"})

    with pytest.raises(UpstreamError):
        await with_retries(lambda: letta.create_agent({"name": "x"}), attempts=3, base=0.001)

    assert len(httpx_mock.get_requests()) == 1


# -- streaming ---------------------------------------------------------------------------------------------


async def test_open_stream_request(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    sse_response(httpx_mock, [data(END_TURN), data("[DONE]")])

    stream = await letta.open_stream(letta.turn_request(AGENT, "Hello there", OTID))
    await collect(stream)

    request = only_request(httpx_mock)
    assert request.method == "POST"
    assert request.url.path == f"/v1/agents/{AGENT}/messages"
    assert json.loads(request.content) == {
        "messages": [{"role": "user", "content": "Hello there", "otid": OTID}],
        "streaming": True,
        "stream_tokens": True,
        "include_pings": True,
    }
    assert "authorization" not in request.headers
    # Letta 0.16.8 streams from /messages only for letta-client 1.x, which it knows by its version header; the
    # SDK's other headers (Letta reads none of them) are not sent.
    assert request.headers["x-stainless-package-version"] == "1.12.1"
    assert [name for name in request.headers if name.startswith("x-stainless")] == ["x-stainless-package-version"]


async def test_stream_parses_a_letta_turn_into_typed_events(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    events = [PING, TOOL_CALL, TOOL_RETURN, *TOKENS, END_TURN, USAGE, "[DONE]"]
    body = b"".join(data(event) for event in events)
    sse_response(httpx_mock, rechunk(body, 37))  # events split across network chunks

    events = await collect(await letta.open_stream(letta.turn_request(AGENT, "Remember I like tea", OTID)))

    assert [e.message_type for e in events] == [
        "ping",
        "tool_call_message",
        "tool_return_message",
        "assistant_message",
        "assistant_message",
        "assistant_message",
        "stop_reason",
        "usage_statistics",
    ]
    ping, call, ret, *tokens, stop, usage = events
    assert ping.message_type == "ping"
    assert ping.run_id == RUN
    assert call.tool_call.name == "memory_insert"
    assert json.loads(call.tool_call.arguments) == {"label": "human", "new_str": "likes tea"}
    assert (ret.status, ret.tool_call_id, ret.tool_return) == ("success", "call_1", "None")
    assert {t.id for t in tokens} == {"message-cc"}  # one message, one event per token
    assert "".join(t.content for t in tokens) == "Hello!"
    assert [t.seq_id for t in tokens] == [3, 4, 5]
    assert stop.stop_reason == "end_turn"
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.step_count) == (1234, 56, 1290, 2)


async def test_events_after_done_are_ignored(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    sse_response(httpx_mock, [data(TOKENS[0]), data("[DONE]"), data(TOKENS[1])])

    events = await collect(await letta.open_stream(letta.turn_request(AGENT, "hi", OTID)))

    assert [e.content for e in events] == ["Hel"]


async def test_a_turn_ends_at_done_and_the_connection_is_reused(http: httpx.AsyncClient) -> None:
    """The turn ends at [DONE]; the rest of the body (Letta ends it only after finishing its run) is read in the
    background, so the connection, read to its end, goes back to the pool and the next turn reuses it.

    A real loopback server, chunked like Letta's uvicorn: the body's last chunk waits until the test allows it.
    """
    connections = 0
    end_body = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while request := await reader.readuntil(b"\r\n\r\n"):
            length = int(re.search(rb"content-length: (\d+)", request, re.IGNORECASE)[1])  # type: ignore[index]
            await reader.readexactly(length)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for event in (data(TOKENS[0]), data(END_TURN), data("[DONE]")):
                writer.write(b"%x\r\n%s\r\n" % (len(event), event))
            await writer.drain()
            await end_body.wait()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    letta = LettaClient(http, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", None)
    try:
        for _ in range(3):
            end_body.clear()
            stream = await letta.open_stream(letta.turn_request(AGENT, "hi", OTID))
            assert [e.message_type for e in await collect(stream)] == ["assistant_message", "stop_reason"]
            await stream.close()  # returns although the body has not ended
            await stream.close()  # a cancel and the turn's clean-up may both close it: one drain
            assert not stream._response.is_closed and len(letta_stream_module._draining) == 1
            end_body.set()
            await asyncio.gather(*letta_stream_module._draining)
            assert stream._response.is_closed
    finally:
        server.close()

    assert connections == 1


async def test_stream_error_event_raises_upstream_error(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    # Letta 0.16.8 on an LLM failure (streaming_service.py): stop_reason, `event: error`, [DONE].
    sse_response(
        httpx_mock, [data(PING), data(TOKENS[0]), data(LLM_API_ERROR), error_event(ERROR_MESSAGE), data("[DONE]")]
    )
    stream = await letta.open_stream(letta.turn_request(AGENT, "hi", OTID))
    seen: list[Any] = []

    with pytest.raises(UpstreamError) as caught:
        async for event in stream:
            seen.append(event)

    assert [getattr(e, "message_type", None) for e in seen] == ["ping", "assistant_message", "stop_reason"]
    assert seen[-1].stop_reason == "llm_api_error"
    error = caught.value
    # The in-stream error is raised carrying the stream's HTTP status (200): the agent's failure, not a lost link.
    assert error.status == 200
    assert error.transient is False
    assert "llm_error" in str(error)
    assert "Budget has been exceeded!" in str(error)


async def test_stream_internal_error_event_raises(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    # Letta's StreamingResponseWithStatusCode once the response has started (streaming_response.py).
    crash = {"error": "Stream was terminated due to unexpected cancellation", "code": "INTERNAL_SERVER_ERROR"}
    sse_response(httpx_mock, [data(TOKENS[0]), error_event(crash)])
    stream = await letta.open_stream(letta.turn_request(AGENT, "hi", OTID))

    with pytest.raises(UpstreamError) as caught:
        await collect(stream)

    assert "INTERNAL_SERVER_ERROR" in str(caught.value)
    assert caught.value.service == "letta"


async def test_data_only_error_message_is_a_typed_event(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    # Without an `event: error` line nothing is raised: the error arrives as an event to act on.
    sse_response(httpx_mock, [data(ERROR_MESSAGE), data(LLM_API_ERROR), data("[DONE]")])

    events = await collect(await letta.open_stream(letta.turn_request(AGENT, "hi", OTID)))

    assert events[0].message_type == "error_message"
    assert events[0].error_type == "llm_error"
    assert events[0].detail is not None and "Budget has been exceeded!" in events[0].detail
    assert events[1].stop_reason == "llm_api_error"


async def test_connection_lost_mid_stream_is_transient(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    def chunks() -> Iterator[bytes]:
        yield data(PING)
        yield data(TOKENS[0])
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    sse_response(httpx_mock, chunks())
    stream = await letta.open_stream(letta.turn_request(AGENT, "hi", OTID))
    seen: list[Any] = []

    with pytest.raises(UpstreamError) as caught:
        async for event in stream:
            seen.append(event)

    assert [e.message_type for e in seen] == ["ping", "assistant_message"]
    assert caught.value.transient is True
    assert caught.value.status is None
    assert "RemoteProtocolError" in str(caught.value)


@pytest.mark.parametrize(("status", "transient"), [(404, False), (409, False), (500, True), (503, True)])
async def test_open_stream_rejected_before_streaming(
    letta: LettaClient, httpx_mock: HTTPXMock, status: int, transient: bool
) -> None:
    httpx_mock.add_response(method="POST", url=STREAM_URL, status_code=status, json={"detail": "Agent not found"})

    with pytest.raises(UpstreamError) as caught:
        await letta.open_stream(letta.turn_request(AGENT, "hi", OTID))

    assert caught.value.status == status
    assert caught.value.transient is transient


async def test_close_ends_the_stream(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    sse_response(httpx_mock, [data(TOKENS[0]), data(TOKENS[1]), data("[DONE]")])
    stream = await letta.open_stream(letta.turn_request(AGENT, "hi", OTID))

    await stream.close()

    assert stream._response.is_closed


async def test_cancel_run(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/v1/agents/{AGENT}/messages/cancel", json={RUN: "cancelled"})

    assert await letta.cancel_run(AGENT, RUN) is None

    request = only_request(httpx_mock)
    assert request.url.path == f"/v1/agents/{AGENT}/messages/cancel"
    assert json.loads(request.content) == {"run_ids": [RUN]}


async def test_cancel_without_a_run_id_asks_letta_to_cancel_every_active_run(
    letta: LettaClient, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(method="POST", url=f"{BASE}/v1/agents/{AGENT}/messages/cancel", json={RUN: "cancelled"})

    await letta.cancel_run(AGENT, None)

    # No run_ids at all: Letta then looks up the agent's created/running runs itself.
    assert json.loads(only_request(httpx_mock).content) == {}


async def test_cancel_without_active_run_is_a_final_error(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="POST",
        url=f"{BASE}/v1/agents/{AGENT}/messages/cancel",
        status_code=409,
        json={"detail": f"No active runs to cancel for agent {AGENT}"},
    )

    with pytest.raises(UpstreamError) as caught:
        await letta.cancel_run(AGENT, RUN)

    assert caught.value.status == 409
    assert caught.value.transient is False


async def test_health(letta: LettaClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="GET", url=f"{BASE}/v1/health/", json={"version": "0.16.8", "status": "ok"})
    httpx_mock.add_exception(httpx.ConnectError("refused"), url=f"{BASE}/v1/health/")

    up = await letta.health()
    down = await letta.health()

    assert up["letta"]["ok"] is True
    assert down["letta"]["ok"] is False
    assert "ConnectError" in down["letta"]["error"]


async def test_tool_calls_as_one_delta_and_unknown_shapes_do_not_end_the_stream(
    letta: LettaClient, httpx_mock: HTTPXMock
) -> None:
    # While token streaming, Letta sends `tool_calls` as a single delta object, not a list.
    delta_call = {**TOOL_CALL, "tool_calls": {"name": "memory_insert", "arguments": "{}", "tool_call_id": "call_1"}}
    strange = {**TOKENS[0], "content": 42}  # a shape we do not know
    sse_response(httpx_mock, [data(delta_call), data(strange), data(TOKENS[1]), data("[DONE]")])

    events = await collect(await letta.open_stream(letta.turn_request(AGENT, "hi", OTID)))

    assert [e.message_type for e in events] == ["tool_call_message", "assistant_message"]
    assert events[0].tool_calls.name == "memory_insert"
    assert events[1].content == TOKENS[1]["content"]


@pytest.mark.parametrize("size", [1, 7, 4096])
async def test_a_delta_holding_a_unicode_line_separator_is_kept_whole(
    letta: LettaClient, httpx_mock: HTTPXMock, size: int
) -> None:
    """JSON leaves U+2028, U+2029 and U+0085 raw inside strings; only CR and LF end an SSE line."""
    text = "one\u2028two\u2029three\x85four"
    token = {**TOKENS[0], "content": text}
    body = json.dumps(token, ensure_ascii=False, separators=(",", ":"))
    sse_response(httpx_mock, rechunk(f"data: {body}\r\n\r\n".encode() + data(END_TURN) + data("[DONE]"), size))

    events = await collect(await letta.open_stream(letta.turn_request(AGENT, "hi", OTID)))

    assert [e.content for e in events if e.message_type == "assistant_message"] == [text]
