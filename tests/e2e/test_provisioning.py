"""Issue: provisioning. Signup -> trigger -> pg_net stand-in -> Edge Function -> service -> LiteLLM +
Letta, on the real stack; faults, storms, forged webhooks and deletion."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from devstack.gotrue import delete_user
from devstack.standard_webhooks import sign_standard_webhook
from tests.e2e.conftest import StackClient

pytestmark = pytest.mark.e2e


async def stored_key(client: StackClient, user_id: uuid.UUID) -> str:
    return await client.db.fetchval("select litellm_key from private.litellm_keys where user_id = $1", user_id)


async def test_signup_provisions_exactly_one_of_everything_and_bills_the_users_own_key(client: StackClient) -> None:
    user = await client.sign_up("Ann")
    # The webhook went through the Edge Function: the stand-in's queue shows it delivered there.
    delivered = await client.db.fetchrow(
        "select url, last_status from net.http_request_queue where convert_from(body, 'utf8')::jsonb #>> "
        "'{record,id}' = $1",
        str(user.id),
    )
    assert delivered["url"].endswith("/functions/v1/signup-webhook") and delivered["last_status"] == 202
    profile = await client.profile(user.id)
    agents = await client.agents_of(user.id)
    assert [a["id"] for a in agents] == [profile["letta_agent_id"]]
    agent = agents[0]
    assert agent["name"] == f"agent-{user.id}"
    assert agent["llm_config"]["provider_name"] == f"user-{user.id}"
    assert agent["llm_config"]["provider_category"] == "byok"
    blocks = {b["label"]: b["value"] for b in agent["memory"]["blocks"]} if "memory" in agent else {}
    if blocks:
        assert blocks["human"] == "User's name: Ann"
    tools = {t["name"] for t in agent["tools"]}
    assert {"memory_insert", "memory_replace", "archival_memory_insert", "archival_memory_search"} <= tools
    assert len(await client.providers_named(f"user-{user.id}")) == 1
    info = await client.litellm_user(user.id)
    assert info is not None
    assert info["user_info"]["max_budget"] == 10.0 and info["user_info"]["budget_duration"] == "1mo"
    assert len(info["keys"]) == 1

    key = await stored_key(client, user.id)
    response = await client.chat(user, "Hello there")
    assert response.status_code == 200, response.text
    calls = [
        r
        for r in await client.upstream_requests()
        if r["path"].endswith("/chat/completions") and r["litellm_user_id"] == str(user.id)
    ]
    assert calls, "the agent's LLM call did not reach LiteLLM under this user"
    assert all(r["api_key"] == key for r in calls)


async def test_key_never_reaches_the_user(client: StackClient) -> None:
    user = await client.sign_up("Bo")
    key = await stored_key(client, user.id)
    base = client.stack.config.service_url
    for path in ("/api/v1/auth/me", "/api/v1/chat/history"):
        response = await client.http.get(f"{base}{path}", headers=user.headers)
        assert response.status_code == 200
        assert key not in response.text


async def test_letta_down_during_signup_then_back_no_duplicates(client: StackClient) -> None:
    stack = client.stack
    assert stack.letta is not None
    stack.letta.stop()
    try:
        user = await client.sign_up("Cy", wait_active=False)
        await client.wait_for(
            "select e.detail from public.user_profiles p join private.provisioning_errors e on e.user_id = p.id "
            "where p.id = $1 and p.provisioning_attempts >= 1",
            user.id,
            timeout=60,
        )
        profile = await client.profile(user.id)
        assert profile["agent_status"] in ("pending", "provisioning")
        assert "letta" in profile["provisioning_error"]
        # The LiteLLM part succeeded and its key was kept for the retry.
        first_key = await stored_key(client, user.id)
        assert first_key
    finally:
        stack.letta.start()
        stack.wait_letta()
    await client.wait_status(user.id, "active", timeout=120)
    assert await stored_key(client, user.id) == first_key
    assert len(await client.agents_of(user.id)) == 1
    assert len(await client.providers_named(f"user-{user.id}")) == 1
    info = await client.litellm_user(user.id)
    assert info is not None and len(info["keys"]) == 1


def signed(client: StackClient, payload: dict, message_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(payload).encode()
    message_id = message_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time())
    signature = sign_standard_webhook(client.stack.config.standard_webhook_secret, message_id, timestamp, body)
    headers = {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
    return body, headers


def insert_event(user_id: uuid.UUID) -> dict:
    return {"type": "INSERT", "table": "users", "schema": "auth", "record": {"id": str(user_id)}, "old_record": None}


async def test_webhook_storm_with_reconciler_running(client: StackClient) -> None:
    user = await client.sign_up("Di", wait_active=False)
    url = f"{client.stack.config.service_url}/webhooks/auth"
    body, headers = signed(client, insert_event(user.id))
    shared = {"x-webhook-secret": client.stack.config.webhook_secret, "content-type": "application/json"}
    responses = await asyncio.gather(
        *[client.http.post(url, content=body, headers=headers) for _ in range(10)],
        *[client.http.post(url, content=body, headers=shared) for _ in range(10)],
    )
    assert [r.status_code for r in responses] == [202] * 20
    await client.wait_status(user.id, "active")
    await asyncio.sleep(2)  # let any straggler finish: it must find everything in place
    assert len(await client.agents_of(user.id)) == 1
    assert len(await client.providers_named(f"user-{user.id}")) == 1
    info = await client.litellm_user(user.id)
    assert info is not None and len(info["keys"]) == 1


async def test_forged_webhooks_get_401_and_provision_nothing(client: StackClient) -> None:
    url = f"{client.stack.config.service_url}/webhooks/auth"
    stranger = uuid.uuid4()
    body, headers = signed(client, insert_event(stranger))
    bad_signature = {**headers, "webhook-signature": "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}
    replayed = signed(client, insert_event(stranger))[1] | {"webhook-timestamp": str(int(time.time()) - 3600)}
    for attempt in (
        client.http.post(url, content=body, headers=bad_signature),
        client.http.post(url, content=body, headers=replayed),
        client.http.post(url, content=body, headers={"x-webhook-secret": "wrong" * 10}),
        client.http.post(url, content=body),
    ):
        response = await attempt
        assert response.status_code == 401, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
    await asyncio.sleep(1)
    assert await client.profile(stranger) is None
    assert await client.litellm_user(stranger) is None


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        json.dumps({"type": "INSERT", "table": "sessions", "schema": "auth", "record": {"id": "x"}}).encode(),
        json.dumps({"type": "INSERT", "table": "users", "schema": "auth", "record": {"id": "not-a-uuid"}}).encode(),
        json.dumps({"type": "DELETE", "table": "users", "schema": "auth", "record": None, "old_record": None}).encode(),
    ],
)
async def test_malformed_webhook_gets_400_problem_details(client: StackClient, payload: bytes) -> None:
    url = f"{client.stack.config.service_url}/webhooks/auth"
    response = await client.http.post(
        url, content=payload, headers={"x-webhook-secret": client.stack.config.webhook_secret}
    )
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["status"] == 400 and problem["title"] == "Bad Request" and problem["detail"]


async def test_deleting_the_auth_user_removes_everything(client: StackClient) -> None:
    user = await client.sign_up("Ed")
    response = await client.chat(user, "Hello")
    assert response.status_code == 200
    provider_name = f"user-{user.id}"
    await delete_user(client.stack.database_url, user.id)
    assert await client.profile(user.id) is None
    assert not await client.db.fetchval("select count(*) from public.messages where user_id = $1", user.id)
    assert await stored_key(client, user.id) is None
    await client.wait_for(
        "select not exists(select 1 from private.deprovisioning where user_id = $1)", user.id, timeout=60
    )
    assert await client.agents_of(user.id) == []
    assert await client.providers_named(provider_name) == []
    assert await client.litellm_user(user.id) is None


async def test_oversized_webhook_is_refused_before_it_is_read_whole(client: StackClient) -> None:
    url = f"{client.stack.config.service_url}/webhooks/auth"
    response = await client.http.post(
        url, content=b"{" + b" " * 70_000 + b"}", headers={"x-webhook-secret": client.stack.config.webhook_secret}
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
