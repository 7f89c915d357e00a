"""A user's agent as a JSON document of ours (``AgentExport``, not Letta's agent file), and an agent rebuilt from one.

The export holds the memory blocks, the archival passages (text, tags, time; oldest first) and Letta's stored
history in a neutral form, newest first: the agent's own history, then each conversation's (a thread's), every
message naming its ``conversation_id`` (null: the agent's own history). Letta lists a conversation's messages
only when asked for that conversation, so the export asks per conversation. It is streamed a page at a time,
so memory stays bounded, and capped (``MAX_EXPORT_*`` in ``service.agents.schemas``): a capped part stops there
and ``truncated`` says so; newest first means a capped history keeps the newest messages.

A rebuild makes a new agent from the user's spec (``service.agents.spec``) through the one lifecycle
(``AgentLifecycle.replace``: leftovers deleted, the new id written under the claim's fence, the old agent
deleted) with the export's blocks. Letta 0.16.8 stores messages without running a turn only when it imports
its own agent file, so that file is the transport: the spec plus the agent's own history, whose messages that
were in context go back in context. Then the passages (Letta embeds them anew) and a recompiled system message.
Conversations' messages are not replayed: a thread's next turn opens a new conversation on the new agent, with
the shared memory (our own history in Postgres keeps every message).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from service.agents.schemas import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    MAX_EXPORT_CONVERSATIONS,
    MAX_EXPORT_MESSAGES,
    MAX_EXPORT_PASSAGES,
    AgentExport,
    ExportBlock,
    ExportConversation,
    ExportLimits,
    ExportMessage,
    ExportPassage,
    ExportSource,
    ExportToolCall,
    ExportTruncation,
)
from service.agents.spec import BLOCK_LIMIT, EDITABLE_BLOCKS
from service.clients.errors import UpstreamError
from service.clients.letta import LettaClient
from service.errors import DomainError

logger = logging.getLogger("service.agents")

PAGE = 100  # messages and conversations per Letta request
PASSAGE_PAGE = 50  # Letta lists each passage with its embedding (~30 KB)
# The largest export a rebuild takes: the caps' worth of typical passages and messages, with room to spare.
REBUILD_MAX_BODY_BYTES = 64 * 1024 * 1024

_encode = msgspec.json.Encoder().encode


# -- export ---------------------------------------------------------------------------------------------------
async def agent_export(
    letta: LettaClient, user_id: uuid.UUID, agent_id: str, *, page: int = PAGE
) -> AsyncIterator[bytes]:
    """The export as a stream of bytes. The agent is read before this returns, so an unreachable Letta is an
    error answer rather than a broken download; a Letta failure later ends the stream early (invalid JSON)."""
    snapshot = await letta.agent_snapshot(agent_id)
    return _stream(letta, user_id, snapshot, page)


async def _stream(letta: LettaClient, user_id: uuid.UUID, snapshot: dict[str, Any], page: int) -> AsyncIterator[bytes]:
    agent_id = str(snapshot["id"])
    llm_config = snapshot.get("llm_config") or {}
    head = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": datetime.now(UTC),
        "user_id": user_id,
        "source": ExportSource(agent_id=agent_id, model=llm_config.get("model")),
        "blocks": blocks_of(snapshot),
    }
    truncated = ExportTruncation()
    yield _encode(head)[:-1] + b',"passages":['
    count = 0
    async for passage in _passages(letta, agent_id, min(page, PASSAGE_PAGE)):
        if count == MAX_EXPORT_PASSAGES:
            truncated.passages = True
            break
        yield (b"," if count else b"") + _encode(passage)
        count += 1
    conversations: list[ExportConversation] = []
    async for conversation in _conversations(letta, agent_id, page):
        if len(conversations) == MAX_EXPORT_CONVERSATIONS:
            truncated.conversations = True
            break
        conversations.append(conversation)
    yield b'],"conversations":' + _encode(conversations) + b',"messages":['
    in_context = set(snapshot.get("message_ids") or [])
    count = 0
    for conversation_id in [None, *(c.id for c in conversations)]:
        async for message in _messages(letta, agent_id, conversation_id, in_context, page):
            if count == MAX_EXPORT_MESSAGES:
                truncated.messages = True
                break
            yield (b"," if count else b"") + _encode(message)
            count += 1
        if truncated.messages:
            break
    yield b'],"truncated":' + _encode(truncated) + b',"limits":' + _encode(ExportLimits()) + b"}"


def blocks_of(snapshot: dict[str, Any]) -> list[ExportBlock]:
    blocks = snapshot.get("blocks") or (snapshot.get("memory") or {}).get("blocks") or []
    return [
        ExportBlock(
            label=b["label"], value=b.get("value") or "", limit=b.get("limit"), description=b.get("description")
        )
        for b in blocks
        if b.get("label")
    ]


async def _passages(letta: LettaClient, agent_id: str, page: int) -> AsyncIterator[ExportPassage]:
    after = None
    while items := await letta.passages_page(agent_id, after, page):
        for item in items:
            yield ExportPassage(
                text=item.get("text") or "", created_at=_time(item.get("created_at")), tags=item.get("tags")
            )
        after = str(items[-1]["id"])


async def _conversations(letta: LettaClient, agent_id: str, page: int) -> AsyncIterator[ExportConversation]:
    after = None
    while items := await letta.conversations_page(agent_id, after, page):
        for item in items:
            yield ExportConversation(
                id=str(item["id"]), summary=item.get("summary"), created_at=_time(item.get("created_at"))
            )
        after = str(items[-1]["id"])


async def _messages(
    letta: LettaClient, agent_id: str, conversation_id: str | None, in_context: set[str], page: int
) -> AsyncIterator[ExportMessage]:
    """One conversation's messages (None: the agent's own history), newest first."""
    before = None
    while items := await letta.messages_page(agent_id, conversation_id, before, page):
        for message in reversed(neutral_messages(items, conversation_id, in_context)):
            yield message
        before = str(items[0]["id"])  # a page is oldest first


def neutral_messages(
    items: Iterable[dict[str, Any]], conversation_id: str | None, in_context: set[str]
) -> list[ExportMessage]:
    """Letta's listed entries (oldest first) as neutral messages: the entries Letta lists for one stored message
    (its reasoning, text and tool calls) become one. Letta's compiled system prompt, hidden reasoning, approvals and
    events are left out."""
    out: list[ExportMessage] = []
    for item in items:
        kind, letta_id = item.get("message_type"), item.get("id")
        common: dict[str, Any] = {
            "created_at": _time(item.get("date")) or datetime.now(UTC),
            "otid": item.get("otid"),
            "conversation_id": conversation_id,
            "in_context": conversation_id is None and letta_id in in_context,
            "id": letta_id,
        }
        if kind == "user_message":
            out.append(ExportMessage(role="user", text=_text(item.get("content")), **common))
        elif kind in ("assistant_message", "reasoning_message", "tool_call_message"):
            same = bool(out) and out[-1].id == letta_id and out[-1].role == "assistant"
            message = out[-1] if same else ExportMessage(role="assistant", **common)
            if not same:
                out.append(message)
            if kind == "assistant_message":
                message.text = (message.text or "") + _text(item.get("content"))
            elif kind == "reasoning_message":
                message.reasoning = (message.reasoning or "") + str(item.get("reasoning") or "")
            else:
                message.tool_calls = [*(message.tool_calls or []), *_tool_calls(item)]
        elif kind == "tool_return_message":
            status = item.get("status")
            out.append(
                ExportMessage(
                    role="tool",
                    text=str(item.get("tool_return") or ""),
                    tool_call_id=item.get("tool_call_id"),
                    tool_name=item.get("name"),
                    status=status if status in ("success", "error") else None,
                    **common,
                )
            )
    return out


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text") or "") for part in content if isinstance(part, dict))
    return ""


def _tool_calls(item: dict[str, Any]) -> list[ExportToolCall]:
    calls = item.get("tool_calls")
    if not isinstance(calls, list):
        calls = [item["tool_call"]] if isinstance(item.get("tool_call"), dict) else []
    return [
        ExportToolCall(
            id=str(c.get("tool_call_id") or ""), name=str(c.get("name") or ""), arguments=str(c.get("arguments") or "")
        )
        for c in calls
        if isinstance(c, dict)
    ]


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return _utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# -- rebuild --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RebuildPlan:
    """A checked export, as the rebuild uses it."""

    blocks: dict[str, str]
    history: list[ExportMessage]  # the agent's own history, oldest first
    passages: list[ExportPassage]
    skipped: int  # conversations' messages

    @property
    def in_context(self) -> int:
        return sum(1 for m in self.history if m.in_context and _letta_message(m) is not None)

    @property
    def replayed(self) -> int:
        return sum(1 for m in self.history if _letta_message(m) is not None)


def invalid_export(detail: str) -> DomainError:
    return DomainError("invalid_export", f"the export is not valid: {detail}")


def rebuild_plan(export: AgentExport, user_id: uuid.UUID) -> RebuildPlan:
    """Check an export for a rebuild of ``user_id``'s agent (``invalid_export`` says what is wrong)."""
    if export.user_id is not None and export.user_id != user_id:
        raise invalid_export(f"it is the export of user {export.user_id}, not of user {user_id}")
    blocks: dict[str, str] = {}
    for block in export.blocks:
        if block.label not in EDITABLE_BLOCKS:
            raise invalid_export(f"block {block.label!r}: the agent has only the blocks {', '.join(EDITABLE_BLOCKS)}")
        if block.label in blocks:
            raise invalid_export(f"block {block.label!r} appears twice")
        if len(block.value) > BLOCK_LIMIT:
            raise invalid_export(f"block {block.label!r} is {len(block.value)} characters; its limit is {BLOCK_LIMIT}")
        blocks[block.label] = block.value
    if any("\x00" in text for text in _texts(export)):
        raise invalid_export("it contains a NUL character, which the agent server cannot store")
    for message in export.messages:
        message.created_at = _utc(message.created_at)
    history = [m for m in reversed(export.messages) if m.conversation_id is None]  # the export is newest first
    _check_context(history)
    return RebuildPlan(blocks, history, export.passages, len(export.messages) - len(history))


def _texts(export: AgentExport) -> Iterator[str]:
    for block in export.blocks:
        yield block.value
    for passage in export.passages:
        yield passage.text
        yield from passage.tags or []
    for message in export.messages:
        yield from (message.text or "", message.reasoning or "", message.otid or "", message.tool_call_id or "")
        yield message.tool_name or ""
        for call in message.tool_calls or []:
            yield from (call.id, call.name, call.arguments)


def _check_context(history: list[ExportMessage]) -> None:
    """The messages in context go to the model as they are, and a chat completion API refuses a tool call whose
    results do not follow it, or a result without its call: such a context would fail the agent's next turn."""
    waiting: set[str] = set()
    for message in history:
        if not message.in_context or _letta_message(message) is None:
            continue
        if message.role == "tool":
            if message.tool_call_id not in waiting:
                raise invalid_export(f"in context, the tool result {message.tool_call_id!r} follows no call of it")
            waiting.discard(message.tool_call_id)
            continue
        if waiting:
            raise invalid_export(f"in context, the tool call {sorted(waiting)[0]!r} is not followed by its result")
        if message.role == "assistant" and message.tool_calls:
            waiting = {call.id for call in message.tool_calls}
    if waiting:
        raise invalid_export(f"in context, the tool call {sorted(waiting)[0]!r} is not followed by its result")


def _letta_message(message: ExportMessage) -> dict[str, Any] | None:
    """A neutral message as Letta's agent file holds one; None for what is not replayed (reasoning alone: a model
    does not take its own reasoning back)."""
    text = [{"type": "text", "text": message.text}] if message.text else []
    if message.role == "user":
        return {"role": "user", "content": text, "otid": message.otid}
    if message.role == "assistant":
        if not text and not message.tool_calls:
            return None
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls or []
        ]
        return {"role": "assistant", "content": text, "tool_calls": calls or None, "otid": message.otid}
    # Letta stores a tool's result wrapped as its tools return it (letta.system.package_function_response) and
    # parses it back when it lists the message: the export holds the unwrapped text.
    ok = message.status != "error"
    when = _utc(message.created_at).strftime("%Y-%m-%d %I:%M:%S %p UTC+0000")
    result = json.dumps(
        {"status": "OK" if ok else "Failed", "message": message.text or "", "time": when}, indent=2, ensure_ascii=False
    )
    return {
        "role": "tool",
        "name": message.tool_name,
        "content": [{"type": "text", "text": result}],
        "tool_call_id": message.tool_call_id,
        "tool_returns": [
            {"tool_call_id": message.tool_call_id, "status": "success" if ok else "error", "func_response": result}
        ],
        "otid": message.otid,
    }


# The system message's text until the recompile right after the import renders the agent's memory into it.
SYSTEM_PLACEHOLDER = "(rebuilt from an export; recompiled with the agent's memory)"


def agent_file(spec: dict[str, Any], history: list[ExportMessage]) -> bytes:
    """Letta's agent file (its import format; ids are the file's own, ``<kind>-<n>``) for an agent made from
    ``spec`` with ``history`` stored and its in-context messages in context, after a system message."""
    replayed = [(m, body) for m in history if (body := _letta_message(m)) is not None]
    start = replayed[0][0].created_at - timedelta(milliseconds=1) if replayed else datetime.now(UTC)
    messages: list[dict[str, Any]] = [
        {
            "id": "message-0",
            "role": "system",
            "content": [{"type": "text", "text": SYSTEM_PLACEHOLDER}],
            "created_at": start,
        }
    ]
    in_context = ["message-0"]
    last = start
    for message, body in replayed:
        # Letta orders stored messages by time, and an export's times are whole seconds: keep them strictly
        # increasing so the history keeps its order.
        last = max(message.created_at, last + timedelta(microseconds=1))
        file_id = f"message-{len(messages)}"
        messages.append({"id": file_id, "created_at": last, **body})
        if message.in_context:
            in_context.append(file_id)
    agent = {**spec, "id": "agent-0", "messages": messages, "in_context_message_ids": in_context}
    empty: list[Any] = []
    return _encode(
        {
            "agents": [agent],
            "groups": empty,
            "blocks": empty,
            "files": empty,
            "sources": empty,
            "tools": empty,
            "mcp_servers": empty,
            "skills": empty,
        }
    )


async def rebuild_agent(letta: LettaClient, plan: RebuildPlan, spec: dict[str, Any]) -> str:
    """The new agent (an ``AgentMaker`` for ``AgentLifecycle.replace``): imported with its history, given its
    passages and its memory rendered. Deleted again if a step after the import fails."""
    agent_id = await letta.import_agent(agent_file(spec, plan.history), str(spec["name"]))
    try:
        passages = [
            {"text": p.text, "tags": p.tags, "created_at": _utc(p.created_at).isoformat() if p.created_at else None}
            for p in plan.passages
        ]
        await letta.insert_passages(agent_id, passages)
        await letta.recompile(agent_id)
    except Exception:
        with contextlib.suppress(UpstreamError):
            await letta.delete_agent(agent_id)
        raise
    logger.info(
        "agent rebuilt from an export",
        extra={"agent_id": agent_id, "passages": len(plan.passages), "messages": plan.replayed},
    )
    return agent_id


# What GET /api/v1/agent/export answers (the OpenAPI example and the README's).
EXPORT_EXAMPLE: dict[str, Any] = {
    "format": EXPORT_FORMAT,
    "version": EXPORT_VERSION,
    "exported_at": "2026-11-30T10:20:00Z",
    "user_id": "6f1c2d9e-1b7a-4c1e-9a55-0d4b5a3b2c10",
    "source": {"agent_id": "agent-0d8e4b1c-5a3f-4c6e-9b2a-7f1e3d5c9a10", "model": "gpt-4o-mini"},
    "blocks": [
        {
            "label": "persona",
            "value": "You are a helpful, intelligent assistant ...",
            "limit": 5000,
            "description": "...",
        },
        {"label": "human", "value": "User's name: Ada\nmy cat is Miso", "limit": 5000, "description": "..."},
    ],
    "passages": [{"text": "my passport number ends in 42", "created_at": "2026-11-30T10:16:01Z", "tags": None}],
    "conversations": [
        {"id": "conv-3b1f0c2e-0000-4000-8000-000000000005", "summary": None, "created_at": "2026-11-30T10:18:00Z"}
    ],
    "messages": [
        {
            "role": "assistant",
            "text": "Got it, I will remember that my cat is Miso.",
            "reasoning": None,
            "tool_calls": None,
            "tool_call_id": None,
            "tool_name": None,
            "status": None,
            "created_at": "2026-11-30T10:15:03Z",
            "otid": "5e86d82b-00c0-44e0-a0d3-e71caff8c500",
            "conversation_id": None,
            "in_context": True,
            "id": "message-…",
        },
        {
            "role": "tool",
            "text": "User's name: Ada\nmy cat is Miso",
            "reasoning": None,
            "tool_calls": None,
            "tool_call_id": "call_c6a3bb39e5b66609bcc4fcd8",
            "tool_name": "memory_insert",
            "status": "success",
            "created_at": "2026-11-30T10:15:02Z",
            "otid": "e2217291-d487-4dfc-9b7c-80d5910cf280",
            "conversation_id": None,
            "in_context": True,
            "id": "message-…",
        },
        {
            "role": "assistant",
            "text": None,
            "reasoning": None,
            "tool_calls": [
                {
                    "id": "call_c6a3bb39e5b66609bcc4fcd8",
                    "name": "memory_insert",
                    "arguments": '{"label": "human", "new_string": "my cat is Miso"}',
                }
            ],
            "tool_call_id": None,
            "tool_name": None,
            "status": None,
            "created_at": "2026-11-30T10:15:02Z",
            "otid": "1c52c587-d1bd-40d1-9cae-a57698844e80",
            "conversation_id": None,
            "in_context": True,
            "id": "message-…",
        },
        {
            "role": "user",
            "text": "remember that my cat is Miso",
            "reasoning": None,
            "tool_calls": None,
            "tool_call_id": None,
            "tool_name": None,
            "status": None,
            "created_at": "2026-11-30T10:15:01Z",
            "otid": "7ea8df1c-82f2-4c40-8dd1-43889d87df86",
            "conversation_id": None,
            "in_context": True,
            "id": "message-…",
        },
        {
            "role": "user",
            "text": "hello from a thread",
            "reasoning": None,
            "tool_calls": None,
            "tool_call_id": None,
            "tool_name": None,
            "status": None,
            "created_at": "2026-11-30T10:18:02Z",
            "otid": "0c4d2e1f-0000-4000-8000-000000000007",
            "conversation_id": "conv-3b1f0c2e-0000-4000-8000-000000000005",
            "in_context": False,
            "id": "message-…",
        },
    ],
    "truncated": {"passages": False, "messages": False, "conversations": False},
    "limits": {
        "passages": MAX_EXPORT_PASSAGES,
        "messages": MAX_EXPORT_MESSAGES,
        "conversations": MAX_EXPORT_CONVERSATIONS,
    },
}
