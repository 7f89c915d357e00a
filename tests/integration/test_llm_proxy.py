"""The LLM proxy on the real Postgres, through the service's real HTTP stack, against the LiteLLM double served on
a loopback socket: every call recorded with its tokens and cost (a stream whose client left too), counted in the
day's usage, refusals recorded as nothing, LiteLLM's failures in our words, and the reconciler attributing each
proxy call's spend record to the call, not to the chat turn running at the time."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from litestar import Litestar
from litestar.testing import AsyncTestClient

from devstack.doubles.litellm_double import DoubleSettings
from devstack.doubles.litellm_double import create_app as create_double
from devstack.keys import SigningKey
from service.billing.budgets import Billing
from service.billing.reconcile import CostReconciler
from service.clients.litellm import LiteLLMClient
from service.llm.service import LLMProxy
from service.rate_limit import LLM_BUCKET, PostgresRateLimiter
from tests.integration.support import app_client, ready_user, service_settings

pytestmark = pytest.mark.integration

MASTER = "sk-master-integration"
URL = "/api/v1/llm/chat/completions"
Client = AsyncTestClient[Litestar]
Db = asyncpg.Connection  # the runtime classes are not generic (the stubs are)


class Double:
    """The LiteLLM double on a loopback port, in a thread of its own (its spend records written at once)."""

    def __init__(self) -> None:
        settings = DoubleSettings(master_key=MASTER, spend_logs_batch_write_s=0)
        config = uvicorn.Config(create_double(settings), host="127.0.0.1", port=0, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def __enter__(self) -> Double:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the LiteLLM double did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {MASTER}"}) as http:
            response = await http.request(method, path, **kwargs)
        response.raise_for_status()
        return response.json()


@dataclass
class User:
    id: uuid.UUID
    headers: dict[str, str]
    key: str  # their LiteLLM key


@pytest.fixture(scope="module")
def litellm() -> Iterator[Double]:
    with Double() as double:
        yield double


@pytest.fixture
def service_env(litellm: Double) -> dict[str, str]:
    return {
        "LITELLM_BASE_URL": litellm.url,
        "LITELLM_MASTER_KEY": MASTER,
        "LLM_PROXY_MAX_TOKENS": "500",
        "RATE_LIMIT_LLM_PER_MINUTE": "20",
    }


@pytest.fixture
async def user(database_url: str, signing_key: SigningKey, litellm: Double, db: Db) -> User:
    """A ready user with a LiteLLM user (budget 10) and key, stored privately as provisioning stores it."""
    user_id, headers = await ready_user(database_url, signing_key)
    created = await litellm.call("POST", "/user/new", json={"user_id": str(user_id), "max_budget": 10.0})
    await db.execute("insert into private.litellm_keys (user_id, litellm_key) values ($1, $2)", user_id, created["key"])
    return User(user_id, headers, created["key"])


async def calls_of(db: Db | asyncpg.Pool, user: User) -> list[dict[str, Any]]:
    rows = await db.fetch("select * from public.llm_calls where user_id = $1 order by created_at", user.id)
    return [dict(row) for row in rows]


async def upstream(litellm: Double, user: User) -> list[dict[str, Any]]:
    """The double's log of the calls made with the user's key."""
    return [r for r in await litellm.call("GET", "/_double/requests") if r["api_key"] == user.key]


def body(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


def money(cost: float) -> Decimal:
    """A cost as our numeric(18, 10) columns keep it."""
    return round(Decimal(str(cost)), 10)


def sse_data(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


async def test_a_completion_is_recorded_with_its_tokens_and_cost_and_counted_in_usage(
    client: Client, litellm: Double, db: Db, user: User
) -> None:
    response = await client.post(URL, headers=user.headers, json=body("say hi", user="someone-else"))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"] == "You said: say hi"
    assert not any(name.startswith("x-litellm") for name in response.headers), "LiteLLM's headers stay behind"

    [sent] = await upstream(litellm, user)  # the user's own key, the caller as LiteLLM's end user, output bounded
    assert sent["body"]["user"] == str(user.id) and sent["body"]["max_tokens"] == 500
    [call] = await calls_of(db, user)
    assert call["status"] == "complete" and call["request_id"] == answer["id"] and call["cost_final"] is False
    assert call["litellm_call_id"] and call["stream"] is False and call["client_disconnected"] is False
    usage = answer["usage"]
    tokens = (call["prompt_tokens"], call["completion_tokens"], call["total_tokens"])
    assert tokens == (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"])
    assert call["cost"] == money(sent["cost"]) > 0  # LiteLLM's own figure (x-litellm-response-cost)
    day = await db.fetchrow("select * from public.usage_metrics where user_id = $1", user.id)
    assert day["total_tokens"] == usage["total_tokens"] and day["total_cost"] == round(call["cost"], 8)
    assert day["total_messages"] == 0  # a proxy call is not a chat message

    report = (await client.get("/api/v1/user/usage", headers=user.headers)).json()
    assert report["totals"]["total_tokens"] == usage["total_tokens"]
    assert Decimal(str(report["totals"]["total_cost"])) == round(call["cost"], 8)


async def test_a_stream_is_passed_through_with_the_usage_chunk_only_when_asked_and_recorded(
    client: Client, litellm: Double, db: Db, user: User
) -> None:
    plain = await client.post(URL, headers=user.headers, json=body("one two", stream=True))
    asked = await client.post(
        URL, headers=user.headers, json=body("one two", stream=True, stream_options={"include_usage": True})
    )
    for response in (plain, asked):
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    plain_events, asked_events = sse_data(plain.text), sse_data(asked.text)
    assert plain_events[-1] == asked_events[-1] == "[DONE]"
    assert not any("usage" in json.loads(event) for event in plain_events[:-1])
    usage_chunk = json.loads(asked_events[-2])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0
    text = "".join(json.loads(event)["choices"][0]["delta"].get("content") or "" for event in plain_events[:-1])
    assert text == "You said: one two"

    sent = await upstream(litellm, user)
    assert all(r["body"]["stream_options"] == {"include_usage": True} for r in sent)  # always asked upstream
    calls = await calls_of(db, user)
    assert [c["status"] for c in calls] == ["complete", "complete"] and all(c["stream"] for c in calls)
    for call, request in zip(calls, sent, strict=True):
        assert call["total_tokens"] == request["total_tokens"] and call["cost"] == money(request["cost"])
    assert calls[1]["request_id"] == usage_chunk["id"]


async def test_a_stream_whose_client_left_is_read_to_its_end_and_recorded(
    litellm: Double, pool: asyncpg.Pool, database_url: str, user: User
) -> None:
    settings = service_settings(database_url, LITELLM_BASE_URL=litellm.url, LITELLM_MASTER_KEY=MASTER)
    async with httpx.AsyncClient() as http:
        billing = Billing(LiteLLMClient(http, litellm.url, MASTER))
        proxy = LLMProxy(pool, http, billing, PostgresRateLimiter(pool, {LLM_BUCKET: (10, 60)}), settings)
        events = await proxy.stream(user.id, proxy.parse(body("[[slow]] go on", stream=True)))
        first = await anext(events)
        assert first.startswith(b"data: {")
        await events.aclose()  # the client went away after one chunk
        await proxy.drain()
    [call] = await calls_of(pool, user)
    [sent] = await upstream(litellm, user)
    assert call["status"] == "complete" and call["client_disconnected"] is True
    assert sent["completed"] and call["completion_tokens"] == sent["completion_tokens"] > 5  # every word was read
    assert call["cost"] == money(sent["cost"])


async def test_refusals_before_the_call_record_nothing_and_are_in_openai_shape(
    client: Client, litellm: Double, db: Db, user: User
) -> None:
    too_many = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}] * 101}
    for refused, status, code in (
        (body(model="gpt-4"), 403, "model_not_allowed"),
        (body(max_tokens=501), 400, "llm_invalid_request"),
        (body(foo=1), 400, "llm_invalid_request"),
        (too_many, 400, "llm_invalid_request"),
    ):
        response = await client.post(URL, headers=user.headers, json=refused)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["code"] == code
    assert await calls_of(db, user) == [] and await upstream(litellm, user) == []


async def test_past_the_rate_limit_is_429_with_retry_after_and_nothing_recorded(
    litellm: Double, db: Db, database_url: str, signing_key: SigningKey, service_env: dict[str, str], user: User
) -> None:
    env = {**service_env, "RATE_LIMIT_LLM_PER_MINUTE": "2"}
    async with app_client(database_url, signing_key, **env) as client:
        for _ in range(2):
            assert (await client.post(URL, headers=user.headers, json=body())).status_code == 200
        limited = await client.post(URL, headers=user.headers, json=body())
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    error = limited.json()["error"]
    assert error == {"message": error["message"], "type": "rate_limit_error", "param": None, "code": "rate_limited"}
    assert "'llm'" in error["message"]
    assert len(await calls_of(db, user)) == 2 and len(await upstream(litellm, user)) == 2


async def test_over_budget_is_402_before_litellm_is_called(client: Client, litellm: Double, db: Db, user: User) -> None:
    await litellm.call("POST", "/_double/spend", json={"user_id": str(user.id), "spend": 10.0})
    response = await client.post(URL, headers=user.headers, json=body())
    assert response.status_code == 402, response.text
    error = response.json()["error"]
    assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
    assert error["message"].startswith("your budget is used up")
    assert await upstream(litellm, user) == [] and await calls_of(db, user) == []


async def test_litellm_failures_are_recorded_as_failed_calls_in_our_words_only(
    client: Client, litellm: Double, db: Db, user: User
) -> None:
    secret = "upstream secret text 10.0.3.7"
    faults = "/_double/faults"
    await litellm.call("POST", faults, json={"route": "/v1/chat/completions", "status": 500, "message": secret})
    broken = await client.post(URL, headers=user.headers, json=body())
    over_budget = {"message": secret, "type": "budget_exceeded", "param": None, "code": "422"}
    await litellm.call("POST", faults, json={"route": "/v1/chat/completions", "status": 422, "error": over_budget})
    over = await client.post(URL, headers=user.headers, json=body(stream=True))
    await litellm.call("POST", faults, json={"route": "/v1/chat/completions", "status": 400, "message": secret})
    rejected = await client.post(URL, headers=user.headers, json=body())
    await litellm.call("POST", faults, json={"route": "/v1/chat/completions", "drop_after_chunks": 2})
    cut = await client.post(URL, headers=user.headers, json=body("[[long 30]]", stream=True))
    await litellm.call("DELETE", faults)

    assert (broken.status_code, broken.json()["error"]["code"]) == (502, "llm_error")
    assert (over.status_code, over.json()["error"]["code"]) == (402, "budget_exceeded")
    assert (rejected.status_code, rejected.json()["error"]["code"]) == (400, "llm_rejected")
    assert cut.status_code == 200  # the stream had started: the failure is its last event
    last = json.loads(sse_data(cut.text)[-1])
    assert last["error"]["code"] == "llm_error" and last["error"]["type"] == "server_error"
    for response in (broken, over, rejected, cut):
        assert secret not in response.text and "Injected" not in response.text
    calls = await calls_of(db, user)
    assert [(c["status"], c["error_code"]) for c in calls] == [
        ("failed", "llm_error"),
        ("failed", "budget_exceeded"),
        ("failed", "llm_rejected"),
        ("failed", "llm_error"),
    ]
    assert calls[3]["litellm_call_id"] and calls[3]["completion_tokens"] is None  # its charge comes by reconciliation


async def test_litellm_unreachable_is_503_with_retry_after(
    db: Db, database_url: str, signing_key: SigningKey, user: User
) -> None:
    async with app_client(database_url, signing_key, LITELLM_BASE_URL="http://127.0.0.1:9") as client:
        response = await client.post(URL, headers=user.headers, json=body())
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert response.json()["error"]["code"] == "llm_unavailable"
    [call] = await calls_of(db, user)
    assert (call["status"], call["error_code"]) == ("failed", "llm_unavailable")


async def test_reconciliation_attributes_each_proxy_charge_to_its_call_not_the_running_turn(
    client: Client, litellm: Double, pool: asyncpg.Pool, db: Db, database_url: str, user: User
) -> None:
    # A chat turn is running (its user message stored): Letta's call on the user's key belongs to it ...
    turn_id = uuid.uuid4()
    insert = "insert into public.messages (user_id, turn_id, role, content, status, cost, cost_final) "
    await db.execute(insert + "values ($1, $2, 'user', 'hi', 'complete', null, null)", user.id, turn_id)
    async with httpx.AsyncClient(base_url=litellm.url, headers={"Authorization": f"Bearer {user.key}"}) as letta:
        assert (await letta.post("/v1/chat/completions", json=body("[[long 40]]"))).status_code == 200
    # ... and the proxy calls made meanwhile belong to themselves, a stream that broke off included.
    assert (await client.post(URL, headers=user.headers, json=body("first"))).status_code == 200
    assert (await client.post(URL, headers=user.headers, json=body("second", stream=True))).status_code == 200
    await litellm.call("POST", "/_double/faults", json={"route": "/v1/chat/completions", "drop_after_chunks": 2})
    assert (await client.post(URL, headers=user.headers, json=body("[[long 30]]", stream=True))).status_code == 200
    # The turn ends with an estimate of 0 (not yet in the day's usage: the reconciler moves it by the charge).
    await db.execute(insert + "values ($1, $2, 'assistant', 'reply', 'complete', 0, false)", user.id, turn_id)

    settings = service_settings(
        database_url, LITELLM_BASE_URL=litellm.url, LITELLM_MASTER_KEY=MASTER, COST_SETTLE_SECONDS="0"
    )
    async with httpx.AsyncClient() as http:
        litellm_client = LiteLLMClient(http, litellm.url, MASTER)
        reconciler = CostReconciler(pool, litellm_client, Billing(litellm_client), settings)
        await asyncio.sleep(0.05)
        assert await reconciler.reconcile_once() == 4  # the turn and three calls
        assert await reconciler.reconcile_once() == 0

    requests = await upstream(litellm, user)
    charges = await db.fetch("select * from private.llm_charges where user_id = $1", user.id)
    calls = await calls_of(db, user)
    assert len(charges) == len(requests) == 4
    by_call = {c["llm_call_id"]: c for c in charges if c["llm_call_id"] is not None}
    assert set(by_call) == {c["id"] for c in calls} and all(c["turn_id"] is None for c in by_call.values())
    [turn_charge] = [c for c in charges if c["llm_call_id"] is None]
    assert turn_charge["turn_id"] == turn_id
    for call in calls:
        assert call["cost_final"] and call["cost"] == by_call[call["id"]]["spend"]
    assert calls[2]["status"] == "failed" and calls[2]["cost"] > 0  # the broken stream's charge, found by call id
    reply = "select cost from public.messages where turn_id = $1 and role = 'assistant'"
    reply_cost = await db.fetchval(reply, turn_id)
    assert reply_cost == turn_charge["spend"]
    # Recorded == charged: LiteLLM's spend for the key; our turn and calls; the day's total (8 decimals a call).
    charged = sum((Decimal(str(r["cost"])) for r in requests), Decimal(0))
    assert abs(reply_cost + sum(c["cost"] for c in calls) - charged) <= Decimal("1e-10") * 4
    day_total = await db.fetchval("select sum(total_cost) from public.usage_metrics where user_id = $1", user.id)
    assert abs(day_total - charged) <= Decimal("0.00000001") * 6


async def test_models_lists_the_allowed_models_litellm_serves(client: Client, user: User) -> None:
    response = await client.get("/api/v1/llm/models", headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "list"
    assert [m["id"] for m in response.json()["data"]] == ["gpt-4o-mini"]  # gpt-4 is served but not allowed


async def test_a_browsers_openai_sdk_passes_the_cors_preflight(client: Client) -> None:
    # What OpenAI's JavaScript SDK sends from a page (dangerouslyAllowBrowser): its platform headers.
    headers = "authorization,content-type,x-stainless-lang,x-stainless-package-version,x-stainless-os,"
    headers += "x-stainless-arch,x-stainless-runtime,x-stainless-runtime-version,x-stainless-retry-count,"
    headers += "x-stainless-timeout"
    response = await client.options(
        URL,
        headers={
            "Origin": "http://localhost:3000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": headers,
        },
    )
    assert response.status_code in (200, 204), response.text
    allowed = response.headers["access-control-allow-headers"].lower()
    assert all(name in allowed for name in headers.split(","))
