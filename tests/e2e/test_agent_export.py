"""Issue 15 item 5: the neutral agent export, the account export, and an admin's rebuild of a lost agent from an
export, on the real stack (Letta 0.16.8 with the scripted model behind the LiteLLM double)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from service.agents.export import PAGE, REBUILD_MAX_BODY_BYTES, agent_export
from service.clients.letta import LettaClient
from tests.e2e.conftest import StackClient, User

pytestmark = pytest.mark.e2e


def url(client: StackClient, path: str) -> str:
    return f"{client.stack.config.service_url}{path}"


def admin(client: StackClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {client.stack.config.admin_api_key}"}


def rebuild_url(client: StackClient, user_id: uuid.UUID) -> str:
    return url(client, f"/api/v1/admin/users/{user_id}/agent/rebuild")


async def export_of(client: StackClient, user: User) -> dict[str, Any]:
    response = await client.http.get(url(client, "/api/v1/agent/export"), headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "attachment" in response.headers["content-disposition"]
    body: dict[str, Any] = response.json()
    return body


def own_history(export: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The agent's own history (oldest first) as (role, text or tool name)."""
    return [
        (m["role"], m["text"] if m["role"] != "assistant" or m["text"] else m["tool_calls"][0]["name"])
        for m in reversed(export["messages"])
        if m["conversation_id"] is None
    ]


async def talk_in_a_conversation(client: StackClient, agent_id: str, text: str) -> str:
    """A Letta conversation of the agent (what a thread is), with one turn in it, made directly in Letta."""
    conversation = await client.letta("POST", "/v1/conversations/", params={"agent_id": agent_id})
    await client.letta(
        "POST",
        f"/v1/conversations/{conversation['id']}/messages",
        json={"messages": [{"role": "user", "content": text}], "streaming": False},
        timeout=60,
    )
    return str(conversation["id"])


async def test_export_then_rebuild_a_deleted_agent_remembers(client: StackClient) -> None:
    user = await client.sign_up("Ada")
    remembered = await client.chat(user, "remember that my cat is Miso")
    assert remembered.status_code == 200 and "Miso" in remembered.json()["content"], remembered.text
    assert (await client.chat(user, "[[archive my passport number ends in 42]]")).status_code == 200
    old_agent = (await client.profile(user.id))["letta_agent_id"]
    conversation_id = await talk_in_a_conversation(client, old_agent, "hello from a thread")

    export = await export_of(client, user)
    assert export["format"] == "ai-chat-backend.agent-export" and export["version"] == 1
    assert export["user_id"] == str(user.id) and export["source"]["agent_id"] == old_agent
    assert export["truncated"] == {"passages": False, "messages": False, "conversations": False}
    blocks = {b["label"]: b for b in export["blocks"]}
    assert "Miso" in blocks["human"]["value"] and blocks["human"]["limit"] == 5000 and blocks["human"]["description"]
    assert [p["text"] for p in export["passages"]] == ["my passport number ends in 42"]
    assert export["passages"][0]["created_at"]
    # The agent's own history, oldest first: each stored Letta message once, tool calls with their results.
    assert own_history(export) == [
        ("user", "remember that my cat is Miso"),
        ("assistant", "memory_insert"),
        ("tool", "User's name: Ada\nmy cat is Miso"),
        ("assistant", "Got it, I will remember that my cat is Miso."),
        ("user", "[[archive my passport number ends in 42]]"),
        ("assistant", "archival_memory_insert"),
        ("tool", "None"),
        ("assistant", "Got it, I archived that: my passport number ends in 42."),
    ]
    own = [m for m in export["messages"] if m["conversation_id"] is None]
    assert all(m["in_context"] for m in own)
    call = next(m for m in own if m["tool_calls"])["tool_calls"][0]
    result = next(m for m in own if m["role"] == "tool" and m["tool_call_id"] == call["id"])
    assert result["tool_name"] == call["name"] and result["status"] == "success"
    # The user's message keeps our message id as its otid.
    first = await client.db.fetchval(
        "select id from public.messages where user_id = $1 and role = 'user' order by created_at limit 1", user.id
    )
    assert own[-1]["otid"] == str(first)
    # The conversation's messages name it, and are out of the agent's own context.
    assert [c["id"] for c in export["conversations"]] == [conversation_id]
    threaded = [m for m in export["messages"] if m["conversation_id"] == conversation_id]
    assert [(m["role"], m["text"]) for m in reversed(threaded)] == [
        ("user", "hello from a thread"),
        ("assistant", "You said: hello from a thread"),
    ]
    assert not any(m["in_context"] for m in threaded)

    # The agent is lost in Letta; an admin rebuilds it from the export.
    await client.letta("DELETE", f"/v1/agents/{old_agent}")
    rebuilt = await client.http.post(rebuild_url(client, user.id), headers=admin(client), content=json.dumps(export))
    assert rebuilt.status_code == 200, rebuilt.text
    result = rebuilt.json()
    new_agent = result["agent_id"]
    assert result["previous_agent_id"] == old_agent and new_agent != old_agent
    assert (result["blocks"], result["passages"], result["messages"], result["in_context"]) == (2, 1, 8, 8)
    assert result["skipped_messages"] == 2
    assert (await client.profile(user.id))["letta_agent_id"] == new_agent
    assert [a["id"] for a in await client.agents_of(user.id)] == [new_agent]
    agent = await client.letta("GET", f"/v1/agents/{new_agent}")
    assert agent["llm_config"]["provider_name"] == f"user-{user.id}" and agent["tags"] == [f"user:{user.id}"]
    assert {"memory_insert", "archival_memory_insert", "archival_memory_search"} <= {t["name"] for t in agent["tools"]}
    assert len(agent["message_ids"]) == 1 + 8  # the system message, then the history that was in context
    passages = await client.letta("GET", f"/v1/agents/{new_agent}/archival-memory")
    assert [(p["text"], p["created_at"][:19]) for p in passages] == [
        (p["text"], p["created_at"][:19]) for p in export["passages"]
    ]

    # The rebuilt agent answers from the same memory: the scripted model reads only the memory in its system prompt.
    recalled = await client.chat(user, "What is my cat called?")
    assert recalled.status_code == 200, recalled.text
    assert recalled.json()["content"] == "From my memory: my cat is Miso"
    found = await client.http.get(url(client, "/api/v1/agent/memory"), headers=user.headers, params={"q": "passport"})
    assert any("passport" in hit["content"] for hit in found.json()["archival_results"])

    # The history came back as it was, followed by the new turn; the conversation's was not replayed.
    again = await export_of(client, user)
    assert own_history(again) == [
        *own_history(export),
        ("user", "What is my cat called?"),
        ("assistant", "From my memory: my cat is Miso"),
    ]
    assert again["conversations"] == [] and again["source"]["agent_id"] == new_agent
    # User messages keep their otid (Letta derives the others' from its own message ids).
    sent = [m["otid"] for m in own if m["role"] == "user"]
    assert [m["otid"] for m in again["messages"][2:] if m["role"] == "user"] == sent


async def test_export_pages_through_everything(client: StackClient) -> None:
    """Letta's cursors, page by page (two per page here), give what one page gives."""
    user = await client.sign_up("Bea")
    for fact in ("my locker code is 1234", "my bike is blue", "my train leaves at nine"):
        assert (await client.chat(user, f"[[archive {fact}]]")).status_code == 200
    agent_id = (await client.profile(user.id))["letta_agent_id"]
    await talk_in_a_conversation(client, agent_id, "one")
    await talk_in_a_conversation(client, agent_id, "two")
    config = client.stack.config
    async with httpx.AsyncClient(timeout=30) as http:
        letta = LettaClient(http, config.letta_url, config.letta_password)
        whole, paged = [
            json.loads(b"".join([chunk async for chunk in await agent_export(letta, user.id, agent_id, page=size)]))
            for size in (PAGE, 2)
        ]
    assert len(whole["passages"]) == 3 and len(whole["conversations"]) == 2
    assert len([m for m in whole["messages"] if m["conversation_id"] is None]) == 12
    for part in ("blocks", "passages", "conversations", "messages"):
        assert paged[part] == whole[part], part


async def test_each_user_exports_only_their_own_agent(client: StackClient) -> None:
    ann, bob = await client.sign_up("Ann"), await client.sign_up("Bob")
    assert (await client.chat(ann, "remember that my secret word is tangerine")).status_code == 200
    assert (await client.chat(bob, "hello")).status_code == 200
    export = await export_of(client, bob)
    assert export["user_id"] == str(bob.id)
    assert export["source"]["agent_id"] == (await client.profile(bob.id))["letta_agent_id"]
    assert "tangerine" not in json.dumps(export)
    # The route names no agent: a query parameter does not choose one.
    ann_agent = (await client.profile(ann.id))["letta_agent_id"]
    response = await client.http.get(
        url(client, "/api/v1/agent/export"), headers=bob.headers, params={"agent_id": ann_agent}
    )
    assert response.status_code == 200 and "tangerine" not in response.text
    unauthenticated = await client.http.get(url(client, "/api/v1/agent/export"))
    assert unauthenticated.status_code == 401


async def test_rebuild_refusals_leave_the_agent_alone(client: StackClient) -> None:
    user = await client.sign_up("Cy")
    assert (await client.chat(user, "remember that my dog is Rex")).status_code == 200
    agent_id = (await client.profile(user.id))["letta_agent_id"]
    export = await export_of(client, user)
    endpoint = rebuild_url(client, user.id)

    async def post(body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return await client.http.post(endpoint, headers=headers or admin(client), content=content)

    # Only an admin credential: not the user, not a user who made themselves admin, not the service key.
    as_user = await post(export, user.headers)
    assert as_user.status_code == 403 and as_user.json()["code"] == "admin_only"
    self_made = client.stack.access_token(user.id, user_metadata={"role": "admin"})
    assert (await post(export, {"Authorization": f"Bearer {self_made}"})).status_code == 403
    service = await post(export, {"Authorization": f"Bearer {client.stack.config.service_key}"})
    assert service.status_code == 403
    # An oversized body is refused before it is parsed.
    too_big = await post(b'{"format": "' + b"x" * REBUILD_MAX_BODY_BYTES + b'"}')
    assert too_big.status_code == 413
    assert too_big.headers["content-type"].startswith("application/problem+json")
    # Malformed exports: 422 problems saying what is wrong; not JSON at all: 400.
    refusals = {
        "version": ({**export, "version": 2}, "$.version"),
        "format": ({**export, "format": "letta-agent-file"}, "$.format"),
        "block": ({**export, "blocks": [{"label": "notes", "value": "x"}]}, "'notes'"),
        "block size": ({**export, "blocks": [{"label": "human", "value": "x" * 5001}]}, "limit is 5000"),
        "other user": ({**export, "user_id": str(uuid.uuid4())}, "not of user"),
        "broken pair": ({**export, "messages": [m for m in export["messages"] if m["role"] != "tool"]}, "tool call"),
        "passage": ({**export, "passages": [{"text": ""}]}, "$.passages[0].text"),
        "nul": ({**export, "passages": [{"text": "a\u0000b"}]}, "NUL"),
    }
    for name, (body, said) in refusals.items():
        refused = await post(body)
        assert refused.status_code == 422, (name, refused.text)
        problem = refused.json()
        assert problem["code"] == "invalid_export" and said in problem["detail"], (name, problem)
        assert refused.headers["content-type"].startswith("application/problem+json")
    assert (await post(b"{not json")).status_code == 400
    unknown = await client.http.post(rebuild_url(client, uuid.uuid4()), headers=admin(client), content=b"{}")
    assert unknown.status_code == 404
    assert (await client.profile(user.id))["letta_agent_id"] == agent_id
    assert [a["id"] for a in await client.agents_of(user.id)] == [agent_id]
    # The same export, as an admin: the agent is replaced, its memory kept.
    rebuilt = await post(export)
    assert rebuilt.status_code == 200, rebuilt.text
    assert rebuilt.json()["previous_agent_id"] == agent_id
    recalled = await client.chat(user, "What is my dog called?")
    assert recalled.json()["content"] == "From my memory: my dog is Rex"


async def test_account_export_bundles_everything(client: StackClient) -> None:
    user = await client.sign_up("Dee")
    reply = await client.chat(user, "remember that my cat is Miso")
    assert reply.status_code == 200
    await client.db.execute(
        "insert into public.message_feedback (message_id, user_id, rating, comment) values ($1, $2, 'up', 'spot on')",
        uuid.UUID(reply.json()["message_id"]),
        user.id,
    )
    response = await client.http.get(url(client, "/api/v1/user/export"), headers=user.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["format"] == "ai-chat-backend.account-export" and body["version"] == 1
    assert body["profile"]["id"] == str(user.id) and body["profile"]["display_name"] == "Dee"
    assert body["usage"]["totals"]["total_messages"] == 2 and len(body["usage"]["days"]) == 1
    (feedback,) = body["feedback"]
    assert (feedback["message_id"], feedback["rating"], feedback["comment"]) == (
        reply.json()["message_id"],
        "up",
        "spot on",
    )
    assert feedback["thread_id"] == body["history"]["messages"][1]["thread_id"]
    assert [m["role"] for m in body["history"]["messages"]] == ["user", "assistant"]
    assert body["agent"]["format"] == "ai-chat-backend.agent-export" and body["agent"]["user_id"] == str(user.id)
    assert "Miso" in next(b["value"] for b in body["agent"]["blocks"] if b["label"] == "human")
    # Without a reachable agent the rest is still exported.
    await client.letta("DELETE", f"/v1/agents/{(await client.profile(user.id))['letta_agent_id']}")
    without = await client.http.get(url(client, "/api/v1/user/export"), headers=user.headers)
    assert without.status_code == 200 and without.json()["agent"] is None
    assert len(without.json()["history"]["messages"]) == 2
    # The agent export alone is refused up front (a problem, not a broken download).
    lost = await client.http.get(url(client, "/api/v1/agent/export"), headers=user.headers)
    assert lost.status_code == 503 and lost.json()["code"] == "agent_unavailable"
