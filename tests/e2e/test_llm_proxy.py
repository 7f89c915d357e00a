"""Issue 17: the LLM proxy on the real stack, with the official ``openai`` package as the client.

A stock OpenAI client pointed at ``<service>/api/v1/llm`` with the user's access token as its API key: completions
(plain and streamed) billed to the user's own LiteLLM key and recorded; refusals in OpenAI's error shape (a
disallowed model, over budget, bad input); one user never sees another's usage; a client that leaves mid-stream is
still recorded; and once LiteLLM's spend records are reconciled, what we record equals what LiteLLM charged, with
each proxy call's charge on the call and not on the chat turn that was running at the same time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from devstack.sse import aiter_json_events
from tests.e2e.conftest import StackClient, User

pytestmark = pytest.mark.e2e

MODEL = "gpt-4o-mini"  # LLM_MODEL, so the only model allowed by default
EXACT = Decimal("0.00000001")  # usage_metrics keeps 8 decimals: each addition may round by half of the last


def openai_client(client: StackClient, user: User | None = None, *, api_key: str | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{client.stack.config.service_url}/api/v1/llm",
        api_key=api_key or (user.token if user else ""),
        max_retries=0,
        timeout=60,
    )


@pytest.fixture
async def ann(client: StackClient) -> AsyncIterator[tuple[User, openai.AsyncOpenAI]]:
    user = await client.sign_up("Ann")
    async with openai_client(client, user) as llm:
        yield user, llm


async def key_of(client: StackClient, user: User) -> str:
    key: str = await client.db.fetchval("select litellm_key from private.litellm_keys where user_id = $1", user.id)
    return key


async def proxied(client: StackClient, user: User) -> list[dict[str, Any]]:
    """The double's log of the proxy's calls for the user (LiteLLM's end user is the caller's id)."""
    return [
        r
        for r in await client.upstream_requests()
        if r["path"].endswith("/chat/completions") and r["body"].get("user") == str(user.id)
    ]


async def calls_of(client: StackClient, user: User) -> list[dict[str, Any]]:
    rows = await client.db.fetch("select * from public.llm_calls where user_id = $1 order by created_at", user.id)
    return [dict(row) for row in rows]


def message_of(error: openai.APIStatusError) -> str:
    """The error object's message (the SDK's ``message`` wraps the whole body)."""
    assert isinstance(error.body, dict)
    message: str = error.body["message"]
    return message


async def usage_totals(client: StackClient, user: User) -> dict[str, Any]:
    response = await client.http.get(f"{client.stack.config.service_url}/api/v1/user/usage", headers=user.headers)
    assert response.status_code == 200, response.text
    totals: dict[str, Any] = response.json()["totals"]
    return totals


async def test_plain_and_streamed_completions_are_billed_to_the_users_key_and_recorded(
    client: StackClient, ann: tuple[User, openai.AsyncOpenAI]
) -> None:
    user, llm = ann
    plain = await llm.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello there"}])
    assert plain.choices[0].message.content == "You said: hello there"
    assert plain.usage is not None and plain.usage.total_tokens > 0

    text, chunks = "", []
    stream = await llm.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream this"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    async for chunk in stream:
        chunks.append(chunk)
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    assert text == "You said: stream this"
    streamed_usage = chunks[-1].usage
    assert streamed_usage is not None and chunks[-1].choices == []

    # Billed to the user's own key, never the master key; the key itself never reached the client.
    key = await key_of(client, user)
    sent = await proxied(client, user)
    assert len(sent) == 2 and all(r["api_key"] == key for r in sent)
    assert client.stack.config.master_key not in {r["api_key"] for r in sent}
    assert key not in plain.model_dump_json() and all(key not in c.model_dump_json() for c in chunks)

    calls = await calls_of(client, user)
    assert [(c["status"], c["stream"]) for c in calls] == [("complete", False), ("complete", True)]
    assert [c["request_id"] for c in calls] == [plain.id, chunks[-1].id]
    assert calls[0]["total_tokens"] == plain.usage.total_tokens
    assert calls[1]["total_tokens"] == streamed_usage.total_tokens
    assert all(c["cost"] > 0 for c in calls)
    totals = await usage_totals(client, user)
    assert totals["total_tokens"] == plain.usage.total_tokens + streamed_usage.total_tokens
    assert totals["total_messages"] == 0

    models = await llm.models.list()
    assert [m.id for m in models.data] == [MODEL]


async def test_a_disallowed_model_is_refused_in_openais_shape(
    client: StackClient, ann: tuple[User, openai.AsyncOpenAI]
) -> None:
    user, llm = ann
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await llm.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    error = caught.value
    assert error.status_code == 403 and error.code == "model_not_allowed" and error.param == "model"
    assert error.type == "permission_error" and "GET /api/v1/llm/models" in message_of(error)
    assert await proxied(client, user) == [] and await calls_of(client, user) == []


async def test_over_budget_is_402_and_nothing_reaches_litellm(
    client: StackClient, ann: tuple[User, openai.AsyncOpenAI]
) -> None:
    user, llm = ann
    admin = {"Authorization": f"Bearer {client.stack.config.admin_api_key}"}
    changed = await client.http.post(
        f"{client.stack.config.service_url}/api/v1/user/budget",
        headers=admin,
        json={"user_id": str(user.id), "max_budget": 0.0},
    )
    assert changed.status_code == 200, changed.text
    with pytest.raises(openai.APIStatusError) as caught:
        await llm.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 402 and caught.value.code == "budget_exceeded"
    assert caught.value.type == "insufficient_quota"
    assert await proxied(client, user) == [] and await calls_of(client, user) == []


async def test_another_users_token_sees_only_their_own_usage(
    client: StackClient, ann: tuple[User, openai.AsyncOpenAI]
) -> None:
    ann_user, ann_llm = ann
    ben = await client.sign_up("Ben")
    await ann_llm.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "ann's secret 1234"}])
    assert (await usage_totals(client, ann_user))["total_tokens"] > 0
    assert (await usage_totals(client, ben))["total_tokens"] == 0
    # What supabase-js reads under RLS with each token: only their own calls.
    for user, expected in ((ann_user, 1), (ben, 0)):
        async with client.db.acquire() as conn, conn.transaction():
            await conn.execute("set local role authenticated")
            await conn.execute(
                "select set_config('request.jwt.claims', $1, true)", f'{{"sub": "{user.id}", "role": "authenticated"}}'
            )
            assert await conn.fetchval("select count(*) from public.llm_calls") == expected


async def test_a_client_that_disconnects_mid_stream_is_still_recorded(
    client: StackClient, ann: tuple[User, openai.AsyncOpenAI]
) -> None:
    user, llm = ann
    stream = await llm.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "[[slow]] tell me a story"}], stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break  # one word, then the client goes away
    await stream.close()

    call = await client.wait_for(
        "select status from public.llm_calls where user_id = $1 and status <> 'pending'", user.id, timeout=30
    )
    assert call == "complete"
    [row] = await calls_of(client, user)
    [sent] = await proxied(client, user)
    assert row["client_disconnected"] is True and sent["completed"] is True  # LiteLLM's answer was read to its end
    assert row["completion_tokens"] == sent["completion_tokens"] > 15 and row["cost"] > 0


async def test_bad_input_is_refused_as_openais_api_refuses_it(
    client: StackClient, ann: tuple[User, openai.AsyncOpenAI]
) -> None:
    user, llm = ann
    hello = [{"role": "user", "content": "hi"}]
    refusals: list[tuple[dict[str, Any], str | None, str]] = [
        ({"extra_body": {"foo": 1}}, "foo", "Unrecognized request argument supplied: foo"),
        ({"extra_body": {"store": True}}, "store", "store is not supported by this endpoint"),
        ({"max_tokens": 10_000_000}, "max_tokens", "max_tokens may be at most"),
        ({"n": 3}, "n", "n must be 1"),
        ({"temperature": 7}, "temperature", "Expected `float` <= 2"),
        ({"messages": [{"role": "user", "content": "hi", "foo": 1}]}, "messages[0]", "unknown field `foo`"),
        ({"messages": hello * 101}, "messages", "at most 100 messages"),
    ]
    for arguments, param, message in refusals:
        with pytest.raises(openai.BadRequestError) as caught:
            await llm.chat.completions.create(**{"model": MODEL, "messages": hello, **arguments})
        error = caught.value
        assert (error.status_code, error.code, error.param) == (400, "llm_invalid_request", param), arguments
        assert message in message_of(error) and error.type == "invalid_request_error"

    with pytest.raises(openai.APIStatusError) as too_large:
        await llm.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x" * 1_100_000}])
    assert too_large.value.status_code == 413 and too_large.value.code == "llm_request_too_large"

    url = f"{client.stack.config.service_url}/api/v1/llm/chat/completions"
    for content in (b"{not json", b"[1, 2]", b'{"model": "\xff"}'):
        response = await client.http.post(
            url, content=content, headers={**user.headers, "Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "llm_invalid_request"

    async with openai_client(client, api_key="not-a-token") as stranger:
        with pytest.raises(openai.AuthenticationError) as unauthorized:
            await stranger.chat.completions.create(model=MODEL, messages=hello)
    assert unauthorized.value.code == "unauthorized"
    async with openai_client(client, api_key=client.stack.config.admin_api_key) as admin:
        with pytest.raises(openai.PermissionDeniedError) as no_user:
            await admin.chat.completions.create(model=MODEL, messages=hello)
    assert no_user.value.code == "not_a_user"

    assert await proxied(client, user) == [] and await calls_of(client, user) == []


async def test_after_reconciliation_what_we_record_equals_what_litellm_charged(
    client: StackClient, ann: tuple[User, openai.AsyncOpenAI]
) -> None:
    user, llm = ann
    base = client.stack.config.service_url
    # A chat turn runs (Letta calls LiteLLM with the user's key) while the user makes proxy calls on the same key.
    during_turn = False
    async with client.http.stream(
        "POST",
        f"{base}/api/v1/chat/message",
        headers={**user.headers, "Accept": "text/event-stream"},
        json={"content": "[[slow]] a story"},
        timeout=60,
    ) as turn:
        async for name, _ in aiter_json_events(turn):
            if name == "delta" and not during_turn:
                during_turn = True
                await llm.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "[[long 50]]"}])
                stream = await llm.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "[[long 80]]"}], stream=True
                )
                async for _ in stream:
                    pass
    assert during_turn
    left = await llm.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "[[slow]] and another"}], stream=True
    )
    async for _ in left:
        break
    await left.close()

    # The turn's thread got its title by a call on the same key, recorded like the proxy's own (a fourth call).
    await client.titled(user)
    # The e2e stack settles costs within seconds (COST_SETTLE_SECONDS=3): wait until every cost is final.
    await client.wait_for(
        "select (select count(*) from public.llm_calls where user_id = $1 and not cost_final) = 0 "
        "and (select count(*) from public.messages where user_id = $1 and (cost_final = false or status = 'pending'))"
        " = 0 and exists (select 1 from public.llm_calls where user_id = $1)",
        user.id,
        timeout=60,
    )
    key = await key_of(client, user)
    on_key = [r for r in await client.upstream_requests() if r["api_key"] == key and r["path"].endswith("completions")]
    proxy_requests = [r for r in on_key if r["body"].get("user") == str(user.id)]
    letta_requests = [r for r in on_key if r["body"].get("user") != str(user.id)]
    assert len(proxy_requests) == 4 and letta_requests

    calls = await calls_of(client, user)
    assert len(calls) == 4 and all(c["cost_final"] for c in calls)
    # Each call carries exactly its own charge; the turn carries Letta's calls only.
    spend_logs = await client.litellm("GET", "/spend/logs", params={"api_key": key, "summarize": "false"})
    spend_by_request = {row["request_id"]: Decimal(str(row["spend"])) for row in spend_logs}
    for call in calls:
        assert call["cost"] == round(spend_by_request[call["request_id"]], 10), call
    turn_cost = await client.db.fetchval("select sum(cost) from public.messages where user_id = $1", user.id)
    letta_charged = sum((Decimal(str(r["cost"])) for r in letta_requests), Decimal(0))
    assert abs(turn_cost - letta_charged) <= EXACT * len(letta_requests)

    # Recorded == charged for the key, in every record: calls + turns, the day's totals, /user/usage.
    info = await client.litellm_user(user.id)
    assert info is not None
    charged = Decimal(str(info["user_info"]["spend"]))
    recorded = turn_cost + sum(c["cost"] for c in calls)
    days = await client.db.fetchval("select sum(total_cost) from public.usage_metrics where user_id = $1", user.id)
    reported = Decimal(str((await usage_totals(client, user))["total_cost"]))
    for name, value in (("recorded", recorded), ("usage_metrics", days), ("/user/usage", reported)):
        assert abs(value - charged) <= EXACT * len(on_key), (name, value, charged)


async def test_the_openapi_document_shows_openais_error_shape(client: StackClient) -> None:
    schema = (await client.http.get(f"{client.stack.config.service_url}/schema/openapi.json")).json()
    operation = schema["paths"]["/api/v1/llm/chat/completions"]["post"]
    for status in ("400", "401", "402", "403", "413", "429", "502", "503", "504"):
        assert list(operation["responses"][status]["content"]) == ["application/json"], status
