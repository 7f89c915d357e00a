"""Contract of the LiteLLM test double, checked against LiteLLM 1.106.2 itself.

The double is driven in-process; its management responses are validated with LiteLLM's own pydantic
types and Prisma schema, its prices with LiteLLM's cost map, its error bodies with
``ProxyException.to_dict()``, and its OpenAI surface with the ``openai`` SDK (what Letta uses).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # importing litellm must not fetch prices

import litellm
import openai
from litellm.proxy._types import (
    LiteLLM_SpendLogs,
    LiteLLM_UserTable,
    LiteLLM_VerificationToken,
    NewUserResponse,
    ProxyErrorTypes,
    ProxyException,
    SpendLogsMetadata,
    SpendLogsPayload,
    UserInfoResponse,
)
from pydantic import TypeAdapter

from devstack.doubles import litellm_double, scripted_model
from devstack.doubles.litellm_double import DoubleSettings, create_app

MASTER = "sk-master-dev"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
BASE_URL = "http://testserver.local"
SCHEMA_PRISMA = Path(litellm.__file__).parent / "proxy" / "schema.prisma"


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(DoubleSettings())) as test_client:
        yield test_client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sdk(client: httpx.AsyncClient, key: str) -> openai.AsyncOpenAI:
    """The OpenAI SDK, as Letta uses it, talking to the in-process double."""
    return openai.AsyncOpenAI(api_key=key, base_url=f"{BASE_URL}/v1", http_client=client, max_retries=0)


async def new_user(client: httpx.AsyncClient, user_id: str = "alice", **fields: Any) -> dict[str, Any]:
    response = await client.post("/user/new", json={"user_id": user_id, **fields}, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def user_info(client: httpx.AsyncClient, user_id: str) -> dict[str, Any]:
    response = await client.get("/user/info", params={"user_id": user_id}, headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def proxy_error(message: str, error_type: str, param: str | None, code: int) -> dict[str, Any]:
    return {"error": ProxyException(message=message, type=error_type, param=param, code=code).to_dict()}


def prisma_fields(model: str) -> tuple[set[str], set[str]]:
    """(scalar fields, relation fields) of a model in LiteLLM's schema.prisma."""
    match = re.search(rf"^model {model} \{{(.*?)^\}}", SCHEMA_PRISMA.read_text(), re.M | re.S)
    assert match is not None
    scalars, relations = set(), set()
    for line in match.group(1).splitlines():
        parts = line.split()
        if len(parts) < 2 or parts[0].startswith(("//", "@@")):
            continue
        (relations if parts[1].rstrip("?[]").startswith("LiteLLM_") else scalars).add(parts[0])
    return scalars, relations


def chat_body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


# --- /user/new --------------------------------------------------------------------------------


async def test_user_new_returns_a_new_user_response(client: AsyncTestClient[Any]) -> None:
    body = await new_user(client, max_budget=5, budget_duration="30d", user_email="alice@example.com")

    assert set(body) == set(NewUserResponse.model_fields)  # FastAPI dumps the full model, nulls included
    parsed = NewUserResponse.model_validate(body)
    assert parsed.user_id == "alice"
    assert parsed.max_budget == 5.0
    assert parsed.budget_duration == "30d"
    assert parsed.user_email == "alice@example.com"
    assert parsed.spend == 0
    assert re.fullmatch(r"sk-[A-Za-z0-9_-]{22}", parsed.key)  # sk-<secrets.token_urlsafe(16)>
    assert parsed.key_name == f"sk-...{parsed.key[-4:]}"
    assert body["token_id"] is None and body["token"] is None  # new_user strips them
    assert "budget_reset_at" not in body  # not a NewUserResponse field: read it from /user/info


async def test_user_new_without_auto_create_key_returns_an_empty_key(client: AsyncTestClient[Any]) -> None:
    body = await new_user(client, auto_create_key=False)

    assert body["key"] == ""
    assert (await user_info(client, "alice"))["keys"] == []


async def test_user_new_generates_a_user_id(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/user/new", json={"max_budget": 1}, headers=ADMIN)

    assert re.fullmatch(r"[0-9a-f-]{36}", response.json()["user_id"])


async def test_user_new_with_an_existing_user_id_is_a_409(client: AsyncTestClient[Any]) -> None:
    first = await new_user(client)

    again = await client.post("/user/new", json={"user_id": "alice"}, headers=ADMIN)

    # _check_duplicate_user_id raises HTTPException(409, {"error": ...}); handle_exception_on_proxy
    # turns the dict detail into its Python repr.
    assert again.status_code == 409
    assert again.json() == proxy_error(
        str({"error": "User with id alice already exists"}), "internal_server_error", None, 409
    )
    keys = (await user_info(client, "alice"))["keys"]
    assert [k["token"] for k in keys] == [hashlib.sha256(first["key"].encode()).hexdigest()]


async def test_user_new_with_an_existing_email_is_a_409(client: AsyncTestClient[Any]) -> None:
    await new_user(client, user_email="Alice@Example.com")

    again = await client.post("/user/new", json={"user_id": "bob", "user_email": "alice@example.com"}, headers=ADMIN)

    assert again.status_code == 409
    assert again.json()["error"]["message"] == str({"error": "User with email Alice@Example.com already exists"})


async def test_user_new_rejects_a_bad_budget_duration(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/user/new", json={"user_id": "a", "budget_duration": "soon"}, headers=ADMIN)

    assert response.status_code == 400
    message = "Invalid budget_duration 'soon'. Use a format like '1h', '24h', '7d', or '30d'."
    assert response.json() == proxy_error(str({"error": message}), "internal_server_error", None, 400)


async def test_management_needs_the_master_key(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)

    response = await client.post("/user/new", json={"user_id": "bob"}, headers=bearer(alice["key"]))

    assert response.status_code == 401
    error = response.json()["error"]
    assert error["type"] == ProxyErrorTypes.auth_error.value
    assert error["param"] == "None"  # LiteLLM really sends the string "None" here
    assert error["message"].startswith(
        "Authentication Error, Only proxy admin can be used to generate, delete, update info for new "
        "keys/users/teams. Route=/user/new. Your role=unknown."
    )


# --- /user/info -------------------------------------------------------------------------------


async def test_user_info_matches_litellm_types_and_schema(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client, max_budget=5, budget_duration="30d")

    info = await user_info(client, "alice")

    parsed = UserInfoResponse.model_validate(info)
    assert parsed.user_id == "alice" and parsed.teams == []
    user_scalars, user_relations = prisma_fields("LiteLLM_UserTable")
    assert set(info["user_info"]) == (user_scalars - {"password"}) | user_relations | {"model_max_budget_usage"}
    user_row = LiteLLM_UserTable.model_validate(info["user_info"])
    assert (user_row.spend, user_row.max_budget, user_row.budget_duration) == (0.0, 5.0, "30d")
    # 30d resets on the 1st of next month at midnight UTC (duration_parser._handle_month_reset).
    reset_at = datetime.fromisoformat(info["user_info"]["budget_reset_at"])
    assert (reset_at.day, reset_at.hour, reset_at.minute) == (1, 0, 0)
    assert timedelta(0) < reset_at - datetime.now(UTC) <= timedelta(days=31)

    key_scalars, key_relations = prisma_fields("LiteLLM_VerificationToken")
    [key] = info["keys"]
    assert set(key) == key_scalars | key_relations | {"team_alias"}
    assert key["team_alias"] == "None"  # _process_keys_for_user_info, verbatim
    token = LiteLLM_VerificationToken.model_validate(key)
    assert token.token == hashlib.sha256(alice["key"].encode()).hexdigest()
    assert (token.user_id, token.max_budget, token.spend) == ("alice", None, 0.0)


async def test_user_info_of_an_unknown_user_is_a_404(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/user/info", params={"user_id": "ghost"}, headers=ADMIN)

    assert response.status_code == 404
    assert response.json() == proxy_error("User ghost not found", "internal_server_error", None, 404)


async def test_a_user_key_reads_only_its_own_info(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)
    await new_user(client, "bob")

    own = await client.get("/user/info", headers=bearer(alice["key"]))
    other = await client.get("/user/info", params={"user_id": "bob"}, headers=bearer(alice["key"]))

    assert own.status_code == 200 and own.json()["user_id"] == "alice"
    assert other.status_code == 403
    assert (
        other.json()["error"]["message"]
        == "key not allowed to access this user's info. user_id=bob, key's user_id=alice"
    )


# --- /user/update, /user/delete, /key/info ----------------------------------------------------


async def test_user_update_changes_the_budget(client: AsyncTestClient[Any]) -> None:
    await new_user(client, max_budget=1)

    response = await client.post(
        "/user/update", json={"user_id": "alice", "max_budget": 10, "budget_duration": "1d"}, headers=ADMIN
    )

    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "alice"
    row = LiteLLM_UserTable.model_validate(body["data"])
    assert (row.max_budget, row.budget_duration) == (10.0, "1d")
    assert row.budget_reset_at is not None and row.budget_reset_at.hour == 0
    assert (await user_info(client, "alice"))["user_info"]["max_budget"] == 10.0


async def test_user_update_upserts_an_unknown_user(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/user/update", json={"user_id": "carol", "max_budget": 2}, headers=ADMIN)

    assert response.status_code == 200
    assert (await user_info(client, "carol"))["user_info"]["max_budget"] == 2.0


async def test_user_update_needs_an_id_or_email(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/user/update", json={"max_budget": 2}, headers=ADMIN)

    assert response.status_code == 422
    assert "Either user id or user email must be provided" in response.text


async def test_user_delete_removes_users_and_their_keys(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)
    await new_user(client, "bob")

    response = await client.post("/user/delete", json={"user_ids": ["alice", "bob"]}, headers=ADMIN)

    assert response.status_code == 200 and response.json() == 2  # prisma delete_many's count
    gone = await client.post("/v1/chat/completions", json=chat_body("hi"), headers=bearer(alice["key"]))
    assert gone.status_code == 401
    assert gone.json()["error"]["type"] == ProxyErrorTypes.token_not_found_in_db.value


async def test_user_delete_of_an_unknown_user_is_a_plain_404(client: AsyncTestClient[Any]) -> None:
    await new_user(client)

    response = await client.post("/user/delete", json={"user_ids": ["alice", "ghost"]}, headers=ADMIN)

    # delete_user raises HTTPException outside handle_exception_on_proxy: FastAPI's {"detail": ...}
    assert response.status_code == 404
    assert response.json() == {"detail": {"error": "User not found, passed user_id=ghost"}}
    assert (await user_info(client, "alice"))["user_id"] == "alice"  # nothing deleted


async def test_key_info(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)
    hashed = hashlib.sha256(alice["key"].encode()).hexdigest()

    by_hash = await client.get("/key/info", params={"key": hashed}, headers=ADMIN)
    own = await client.get("/key/info", headers=bearer(alice["key"]))
    missing = await client.get("/key/info", params={"key": "sk-nope"}, headers=ADMIN)

    assert by_hash.status_code == 200
    assert by_hash.json()["key"] == hashed
    info = by_hash.json()["info"]
    assert "token" not in info and info["status"] == "active" and info["user_id"] == "alice"
    LiteLLM_VerificationToken.model_validate({**info, "token": hashed})
    assert own.json()["info"] == info
    assert missing.status_code == 404
    assert missing.json() == proxy_error("Key not found in database", "not_found_error", "key", 404)


# --- auth -------------------------------------------------------------------------------------


async def test_authentication_errors(client: AsyncTestClient[Any]) -> None:
    body = chat_body("hi")
    missing = await client.post("/v1/chat/completions", json=body)
    malformed = await client.post("/v1/chat/completions", json=body, headers={"Authorization": "sk-x"})
    unknown = await client.post("/v1/chat/completions", json=body, headers=bearer("sk-unknown-key"))
    not_virtual = await client.post("/v1/chat/completions", json=body, headers=bearer("hello-world-key"))

    assert missing.json() == proxy_error("Authentication Error, No api key passed in.", "auth_error", "None", 401)
    assert malformed.json()["error"]["message"] == (
        "Authentication Error, Malformed API Key passed in. Ensure Key has `Bearer ` prefix."
    )
    hashed = hashlib.sha256(b"sk-unknown-key").hexdigest()
    assert unknown.status_code == 401
    assert unknown.json() == proxy_error(
        "Authentication Error, Invalid proxy server token passed. Received API Key = sk-...-key, Key Hash (Token) "
        f"={hashed}. Unable to find token in cache or `LiteLLM_VerificationTokenTable`",
        ProxyErrorTypes.token_not_found_in_db.value,
        "key",
        401,
    )
    assert not_virtual.json()["error"]["message"] == (
        "LiteLLM Virtual Key expected. Received=hell****-key, expected to start with 'sk-'."
    )


async def test_x_litellm_api_key_header_wins(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)

    response = await client.post(
        "/v1/chat/completions",
        json=chat_body("hi"),
        headers={"x-litellm-api-key": f"Bearer {alice['key']}", "Authorization": "Bearer sk-wrong"},
    )

    assert response.status_code == 200


# --- models -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/model/info", "/v1/model/info"])
async def test_model_info_prices_match_litellm_cost_map(client: AsyncTestClient[Any], path: str) -> None:
    response = await client.get(path, headers=ADMIN)

    models = {m["model_name"]: m for m in response.json()["data"]}
    assert set(models) == {"gpt-4o-mini", "gpt-4", "text-embedding-3-small"}
    for name, model in models.items():
        reference = litellm.model_cost[name]
        info = model["model_info"]
        assert model["litellm_params"]["model"] == f"openai/{name}"
        for field in ("input_cost_per_token", "output_cost_per_token", "max_tokens", "max_input_tokens", "mode"):
            assert info[field] == reference[field], (name, field)
    assert models["text-embedding-3-small"]["model_info"]["output_vector_size"] == 1536
    assert models["gpt-4o-mini"]["model_info"]["max_input_tokens"] == 128000


async def test_v1_models_lists_openai_model_objects(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)

    listed = await sdk(client, alice["key"]).models.list()

    assert [m.id for m in listed.data] == ["gpt-4o-mini", "gpt-4", "text-embedding-3-small"]
    assert {m.owned_by for m in listed.data} == {"openai"}


async def test_health(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/health/liveliness")).json() == "I'm alive!"
    assert (await client.get("/health/readiness")).json() == {"status": "healthy", "db": "connected"}


# --- chat completions -------------------------------------------------------------------------


async def test_chat_non_streamed_charges_the_key_and_user(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client, max_budget=1)

    raw = await sdk(client, alice["key"]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}], user="letta-user-1"
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "You said: hello there"
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    expected = sum(litellm.cost_per_token("gpt-4o-mini", usage.prompt_tokens, usage.completion_tokens))
    cost = float(raw.headers["x-litellm-response-cost"])
    assert math.isclose(cost, expected)
    info = await user_info(client, "alice")
    assert math.isclose(info["user_info"]["spend"], cost)
    assert math.isclose(info["keys"][0]["spend"], cost)


async def test_chat_streamed_matches_non_streamed_and_carries_cost(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)
    api = sdk(client, alice["key"])
    messages: Any = [{"role": "user", "content": "tell me something"}]
    plain = await api.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)

    stream = await api.chat.completions.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.parse().choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == len(text.split())  # word by word
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert final.usage.model_dump(exclude={"cost"}) == plain.parse().usage.model_dump()  # type: ignore[union-attr]
    assert math.isclose(final.usage.model_extra["cost"], float(plain.headers["x-litellm-response-cost"]))  # type: ignore[index]
    spend = (await user_info(client, "alice"))["user_info"]["spend"]
    assert math.isclose(spend, 2 * float(plain.headers["x-litellm-response-cost"]))


async def test_stream_without_include_usage_has_no_usage_chunk(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)

    stream = await sdk(client, alice["key"]).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )

    assert all(chunk.usage is None and chunk.choices for chunk in [c async for c in stream])


async def test_streamed_tool_call_reassembles(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)
    tool: Any = {
        "type": "function",
        "function": {
            "name": "memory_insert",
            "parameters": {
                "type": "object",
                "properties": {"label": {"type": "string"}, "new_string": {"type": "string"}},
                "required": ["label", "new_string"],
            },
        },
    }

    stream = await sdk(client, alice["key"]).chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "remember that I like tea"}],
        tools=[tool],
        stream=True,
    )
    chunks = [c async for c in stream]

    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function is not None and calls[0].function.name == "memory_insert"
    arguments = "".join(tc.function.arguments or "" for tc in calls if tc.function)
    assert arguments == '{"label": "human", "new_string": "I like tea"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_chat_with_the_master_key_is_not_billed_to_anyone(client: AsyncTestClient[Any]) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body("hi"), headers=ADMIN)

    assert response.status_code == 200
    log = (await client.get("/_double/requests", headers=ADMIN)).json()
    assert log[-1]["litellm_user_id"] is None and log[-1]["api_key"] == MASTER


async def test_chat_request_errors(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)

    unknown = await client.post(
        "/chat/completions", json={"model": "gpt-5-ultra", "messages": []}, headers=bearer(alice["key"])
    )
    missing = await client.post("/v1/chat/completions", json={"model": "gpt-4o-mini"}, headers=bearer(alice["key"]))

    message = (
        "/chat/completions: Invalid model name passed in model=gpt-5-ultra. "
        "Call `/v1/models` to view available models for your key."
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"] == {
        **ProxyException(message=message, type="invalid_request_error", param=None, code=400).to_dict(),
        "provider_specific_fields": {"error": message},
    }
    assert missing.json() == proxy_error(
        "/chat/completions: Missing required parameter: 'messages'.", "invalid_request_error", "messages", 400
    )


# --- budgets ----------------------------------------------------------------------------------


async def test_over_budget_user_is_rejected_with_litellm_budget_error(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client, max_budget=1e-6)
    api = sdk(client, alice["key"])

    await api.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    spend = (await user_info(client, "alice"))["user_info"]["spend"]
    assert spend >= 1e-6  # the call that crosses the budget still succeeds, like in LiteLLM

    rejected = await client.post("/v1/chat/completions", json=chat_body("again"), headers=bearer(alice["key"]))

    assert rejected.status_code == litellm.budget_exceeded_status_code == 422
    assert rejected.json() == proxy_error(
        f"ExceededBudget: User=alice over budget. Spend={spend}, Budget=1e-06",
        ProxyErrorTypes.budget_exceeded.value,
        None,
        422,
    )
    with pytest.raises(openai.UnprocessableEntityError):
        await api.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    embedding = await client.post(
        "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, headers=bearer(alice["key"])
    )
    assert embedding.status_code == 422


async def test_spend_can_be_set_for_budget_tests(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client, max_budget=2)
    headers = bearer(alice["key"])

    over = await client.post("/_double/spend", json={"user_id": "alice", "spend": 2.0}, headers=ADMIN)
    rejected = await client.post("/v1/chat/completions", json=chat_body("hi"), headers=headers)
    await client.post("/_double/spend", json={"user_id": "alice", "spend": 1.5}, headers=ADMIN)
    accepted = await client.post("/v1/chat/completions", json=chat_body("hi"), headers=headers)

    assert over.status_code == 200 and over.json()["spend"] == 2.0
    assert rejected.status_code == 422
    assert rejected.json()["error"]["message"] == "ExceededBudget: User=alice over budget. Spend=2.0, Budget=2.0"
    assert accepted.status_code == 200


async def test_budget_resets_when_its_window_ends() -> None:
    now = [datetime(2026, 3, 10, 15, 30, tzinfo=UTC)]
    app = create_app(DoubleSettings(clock=lambda: now[0]))
    async with AsyncTestClient(app=app) as client:
        alice = await new_user(client, max_budget=1, budget_duration="1d")
        await client.post("/_double/spend", json={"user_id": "alice", "spend": 1.0}, headers=ADMIN)
        assert (
            await client.post("/v1/chat/completions", json=chat_body("hi"), headers=bearer(alice["key"]))
        ).status_code == 422

        now[0] = datetime(2026, 3, 11, 0, 0, 1, tzinfo=UTC)  # past the next midnight
        response = await client.post("/v1/chat/completions", json=chat_body("hi"), headers=bearer(alice["key"]))

        assert response.status_code == 200
        info = (await user_info(client, "alice"))["user_info"]
        assert info["spend"] == float(response.headers["x-litellm-response-cost"])
        assert info["budget_reset_at"].startswith("2026-03-12T00:00:00")


# --- embeddings -------------------------------------------------------------------------------


async def test_embeddings_through_the_sdk(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)

    result = await sdk(client, alice["key"]).embeddings.create(model="text-embedding-3-small", input=["a b", "c"])

    assert [d.index for d in result.data] == [0, 1]
    for item in result.data:  # the SDK asked for base64 and decoded it
        assert len(item.embedding) == 1536
        assert math.isclose(math.fsum(v * v for v in item.embedding), 1.0, rel_tol=1e-5)
    floats = await client.post(
        "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "a b"}, headers=bearer(alice["key"])
    )
    assert floats.json()["data"][0]["embedding"] == pytest.approx(result.data[0].embedding, abs=1e-6)
    cost = 2e-08 * result.usage.prompt_tokens
    assert math.isclose((await user_info(client, "alice"))["user_info"]["spend"], cost + 2e-08 * 1)


# --- the request log --------------------------------------------------------------------------


async def test_request_log_records_who_called_what(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)
    await client.post("/v1/chat/completions", json=chat_body("hi", user="letta-user-7"), headers=bearer(alice["key"]))
    await client.post(
        "/chat/completions", json=chat_body("yo", stream=True), headers={"x-litellm-api-key": alice["key"]}
    )
    await client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, headers=ADMIN)

    log = (await client.get("/_double/requests", headers=ADMIN)).json()

    assert [(e["path"], e["stream"], e["user"], e["litellm_user_id"]) for e in log] == [
        ("/v1/chat/completions", False, "letta-user-7", "alice"),
        ("/chat/completions", True, None, "alice"),
        ("/v1/embeddings", False, None, None),
    ]
    assert [e["api_key"] for e in log] == [alice["key"], alice["key"], MASTER]
    first = log[0]
    assert first["model"] == "gpt-4o-mini" and first["status_code"] == 200 and first["completed"]
    assert first["prompt_tokens"] > 0 and first["completion_tokens"] > 0 and first["reply"] == "You said: hi"
    assert first["body"]["messages"] == [{"role": "user", "content": "hi"}]

    cleared = await client.delete("/_double/requests", headers=ADMIN)
    assert cleared.json() == {"deleted": 3}
    assert (await client.get("/_double/requests", headers=ADMIN)).json() == []


async def test_test_control_needs_the_master_key(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)

    assert (await client.get("/_double/requests", headers=bearer(alice["key"]))).status_code == 401


# --- faults -----------------------------------------------------------------------------------


async def test_status_fault_hits_the_next_n_calls(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)
    fault = {"route": "/chat/completions", "status": 503, "count": 2, "message": "upstream down"}
    assert (await client.post("/_double/faults", json=fault, headers=ADMIN)).status_code == 200

    statuses = [
        (await client.post("/v1/chat/completions", json=chat_body("hi"), headers=bearer(alice["key"]))).status_code
        for _ in range(3)
    ]

    assert statuses == [503, 503, 200]
    assert (await client.get("/_double/faults", headers=ADMIN)).json() == []
    log = (await client.get("/_double/requests", headers=ADMIN)).json()
    assert [e["status_code"] for e in log] == [503, 503, 200]


async def test_fault_for_one_user_with_a_custom_error(client: AsyncTestClient[Any]) -> None:
    alice, bob = await new_user(client), await new_user(client, "bob")
    error = {"message": "Budget has been exceeded!", "type": "budget_exceeded", "param": None, "code": "400"}
    fault = {"route": "/v1/chat/completions", "user_id": "bob", "status_code": 400, "error": error}
    await client.post("/_double/faults", json=fault, headers=ADMIN)

    for_alice = await client.post("/v1/chat/completions", json=chat_body("hi"), headers=bearer(alice["key"]))
    for_bob = await client.post("/v1/chat/completions", json=chat_body("hi"), headers=bearer(bob["key"]))

    assert for_alice.status_code == 200
    assert (for_bob.status_code, for_bob.json()) == (400, {"error": error})
    log = (await client.get("/_double/requests", headers=ADMIN)).json()
    assert [(e["litellm_user_id"], e["status_code"]) for e in log] == [("alice", 200), ("bob", 400)]


async def test_status_fault_body_is_litellm_shaped(client: AsyncTestClient[Any]) -> None:
    await client.post("/_double/faults", json={"route": "/user/new", "status": 500}, headers=ADMIN)

    response = await client.post("/user/new", json={"user_id": "x"}, headers=ADMIN)

    assert response.status_code == 500
    assert response.json() == proxy_error("Injected fault: HTTP 500", "internal_server_error", None, 500)


async def test_delay_fault(client: AsyncTestClient[Any]) -> None:
    await client.post("/_double/faults", json={"route": "/health/readiness", "delay": 0.3}, headers=ADMIN)

    started = time.monotonic()
    response = await client.get("/health/readiness")

    assert response.status_code == 200 and time.monotonic() - started >= 0.3


async def test_drop_fault_breaks_the_connection(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)
    await client.post("/_double/faults", json={"route": "/v1/chat/completions", "drop": True}, headers=ADMIN)

    with pytest.raises(openai.APIConnectionError):
        await sdk(client, alice["key"]).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert (await user_info(client, "alice"))["user_info"]["spend"] == 0.0


async def test_stream_dropped_part_way_is_charged_for_what_was_sent(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)
    fault = {"route": "/chat/completions", "drop_after_chunks": 3}
    await client.post("/_double/faults", json=fault, headers=ADMIN)

    with pytest.raises(openai.APIConnectionError):
        stream = await sdk(client, alice["key"]).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "[[long 40]]"}], stream=True
        )
        _ = [c async for c in stream]

    [entry] = (await client.get("/_double/requests", headers=ADMIN)).json()
    assert not entry["completed"] and entry["fault"]["drop_after_chunks"] == 3
    assert entry["completion_tokens"] == 3  # "" + "word1 " + "word2 " = 12 characters
    assert math.isclose((await user_info(client, "alice"))["user_info"]["spend"], entry["cost"])


async def test_slow_replies_are_paced(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)

    started = time.monotonic()
    response = await client.post(
        "/v1/chat/completions", json=chat_body("[[slow]]", stream=True), headers=bearer(alice["key"])
    )

    assert response.status_code == 200
    assert response.text.count('"content":"slow') == 20
    assert time.monotonic() - started >= 19 * 0.1


# --- persistence and concurrency --------------------------------------------------------------


async def test_state_file_keeps_users_and_keys_across_restarts(tmp_path: Path) -> None:
    settings = DoubleSettings(state_file=tmp_path / "litellm-double.json")
    async with AsyncTestClient(app=create_app(settings)) as first:
        alice = await new_user(first, max_budget=3)
        await first.post("/v1/chat/completions", json=chat_body("hi"), headers=bearer(alice["key"]))
        spend = (await user_info(first, "alice"))["user_info"]["spend"]

    async with AsyncTestClient(app=create_app(settings)) as second:
        info = await user_info(second, "alice")
        response = await second.post("/v1/chat/completions", json=chat_body("hi"), headers=bearer(alice["key"]))

    assert info["user_info"]["spend"] == spend > 0 and info["user_info"]["max_budget"] == 3.0
    assert response.status_code == 200


async def test_concurrent_calls_are_all_charged(client: AsyncTestClient[Any]) -> None:
    alice = await new_user(client)
    api = sdk(client, alice["key"])

    async def call(i: int) -> float:
        raw = await api.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"message {i}"}]
        )
        return float(raw.headers["x-litellm-response-cost"])

    costs = await asyncio.gather(*(call(i) for i in range(20)))

    assert math.isclose((await user_info(client, "alice"))["user_info"]["spend"], math.fsum(costs))


# --- /spend/logs ------------------------------------------------------------------------------

T0 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def spend_logs(client: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **params: str) -> Any:
    response = await client.get("/spend/logs", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def chat(client: httpx.AsyncClient, key: str, text: str = "hi", **extra: Any) -> httpx.Response:
    response = await client.post("/v1/chat/completions", json=chat_body(text, **extra), headers=bearer(key))
    assert response.status_code == 200, response.text
    return response


def as_written(row: dict[str, Any]) -> dict[str, Any]:
    """A row as get_logging_payload builds it: Prisma reads the Json columns back parsed, while
    LiteLLM's pydantic types (LiteLLM_SpendLogs.metadata is ``Json``) hold them as JSON text."""
    return row | {name: json.dumps(row[name]) for name in ("metadata", "request_tags", "proxy_server_request")}


def clocked_app(now: list[datetime], **settings: Any) -> Any:
    return create_app(DoubleSettings(clock=lambda: now[0], **settings))


@pytest.mark.filterwarnings("ignore:Items .* are using the `ReadOnly` qualifier:UserWarning")
async def test_spend_log_row_matches_litellm_types_and_schema() -> None:
    async with AsyncTestClient(app=create_app(DoubleSettings(spend_logs_batch_write_s=0))) as client:
        alice = await new_user(client)
        raw = await sdk(client, alice["key"]).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], user="letta-user-1"
        )
        completion = raw.parse()

        [row] = await spend_logs(client, api_key=alice["key"])

    scalars, relations = prisma_fields("LiteLLM_SpendLogs")
    assert set(row) == scalars and not relations
    LiteLLM_SpendLogs.model_validate(as_written(row))  # the route's declared response model
    written = TypeAdapter(SpendLogsPayload).validate_python(as_written(row))
    assert set(SpendLogsPayload.__required_keys__) <= set(row)
    assert set(row["metadata"]) == set(SpendLogsMetadata.__annotations__)
    assert completion.usage is not None
    assert (written["request_id"], row["litellm_call_id"]) == (completion.id, raw.headers["x-litellm-call-id"])
    assert (row["call_type"], row["model"], row["model_group"], row["status"]) == (
        "acompletion",
        "gpt-4o-mini",
        "gpt-4o-mini",
        "success",
    )
    assert row["api_key"] == row["metadata"]["user_api_key"] == sha256(alice["key"])  # never the key itself
    assert (row["user"], row["end_user"], row["metadata"]["user_api_key_user_id"]) == ("alice", "letta-user-1", "alice")
    assert row["spend"] == float(raw.headers["x-litellm-response-cost"])
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    )
    assert datetime.fromisoformat(row["startTime"]) <= datetime.fromisoformat(row["endTime"])
    assert (row["cache_hit"], row["request_tags"], row["messages"], row["response"]) == ("False", [], {}, {})


async def test_every_charged_call_leaves_one_row_with_its_charge() -> None:
    async with AsyncTestClient(app=create_app(DoubleSettings(spend_logs_batch_write_s=0))) as client:
        alice = await new_user(client)
        api = sdk(client, alice["key"])
        await api.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "one"}])
        stream = await api.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "two"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        streamed_cost = [c async for c in stream][-1].usage.model_extra["cost"]  # type: ignore[union-attr,index]
        await api.embeddings.create(model="text-embedding-3-small", input=["a b", "c"])
        await client.post("/_double/faults", json={"route": "/chat/completions", "drop_after_chunks": 3}, headers=ADMIN)
        with pytest.raises(openai.APIConnectionError):
            dropped = await api.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "[[long 40]]"}], stream=True
            )
            _ = [c async for c in dropped]
        await chat(client, MASTER)  # the master key's calls are logged too, as the proxy admin's

        rows = await spend_logs(client, user_id="alice")
        admin_rows = await spend_logs(client, user_id=litellm_double.PROXY_ADMIN_USER_ID)
        log = (await client.get("/_double/requests", headers=ADMIN)).json()
        key_spend = (await client.get("/key/info", headers=bearer(alice["key"]))).json()["info"]["spend"]
        user_spend = (await user_info(client, "alice"))["user_info"]["spend"]

    assert len(rows) == 4
    assert sorted(r["spend"] for r in rows) == sorted(e["cost"] for e in log if e["litellm_user_id"] == "alice")
    assert streamed_cost in [r["spend"] for r in rows]
    assert math.isclose(math.fsum(r["spend"] for r in rows), key_spend, rel_tol=1e-12)
    assert math.isclose(math.fsum(r["spend"] for r in rows), user_spend, rel_tol=1e-12)
    [embedding] = [r for r in rows if r["call_type"] == "aembedding"]
    assert embedding["request_id"] == embedding["litellm_call_id"]  # an embedding response has no id
    assert (embedding["model"], embedding["completion_tokens"]) == ("text-embedding-3-small", 0)
    [failed] = [r for r in rows if r["status"] == "failure"]
    assert failed["metadata"]["status"] == "failure" and failed["metadata"]["error_information"]
    assert failed["request_id"] == failed["litellm_call_id"] and failed["completion_tokens"] == 3
    assert failed["spend"] == next(e["cost"] for e in log if e["fault"])
    [admin_row] = admin_rows
    assert admin_row["api_key"] == sha256(MASTER) and admin_row["spend"] > 0


async def test_spend_logs_filters() -> None:
    now = [T0]
    async with AsyncTestClient(app=clocked_app(now, spend_logs_batch_write_s=0)) as client:
        alice, bob = await new_user(client), await new_user(client, "bob")
        a1 = (await chat(client, alice["key"])).json()["id"]
        now[0] = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
        a2 = await chat(client, alice["key"])
        now[0] = datetime(2026, 3, 11, 8, 30, tzinfo=UTC)
        b1 = (await chat(client, bob["key"])).json()["id"]
        now[0] = datetime(2026, 3, 12, 0, 0, tzinfo=UTC)
        b2 = (await chat(client, bob["key"])).json()["id"]
        now[0] = datetime(2026, 3, 12, 9, 0, tzinfo=UTC)
        a3 = (await chat(client, alice["key"])).json()["id"]

        def ids(rows: list[dict[str, Any]]) -> list[str]:
            return [r["request_id"] for r in rows]

        everything = await spend_logs(client)
        assert ids(everything) == [a3, b2, b1, a2.json()["id"], a1]  # newest first
        assert ids(await spend_logs(client, api_key=alice["key"])) == [a3, a2.json()["id"], a1]
        assert ids(await spend_logs(client, api_key=sha256(alice["key"]))) == [a3, a2.json()["id"], a1]
        assert ids(await spend_logs(client, user_id="bob")) == [b2, b1]
        assert ids(await spend_logs(client, request_id=a2.json()["id"])) == [a2.json()["id"]]
        by_call_id = await spend_logs(client, request_id=a2.headers["x-litellm-call-id"])
        assert ids(by_call_id) == [a2.json()["id"]]
        # Both dates or neither; the range is start midnight .. end midnight, so a3 (09:00 on the end
        # date) is out and b2 (exactly midnight) is in.
        window = await spend_logs(client, start_date="2026-03-11", end_date="2026-03-12", summarize="false")
        assert ids(window) == [b2, b1, a2.json()["id"]]
        assert ids(await spend_logs(client, start_date="2026-03-11", summarize="false")) == ids(everything)
        assert ids(await spend_logs(client, summarize="true")) == ids(everything)  # no dates: rows anyway
        assert ids(await spend_logs(client, user_id="alice", api_key=bob["key"])) == []


async def test_spend_logs_summary_per_day() -> None:
    now = [T0]
    async with AsyncTestClient(app=clocked_app(now, spend_logs_batch_write_s=0)) as client:
        alice, bob = await new_user(client), await new_user(client, "bob")
        await chat(client, alice["key"])
        now[0] = datetime(2026, 3, 11, 8, 0, tzinfo=UTC)
        await chat(client, alice["key"])
        b1 = await chat(client, bob["key"], model="gpt-4")
        rows = await spend_logs(client)
        summary = await spend_logs(client, start_date="2026-03-09", end_date="2026-03-13")
        one = await spend_logs(client, start_date="2026-03-09", end_date="2026-03-13", request_id=b1.json()["id"])
        by_call_id = await spend_logs(
            client, start_date="2026-03-09", end_date="2026-03-13", request_id=b1.headers["x-litellm-call-id"]
        )

    a_key, b_key = sha256(alice["key"]), sha256(bob["key"])
    spend = {(r["startTime"][:10], r["user"]): r["spend"] for r in rows}
    first, second = spend["2026-03-10", "alice"], spend["2026-03-11", "alice"]
    bob_spend = spend["2026-03-11", "bob"]
    assert summary == [
        {
            a_key: first,
            "startTime": "2026-03-10",
            "spend": first,
            "users": {"alice": first},
            "models": {"gpt-4o-mini": first},
        },
        {
            a_key: second,
            b_key: bob_spend,
            "startTime": "2026-03-11",
            "spend": pytest.approx(second + bob_spend),
            "users": {"alice": second, "bob": bob_spend},
            "models": {"gpt-4o-mini": second, "gpt-4": bob_spend},
        },
        # days after the last one with rows, up to end_date, are padded with zeros
        {"startTime": "2026-03-12", "spend": 0, "users": {}, "models": {}},
        {"startTime": "2026-03-13", "spend": 0, "users": {}, "models": {}},
    ]
    assert [item["startTime"] for item in one] == ["2026-03-11", "2026-03-12", "2026-03-13"]
    assert one[0]["users"] == {"bob": bob_spend}
    assert by_call_id == []  # the summary's SQL matches request_id only, not litellm_call_id


async def test_spend_logs_bad_input(client: AsyncTestClient[Any]) -> None:
    bad_date = await client.get(
        "/spend/logs", params={"start_date": "2026/03/10", "end_date": "2026-03-11"}, headers=ADMIN
    )
    bad_bool = await client.get("/spend/logs", params={"summarize": "maybe"}, headers=ADMIN)
    anonymous = await client.get("/spend/logs")

    # view_spend_logs wraps any other exception: ProxyException("/spend/logs Error" + str(e), internal_error)
    assert bad_date.status_code == 500
    message = "/spend/logs Errortime data '2026/03/10' does not match format '%Y-%m-%d'"
    assert bad_date.json() == proxy_error(message, "internal_error", "None", 500)
    assert bad_bool.status_code == 422
    msg = "Input should be a valid boolean, unable to interpret input"
    assert bad_bool.json() == {"detail": [{"type": "bool_parsing", "loc": ["query", "summarize"], "msg": msg}]}
    assert anonymous.status_code == 401


async def test_a_user_key_reads_only_its_own_users_spend_logs() -> None:
    async with AsyncTestClient(app=create_app(DoubleSettings(spend_logs_batch_write_s=0))) as client:
        alice, bob = await new_user(client), await new_user(client, "bob")
        viewer = await new_user(client, "vera", user_role="proxy_admin_viewer")
        internal = await new_user(client, "ivan", user_role="internal_user")
        await chat(client, alice["key"])
        await chat(client, bob["key"])

        own = await spend_logs(client, bearer(alice["key"]))
        asks_for_bob = await spend_logs(client, bearer(alice["key"]), user_id="bob")
        bobs_key = await spend_logs(client, bearer(alice["key"]), api_key=bob["key"])
        for_viewer = await spend_logs(client, bearer(viewer["key"]), user_id="bob")
        for_internal = await spend_logs(client, bearer(internal["key"]))
        for_admin = await spend_logs(client)

    # Not admin-only: view_spend_logs replaces an internal user's (or role-less user's) user_id with its own.
    assert [r["user"] for r in own] == [r["user"] for r in asks_for_bob] == ["alice"]
    assert bobs_key == [] and for_internal == []
    assert [r["user"] for r in for_viewer] == ["bob"]
    assert sorted(r["user"] for r in for_admin) == ["alice", "bob"]


async def test_spend_log_rows_appear_after_the_batch_write() -> None:
    now = [T0]
    async with AsyncTestClient(app=clocked_app(now)) as client:  # default: 1 s batches
        alice = await new_user(client)
        first = await chat(client, alice["key"])

        assert await spend_logs(client) == []  # not yet written, though already charged:
        key_spend = (await client.get("/key/info", headers=bearer(alice["key"]))).json()["info"]["spend"]
        assert key_spend == float(first.headers["x-litellm-response-cost"])
        now[0] = T0 + timedelta(milliseconds=999)
        assert await spend_logs(client) == []
        now[0] = T0 + timedelta(seconds=1)
        [row] = await spend_logs(client)
        assert row["created_at"] == "2026-03-10T12:00:01Z" and row["startTime"] == "2026-03-10T12:00:00Z"

        # Calls in one batch window are written together, on the first tick at least 1 s after each.
        now[0] = T0 + timedelta(seconds=1.2)
        await chat(client, alice["key"])
        now[0] = T0 + timedelta(seconds=1.7)
        await chat(client, alice["key"])
        now[0] = T0 + timedelta(seconds=2.999)
        assert len(await spend_logs(client)) == 1
        now[0] = T0 + timedelta(seconds=3)
        assert len(await spend_logs(client)) == 3

    async with AsyncTestClient(app=clocked_app(now, spend_logs_batch_write_s=10)) as client:
        now[0] = T0
        alice = await new_user(client)
        await chat(client, alice["key"])
        now[0] = T0 + timedelta(seconds=9.5)
        assert await spend_logs(client) == []
        now[0] = T0 + timedelta(seconds=10)
        assert len(await spend_logs(client)) == 1


def test_the_batch_write_interval_comes_from_proxy_batch_write_at(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    started: list[Any] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **_: started.append(app))
    monkeypatch.setenv("PROXY_BATCH_WRITE_AT", "0.25")
    litellm_double.main([])
    litellm_double.main(["--spend-logs-batch-write", "3"])
    monkeypatch.delenv("PROXY_BATCH_WRITE_AT")
    litellm_double.main([])

    intervals = [app.state.double.settings.spend_logs_batch_write_s for app in started]
    assert intervals == [0.25, 3.0, litellm_double.DEFAULT_SPEND_LOGS_BATCH_WRITE_S]


async def test_state_file_keeps_spend_logs_across_restarts(tmp_path: Path) -> None:
    settings = DoubleSettings(state_file=tmp_path / "litellm-double.json", spend_logs_batch_write_s=0)
    async with AsyncTestClient(app=create_app(settings)) as first:
        alice = await new_user(first)
        await chat(first, alice["key"])
        await chat(first, alice["key"], stream=True)
        before = await spend_logs(first)
    with (tmp_path / "litellm-double.spend-logs.jsonl").open("ab") as file:
        file.write(b'{"request_id": "cut sh')  # a crash mid-append loses that row only

    async with AsyncTestClient(app=create_app(settings)) as second:
        after = await spend_logs(second)
        spend = (await user_info(second, "alice"))["user_info"]["spend"]

    assert after == before and len(after) == 2
    assert math.isclose(math.fsum(r["spend"] for r in after), spend, rel_tol=1e-12)


async def test_letta_summarization_call_is_charged_like_any_call() -> None:
    async with AsyncTestClient(app=create_app(DoubleSettings(spend_logs_batch_write_s=0))) as client:
        alice = await new_user(client)
        transcript = "<start_transcript>\n[MessageRole.user] [[long 500]]\n<end_transcript>\n. Generate the summary."
        body = {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": scripted_model.SUMMARY_SYSTEM_PROMPT_OPENINGS[0] + " Write a summary."},
                {"role": "user", "content": transcript},
            ],
            "user": "letta-user-1",
        }
        response = await client.post("/v1/chat/completions", json=body, headers=bearer(alice["key"]))
        [row] = await spend_logs(client)

    assert response.json()["choices"][0]["message"]["content"].startswith("Summary of 1 earlier message")
    assert response.json()["usage"]["completion_tokens"] < 30
    assert row["spend"] == float(response.headers["x-litellm-response-cost"]) > 0
