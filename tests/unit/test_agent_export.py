"""The agent export's pure parts: Letta's listed entries to neutral messages, the checks before a rebuild, and the
agent file a rebuild imports (its real import is tested in tests/e2e/test_agent_export.py)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from service.agents.export import EXPORT_EXAMPLE, SYSTEM_PLACEHOLDER, agent_file, neutral_messages, rebuild_plan
from service.agents.schemas import AgentExport, ExportToolCall
from service.clients.letta import PASSAGE_BATCH, PASSAGE_BATCH_CHARS, _passage_batches
from service.errors import DomainError

USER = uuid.UUID("6f1c2d9e-1b7a-4c1e-9a55-0d4b5a3b2c10")
T0 = datetime(2026, 11, 30, 10, 15, 1, tzinfo=UTC)


def entry(kind: str, letta_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "message_type": kind,
        "id": letta_id,
        "date": "2026-11-30T10:15:01+00:00",
        "otid": f"otid-{letta_id}",
        **fields,
    }


def test_entries_of_one_stored_message_become_one_neutral_message() -> None:
    items = [
        entry("system_message", "m0", content="<base_instructions>..."),
        entry("user_message", "m1", content=[{"type": "text", "text": "remember "}, {"type": "text", "text": "Miso"}]),
        entry("reasoning_message", "m2", reasoning="I should store it."),
        entry("assistant_message", "m2", content="On it."),
        entry(
            "tool_call_message",
            "m2",
            tool_calls=[{"name": "memory_insert", "arguments": '{"new_string": "Miso"}', "tool_call_id": "call_1"}],
        ),
        entry(
            "tool_return_message", "m3", name="memory_insert", tool_return="ok", status="error", tool_call_id="call_1"
        ),
        entry("hidden_reasoning_message", "m4", state="redacted"),
        entry("approval_request_message", "m5"),
        entry("assistant_message", "m6", content="Done."),
    ]
    out = neutral_messages(items, None, {"m1", "m2", "m6"})
    assert [(m.role, m.id) for m in out] == [("user", "m1"), ("assistant", "m2"), ("tool", "m3"), ("assistant", "m6")]
    user, call, result, _ = out
    assert user.text == "remember Miso" and user.otid == "otid-m1" and user.created_at == T0
    assert (call.text, call.reasoning) == ("On it.", "I should store it.")
    assert call.tool_calls == [ExportToolCall(id="call_1", name="memory_insert", arguments='{"new_string": "Miso"}')]
    assert (result.text, result.tool_name, result.tool_call_id, result.status) == (
        "ok",
        "memory_insert",
        "call_1",
        "error",
    )
    assert [m.in_context for m in out] == [True, True, False, True]
    assert all(m.conversation_id is None for m in out)


def test_a_conversations_messages_name_it_and_are_never_in_the_agents_context() -> None:
    out = neutral_messages([entry("user_message", "m1", content="hi")], "conv-1", {"m1"})
    assert out[0].conversation_id == "conv-1" and out[0].in_context is False


def test_the_legacy_single_tool_call_field_is_read_too() -> None:
    call = {"name": "archival_memory_insert", "arguments": "{}", "tool_call_id": "call_9"}
    out = neutral_messages([entry("tool_call_message", "m1", tool_call=call)], None, set())
    assert out[0].tool_calls == [ExportToolCall(id="call_9", name="archival_memory_insert", arguments="{}")]


def export(**fields: Any) -> AgentExport:
    return msgspec.convert({"format": "ai-chat-backend.agent-export", "version": 1, **fields}, AgentExport)


def message(role: str, at: int, **fields: Any) -> dict[str, Any]:
    return {"role": role, "created_at": (T0 + timedelta(seconds=at)).isoformat(), "in_context": True, **fields}


TURN = [  # newest first, as an export lists them
    message("assistant", 2, text="Got it."),
    message("tool", 1, text="User's name: Ada", tool_call_id="call_1", tool_name="memory_insert", status="success"),
    message("assistant", 1, tool_calls=[{"id": "call_1", "name": "memory_insert", "arguments": "{}"}]),
    message("user", 0, text="remember that my cat is Miso", otid="ours"),
]


def test_the_example_is_an_export_a_rebuild_takes() -> None:
    plan = rebuild_plan(msgspec.convert(EXPORT_EXAMPLE, AgentExport), USER)
    assert plan.blocks["human"] == "User's name: Ada\nmy cat is Miso"
    assert [m.role for m in plan.history] == ["user", "assistant", "tool", "assistant"]
    assert (plan.replayed, plan.in_context, plan.skipped) == (4, 4, 1)


def test_a_rebuild_plan_takes_the_own_history_oldest_first() -> None:
    threaded = message("user", 5, text="in a thread", conversation_id="conv-1", in_context=False)
    naive = {**message("user", 9, text="naive time"), "created_at": "2026-11-30T10:16:00"}
    plan = rebuild_plan(export(messages=[naive, threaded, *TURN], blocks=[{"label": "human", "value": "x"}]), USER)
    assert [m.text or m.role for m in plan.history] == [
        "remember that my cat is Miso",
        "assistant",
        "User's name: Ada",
        "Got it.",
        "naive time",
    ]
    assert plan.history[-1].created_at.tzinfo is not None
    assert plan.blocks == {"human": "x"} and plan.skipped == 1


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"user_id": str(uuid.uuid4())}, "not of user"),
        ({"blocks": [{"label": "notes", "value": "x"}]}, "only the blocks human, persona"),
        ({"blocks": [{"label": "human", "value": "a"}, {"label": "human", "value": "b"}]}, "appears twice"),
        ({"blocks": [{"label": "persona", "value": "x" * 5001}]}, "its limit is 5000"),
        ({"passages": [{"text": "a\x00b"}]}, "NUL"),
        ({"messages": [message("user", 0, text="x", otid="a\x00")]}, "NUL"),
        ({"messages": [m for m in TURN if m["role"] != "tool"]}, "'call_1' is not followed by its result"),
        ({"messages": [TURN[1], TURN[3]]}, "'call_1' follows no call of it"),
        ({"messages": TURN[2:]}, "'call_1' is not followed by its result"),
    ],
)
def test_a_rebuild_plan_refuses_what_cannot_be_rebuilt(fields: dict[str, Any], said: str) -> None:
    with pytest.raises(DomainError) as refused:
        rebuild_plan(export(**fields), USER)
    assert refused.value.code == "invalid_export" and said in (refused.value.detail or "")


def test_out_of_context_messages_need_no_pairs() -> None:
    unpaired = [{**m, "in_context": False} for m in TURN if m["role"] != "tool"]
    assert rebuild_plan(export(messages=unpaired), USER).in_context == 0


def test_the_agent_file_stores_the_history_in_order_and_the_context_after_a_system_message() -> None:
    reasoning_only = message("assistant", 1, reasoning="hmm")
    out_of_context = {**message("user", 0, text="older"), "in_context": False}
    plan = rebuild_plan(export(messages=[*TURN[:3], reasoning_only, TURN[3], out_of_context]), USER)
    spec = {"name": "agent-x", "agent_type": "letta_v1_agent", "tags": ["user:x"], "memory_blocks": []}
    document = json.loads(agent_file(spec, plan.history))
    assert [len(document[k]) for k in ("groups", "blocks", "files", "sources", "tools", "mcp_servers", "skills")] == [
        0
    ] * 7
    (agent,) = document["agents"]
    assert {k: agent[k] for k in spec} == spec and agent["id"] == "agent-0"
    messages = agent["messages"]
    assert [m["id"] for m in messages] == [f"message-{n}" for n in range(6)]
    assert [m["role"] for m in messages] == ["system", "user", "user", "assistant", "tool", "assistant"]
    assert messages[0]["content"] == [{"type": "text", "text": SYSTEM_PLACEHOLDER}]
    assert agent["in_context_message_ids"] == ["message-0", "message-2", "message-3", "message-4", "message-5"]
    # Whole-second times become strictly increasing, so Letta keeps the order.
    times = [datetime.fromisoformat(m["created_at"]) for m in messages]
    assert times == sorted(times) and len(set(times)) == len(times)
    user, call, result = messages[2], messages[3], messages[4]
    assert user["otid"] == "ours" and user["content"] == [{"type": "text", "text": "remember that my cat is Miso"}]
    assert call["content"] == [] and call["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "memory_insert", "arguments": "{}"}}
    ]
    # A tool's result as Letta's tools return it, which Letta parses back when it lists the message.
    wrapped = json.loads(result["content"][0]["text"])
    assert (wrapped["status"], wrapped["message"]) == ("OK", "User's name: Ada")
    assert wrapped["time"] == "2026-11-30 10:15:02 AM UTC+0000"
    assert result["tool_returns"] == [
        {"tool_call_id": "call_1", "status": "success", "func_response": result["content"][0]["text"]}
    ]
    assert result["tool_call_id"] == "call_1" and result["name"] == "memory_insert"


def test_passages_go_in_batches_within_an_embedding_requests_limits() -> None:
    small = [{"text": "x"}] * (PASSAGE_BATCH * 2 + 1)
    assert [len(b) for b in _passage_batches(small)] == [PASSAGE_BATCH, PASSAGE_BATCH, 1]
    big = [{"text": "x" * (PASSAGE_BATCH_CHARS // 2)}] * 3
    assert [len(b) for b in _passage_batches(big)] == [2, 1]
    huge = [{"text": "x" * (PASSAGE_BATCH_CHARS + 1)}, {"text": "y"}]
    assert [len(b) for b in _passage_batches(huge)] == [1, 1]
    assert _passage_batches([]) == []
