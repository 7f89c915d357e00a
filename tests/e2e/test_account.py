"""Issue: agent, user and account API on the real stack, and the authorization matrix over every route."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import StackClient, User

pytestmark = pytest.mark.e2e


def url(client: StackClient, path: str) -> str:
    return f"{client.stack.config.service_url}{path}"


async def test_agent_status(client: StackClient) -> None:
    user = await client.sign_up("Sam")
    response = await client.http.get(url(client, "/api/v1/agent/status"), headers=user.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    profile = await client.profile(user.id)
    assert body["agent_status"] == "active" and body["agent_id"] == profile["letta_agent_id"]
    assert body["model"] == "gpt-4o-mini"
    assert body["letta"]["reachable"] is True and body["letta"]["agent_found"] is True


async def test_memory_read_search_and_update(client: StackClient) -> None:
    user = await client.sign_up("Tia")
    assert (await client.chat(user, "[[archive my passport number ends in 42]]")).status_code == 200
    memory = (await client.http.get(url(client, "/api/v1/agent/memory"), headers=user.headers)).json()
    blocks = {b["label"]: b for b in memory["blocks"]}
    assert blocks["human"]["value"] == "User's name: Tia" and blocks["human"]["limit"] == 5000
    assert "persona" in blocks
    assert memory["archival_count"] == 1
    found = (
        await client.http.get(url(client, "/api/v1/agent/memory"), headers=user.headers, params={"q": "passport"})
    ).json()
    assert any("passport" in hit["content"] for hit in found["archival_results"])

    patched = await client.http.patch(
        url(client, "/api/v1/agent/memory"), headers=user.headers, json={"human": "User's name: Tia. Likes tea."}
    )
    assert patched.status_code == 200, patched.text
    agent_id = (await client.profile(user.id))["letta_agent_id"]
    block = await client.letta("GET", f"/v1/agents/{agent_id}/core-memory/blocks/human")
    assert block["value"] == "User's name: Tia. Likes tea."

    too_long = await client.http.patch(
        url(client, "/api/v1/agent/memory"), headers=user.headers, json={"persona": "x" * 5001}
    )
    assert too_long.status_code == 422 and too_long.json()["limit"] == 5000
    for bad in ({}, {"core": "x"}, {"human": 5}):
        assert (
            await client.http.patch(url(client, "/api/v1/agent/memory"), headers=user.headers, json=bad)
        ).status_code in (400, 422)


async def test_reset_replaces_the_agent_keeps_history_and_is_safe_to_retry(client: StackClient) -> None:
    user = await client.sign_up("Uma")
    assert (await client.chat(user, "remember that my dog is Rex")).status_code == 200
    old_agent = (await client.profile(user.id))["letta_agent_id"]
    reset = await client.http.post(url(client, "/api/v1/agent/reset"), headers=user.headers, json={"keep_memory": True})
    assert reset.status_code == 200, reset.text
    new_agent = reset.json()["agent_id"]
    assert new_agent != old_agent and reset.json()["previous_agent_id"] == old_agent
    assert [a["id"] for a in await client.agents_of(user.id)] == [new_agent]
    block = await client.letta("GET", f"/v1/agents/{new_agent}/core-memory/blocks/human")
    assert "Rex" in block["value"]
    history = (await client.http.get(url(client, "/api/v1/chat/history"), headers=user.headers)).json()
    assert len(history["messages"]) == 2
    # Again, without keeping memory: a clean agent.
    again = await client.http.post(url(client, "/api/v1/agent/reset"), headers=user.headers, json={})
    assert again.status_code == 200
    fresh = again.json()["agent_id"]
    assert [a["id"] for a in await client.agents_of(user.id)] == [fresh]
    block = await client.letta("GET", f"/v1/agents/{fresh}/core-memory/blocks/human")
    assert "Rex" not in block["value"]
    # The new agent answers, billed to the same user's key.
    assert (await client.chat(user, "hello again")).status_code == 200


async def test_profile_usage_and_budget(client: StackClient) -> None:
    user = await client.sign_up("Val")
    assert (await client.chat(user, "count me")).status_code == 200
    profile = (await client.http.get(url(client, "/api/v1/user/profile"), headers=user.headers)).json()
    assert profile["id"] == str(user.id) and profile["agent_status"] == "active"
    usage = (await client.http.get(url(client, "/api/v1/user/usage"), headers=user.headers)).json()
    assert usage["totals"]["total_messages"] == 2 and usage["totals"]["total_tokens"] > 0
    assert len(usage["days"]) == 1
    assert usage["billing"]["available"] is True
    budget = usage["billing"]["budget"]
    assert budget["max_budget"] == 10.0 and budget["spend"] > 0
    assert budget["remaining"] == pytest.approx(10.0 - budget["spend"])
    assert budget["budget_reset_at"]
    direct = (await client.http.get(url(client, "/api/v1/user/budget"), headers=user.headers)).json()
    assert direct["max_budget"] == 10.0
    bad_range = await client.http.get(
        url(client, "/api/v1/user/usage"), headers=user.headers, params={"from": "2026-02-01", "to": "2026-01-01"}
    )
    assert bad_range.status_code == 400


async def test_usage_without_litellm_flags_billing_unavailable(client: StackClient) -> None:
    user = await client.sign_up("Wes")
    await client.litellm("POST", "/_double/faults", json={"route": "/user/info", "count": 3, "status_code": 503})
    response = await client.http.get(url(client, "/api/v1/user/usage"), headers=user.headers)
    await client.http.delete(f"{client.stack.config.litellm_url}/_double/faults", headers=client.master)
    assert response.status_code == 200, response.text
    assert response.json()["billing"] == {"available": False, "budget": None}


async def test_only_admins_change_budgets(client: StackClient) -> None:
    user = await client.sign_up("Xan")
    other = await client.sign_up("Yul")
    endpoint = url(client, "/api/v1/user/budget")
    body = {"user_id": str(user.id), "max_budget": 50.0}
    # A user can never raise their own budget, nor anyone else's.
    assert (await client.http.post(endpoint, headers=user.headers, json=body)).status_code == 403
    assert (await client.http.post(endpoint, headers=other.headers, json=body)).status_code == 403
    admin_token = client.stack.access_token(other.id, app_metadata={"provider": "email", "role": "admin"})
    as_admin = await client.http.post(endpoint, headers={"Authorization": f"Bearer {admin_token}"}, json=body)
    assert as_admin.status_code == 200, as_admin.text
    assert as_admin.json()["max_budget"] == 50.0
    # A self-made admin (user_metadata is the user's own to write) is not one.
    self_made = client.stack.access_token(other.id, user_metadata={"role": "admin"})
    as_self_made = await client.http.post(endpoint, headers={"Authorization": f"Bearer {self_made}"}, json=body)
    assert as_self_made.status_code == 403 and as_self_made.json()["code"] == "admin_only"
    # The Supabase service key is not an admin credential (SERVICE_ROLE_IS_ADMIN is off); ADMIN_API_KEY is.
    service = {"Authorization": f"Bearer {client.stack.config.service_key}"}
    as_service = await client.http.post(endpoint, headers=service, json={**body, "max_budget": 20.0})
    assert as_service.status_code == 403 and as_service.json()["code"] == "service_role_refused"
    admin = {"Authorization": f"Bearer {client.stack.config.admin_api_key}"}
    as_admin_key = await client.http.post(endpoint, headers=admin, json={**body, "max_budget": 20.0})
    assert as_admin_key.status_code == 200 and as_admin_key.json()["max_budget"] == 20.0
    assert (await client.litellm_user(user.id))["user_info"]["max_budget"] == 20.0
    unknown = await client.http.post(endpoint, headers=admin, json={**body, "user_id": str(uuid.uuid4())})
    assert unknown.status_code == 404
    negative = await client.http.post(endpoint, headers=admin, json={**body, "max_budget": -1})
    assert negative.status_code == 400
    for duration in ("0s", "\u0661d", "30days"):  # not a duration, non-ASCII digits: refused before LiteLLM
        refused = await client.http.post(endpoint, headers=admin, json={**body, "budget_duration": duration})
        assert refused.status_code == 400, duration
    # Well-formed, but LiteLLM cannot schedule it: LiteLLM's refusal is the caller's 422, not a 503 outage.
    refused = await client.http.post(endpoint, headers=admin, json={**body, "budget_duration": "999mo"})
    assert refused.status_code == 422 and "budget_duration" in refused.json()["detail"]
    assert (await client.litellm_user(user.id))["user_info"]["max_budget"] == 20.0  # unchanged


async def test_export_json_and_markdown_stream_the_whole_history(client: StackClient) -> None:
    user = await client.sign_up("Zed")
    assert (await client.chat(user, "first words")).status_code == 200
    # Plenty of history, written the way the service writes it.
    await client.db.execute(
        "insert into public.messages (user_id, turn_id, role, content, created_at) "
        "select $1, gen_random_uuid(), case when i % 2 = 0 then 'user' else 'assistant' end, 'bulk ' || i, "
        "now() + make_interval(secs => i) from generate_series(1, 100000) i",
        user.id,
    )
    async with client.http.stream(
        "GET", url(client, "/api/v1/chat/export"), headers=user.headers, params={"format": "json"}, timeout=120
    ) as response:
        assert response.status_code == 200
        assert "attachment" in response.headers["content-disposition"]
        body = await response.aread()
    exported = json.loads(body)
    assert exported["user_id"] == str(user.id)
    assert len(exported["messages"]) == 100002
    assert exported["messages"][0]["content"] == "first words"
    assert exported["messages"][-1]["content"] == "bulk 100000"
    markdown = await client.http.get(
        url(client, "/api/v1/chat/export"), headers=user.headers, params={"format": "markdown"}, timeout=120
    )
    assert markdown.status_code == 200 and markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    assert markdown.text.count("\n### ") == 100002
    assert (
        await client.http.get(url(client, "/api/v1/chat/export"), headers=user.headers, params={"format": "pdf"})
    ).status_code == 400


async def test_delete_account_removes_everything_and_is_safe_to_retry(client: StackClient) -> None:
    user = await client.sign_up("Abe")
    assert (await client.chat(user, "soon gone")).status_code == 200
    assert (await client.chat(user, "[[archive my locker code is 1234]]")).status_code == 200
    agent_id = (await client.profile(user.id))["letta_agent_id"]
    archives = [a["id"] for a in await client.letta("GET", "/v1/archives/", params={"agent_id": agent_id})]
    assert archives  # the agent's archival memory, which Letta keeps when only the agent is deleted
    first = await client.http.delete(url(client, "/api/v1/user"), headers=user.headers)
    assert first.status_code == 200, first.text
    assert first.json()["deleted"] is True
    assert not await client.db.fetchval("select exists(select 1 from auth.users where id = $1)", user.id)
    assert await client.profile(user.id) is None
    assert not await client.db.fetchval("select count(*) from public.messages where user_id = $1", user.id)
    await client.wait_for(
        "select not exists(select 1 from private.deprovisioning where user_id = $1)", user.id, timeout=60
    )
    assert await client.agents_of(user.id) == []
    for archive_id in archives:
        with pytest.raises(httpx.HTTPStatusError) as gone:
            await client.letta("GET", f"/v1/archives/{archive_id}")
        assert gone.value.response.status_code == 404
    assert await client.providers_named(f"user-{user.id}") == []
    assert await client.litellm_user(user.id) is None
    # The token is still valid until it expires: a retry is harmless.
    again = await client.http.delete(url(client, "/api/v1/user"), headers=user.headers)
    assert again.status_code == 200 and again.json()["cleanup_complete"] is True


async def test_memory_routes_are_rate_limited_per_user(client: StackClient) -> None:
    # The e2e stack allows 10 memory calls per minute per user.
    heavy, other = await client.sign_up("Cal"), await client.sign_up("Dee")
    statuses = [
        (await client.http.get(url(client, "/api/v1/agent/memory"), headers=heavy.headers)).status_code
        for _ in range(11)
    ]
    assert statuses == [200] * 10 + [429]
    limited = await client.http.get(url(client, "/api/v1/agent/memory"), headers=heavy.headers)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["limit"] == 10 and limited.json()["window_seconds"] == 60
    # Other users, and the user's other endpoints, are unaffected.
    assert (await client.http.get(url(client, "/api/v1/agent/memory"), headers=other.headers)).status_code == 200
    assert (await client.http.get(url(client, "/api/v1/chat/history"), headers=heavy.headers)).status_code == 200


# -- authorization matrix -------------------------------------------------------------------------------
PUBLIC = {
    ("GET", "/health/live"),
    ("GET", "/health/ready"),
    ("POST", "/webhooks/auth"),
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
}
USER_ONLY = {
    ("GET", "/api/v1/agent/status"),
    ("GET", "/api/v1/agent/memory"),
    ("PATCH", "/api/v1/agent/memory"),
    ("POST", "/api/v1/agent/reset"),
    ("GET", "/api/v1/user/profile"),
    ("GET", "/api/v1/user/usage"),
    ("GET", "/api/v1/user/budget"),
    ("DELETE", "/api/v1/user"),
    ("GET", "/api/v1/chat/export"),
    ("POST", "/api/v1/chat/message"),
    ("GET", "/api/v1/chat/history"),
    ("POST", "/api/v1/chat/cancel"),
    ("GET", "/api/v1/chat/turns/{turn_id}/stream"),
    ("GET", "/api/v1/chat/turns/current/stream"),
    ("POST", "/api/v1/chat/ui"),
    ("GET", "/api/v1/chat/ui/{chat_id}/stream"),
    ("GET", "/api/v1/threads"),
    ("POST", "/api/v1/threads"),
    ("GET", "/api/v1/threads/{thread_id}"),
    ("PATCH", "/api/v1/threads/{thread_id}"),
    ("DELETE", "/api/v1/threads/{thread_id}"),
    ("POST", "/api/v1/threads/{thread_id}/fork"),
    ("PUT", "/api/v1/chat/messages/{message_id}/feedback"),
    ("DELETE", "/api/v1/chat/messages/{message_id}/feedback"),
    ("GET", "/api/v1/agent/export"),
    ("GET", "/api/v1/user/export"),
    ("GET", "/api/v1/chat/search"),
}
# The LLM proxy answers errors as OpenAI error objects ({"error": {"code", ...}}), with the same codes.
LLM_PROXY = {("POST", "/api/v1/llm/chat/completions"), ("GET", "/api/v1/llm/models")}
# A body each route takes, so that what is checked is who calls, not what they send.
BODIES = {
    "/api/v1/chat/ui": {"messages": [{"role": "user", "parts": [{"type": "text", "text": "x"}]}]},
    "/api/v1/threads": {},
    "/api/v1/threads/{thread_id}": {"title": "x"},
    "/api/v1/threads/{thread_id}/fork": {"message_id": "00000000-0000-4000-8000-000000000000"},
    "/api/v1/chat/messages/{message_id}/feedback": {"rating": "up"},
}


def error_code(path: str, body: dict[str, Any]) -> str:
    return str(body["error"]["code"] if path.startswith("/api/v1/llm/") else body["code"])


# The query a route requires, so that what is checked is who calls.
QUERIES = {"/api/v1/chat/search": "?q=x"}


def concrete(path: str) -> str:
    """A route's path with its parameters filled in (a made-up id: the route must answer before it looks)."""
    return re.sub(r"\{[^}]+\}", "00000000-0000-4000-8000-000000000000", path) + QUERIES.get(path, "")


async def routes(client: StackClient) -> set[tuple[str, str]]:
    schema = (await client.http.get(url(client, "/schema/openapi.json"))).json()
    return {
        (method.upper(), path.rstrip("/") or "/")
        for path, item in schema["paths"].items()
        for method in item
        if method in ("get", "post", "patch", "delete", "put")
    }


async def test_every_route_is_in_the_matrix(client: StackClient) -> None:
    admin_or_user = {("GET", "/api/v1/auth/me"), ("POST", "/api/v1/user/budget")}
    admin_only = {("POST", "/api/v1/admin/users/{user_id}/agent/rebuild")}
    assert await routes(client) == PUBLIC | USER_ONLY | LLM_PROXY | admin_or_user | admin_only


async def test_a_user_is_refused_admin_routes(client: StackClient) -> None:
    user = await client.sign_up("Ada")
    response = await client.http.post(
        url(client, concrete("/api/v1/admin/users/{user_id}/agent/rebuild")), headers=user.headers, json={}
    )
    assert response.status_code == 403 and response.json()["code"] == "admin_only", response.text


async def test_anonymous_gets_401_on_every_protected_route(client: StackClient) -> None:
    for method, path in await routes(client) - PUBLIC:
        response = await client.http.request(method, url(client, concrete(path)), json={})
        assert response.status_code == 401, (method, path, response.status_code)
        if (method, path) in LLM_PROXY:
            assert response.json()["error"]["code"] == "unauthorized"
        else:
            assert response.headers["content-type"].startswith("application/problem+json")


async def test_service_role_and_admin_key_have_no_user_resources(client: StackClient) -> None:
    # The service key is refused outright (service_role_refused); the admin key has no user (not_a_user).
    for key, code in (
        (client.stack.config.service_key, "service_role_refused"),
        (client.stack.config.admin_api_key, "not_a_user"),
    ):
        for method, path in USER_ONLY | LLM_PROXY:
            body = BODIES.get(path, {"content": "x"})
            response = await client.http.request(
                method, url(client, concrete(path)), headers={"Authorization": f"Bearer {key}"}, json=body
            )
            assert response.status_code == 403, (method, path, response.status_code, response.text)
            assert error_code(path, response.json()) == code, (method, path, response.text)


async def test_user_a_never_sees_user_b(client: StackClient) -> None:
    a: User = await client.sign_up("Ava")
    b: User = await client.sign_up("Ben")
    assert (await client.chat(b, "b's secret is 1234")).status_code == 200
    b_agent = (await client.profile(b.id))["letta_agent_id"]
    for path in (
        "/api/v1/chat/history",
        "/api/v1/chat/export",
        "/api/v1/agent/memory",
        "/api/v1/agent/status",
        "/api/v1/user/profile",
        "/api/v1/user/usage",
    ):
        response = await client.http.get(
            url(client, path), headers=a.headers, params={"user_id": str(b.id), "agent_id": b_agent}
        )
        assert response.status_code == 200, (path, response.text)
        assert "1234" not in response.text and b_agent not in response.text and str(b.id) not in response.text
