"""What ``/api/v1/agent`` takes and answers with, and the neutral agent export (``AgentExport``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import msgspec


class LettaStatus(msgspec.Struct):
    reachable: bool
    latency_ms: float
    agent_found: bool | None


class AgentStatus(msgspec.Struct, kw_only=True):
    agent_status: str
    agent_id: str | None
    model: str | None
    last_active_at: datetime | None
    provisioning_attempts: int
    letta: LettaStatus


class MemoryBlock(msgspec.Struct):
    label: str
    value: str
    limit: int | None


class ArchivalHit(msgspec.Struct):
    content: str
    timestamp: str | None


class AgentMemory(msgspec.Struct, kw_only=True):
    agent_id: str
    blocks: list[MemoryBlock]
    archival_count: int
    archival_results: list[ArchivalHit] | None = None


class MemoryUpdate(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    human: str | None = None
    persona: str | None = None


class ResetRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    keep_memory: bool = False


class ResetResult(msgspec.Struct):
    agent_id: str
    previous_agent_id: str | None
    kept_memory: bool


# -- the neutral export of an agent, and a rebuild from one (service.agents.export) -------------------------
EXPORT_FORMAT = "ai-chat-backend.agent-export"
EXPORT_VERSION = 1
# What one export holds at most (an export stops there and says so in ``truncated``); a rebuild accepts no more.
MAX_EXPORT_PASSAGES = 10_000
MAX_EXPORT_MESSAGES = 20_000
MAX_EXPORT_CONVERSATIONS = 500
MAX_TEXT_CHARS = 1_000_000  # one message's or passage's text


class ExportSource(msgspec.Struct, kw_only=True):
    """The Letta agent the export was made from (information only: a rebuild makes a new agent)."""

    agent_id: str
    model: str | None = None


class ExportBlock(msgspec.Struct, kw_only=True):
    label: str
    value: Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
    limit: int | None = None
    description: str | None = None


class ExportPassage(msgspec.Struct, kw_only=True):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_CHARS)]
    created_at: datetime | None = None
    tags: list[str] | None = None


class ExportConversation(msgspec.Struct, kw_only=True):
    """A Letta conversation of the agent (a thread's context); its messages carry its id."""

    id: str
    summary: str | None = None
    created_at: datetime | None = None


class ExportToolCall(msgspec.Struct, kw_only=True):
    id: str
    name: str
    arguments: str  # the JSON text the model wrote


class ExportMessage(msgspec.Struct, kw_only=True):
    """One stored message of Letta's history, in a neutral form: ``user`` text; ``assistant`` text, reasoning
    and/or tool calls; ``tool`` a tool's result (``tool_call_id``, ``tool_name``, ``status``, ``text``)."""

    role: Literal["user", "assistant", "tool"]
    text: Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)] | None = None
    reasoning: str | None = None
    tool_calls: list[ExportToolCall] | None = None
    tool_call_id: str | None = None
    tool_name: str | None = None
    status: Literal["success", "error"] | None = None
    created_at: datetime
    otid: str | None = None
    conversation_id: str | None = None  # None: the agent's own history (Letta's default conversation)
    in_context: bool = False  # in the agent's context window when exported (own history only)
    id: str | None = None  # Letta's id (information only)


class ExportTruncation(msgspec.Struct, kw_only=True):
    passages: bool = False
    messages: bool = False
    conversations: bool = False


class ExportLimits(msgspec.Struct, kw_only=True):
    passages: int = MAX_EXPORT_PASSAGES
    messages: int = MAX_EXPORT_MESSAGES
    conversations: int = MAX_EXPORT_CONVERSATIONS


class AgentExport(msgspec.Struct, kw_only=True):
    """``format: "ai-chat-backend.agent-export"``, ``version: 1``. Passages oldest first; messages newest first (the
    agent's own history, then each conversation), so a capped export keeps the newest."""

    format: Literal["ai-chat-backend.agent-export"]
    version: Literal[1]
    exported_at: datetime | None = None
    user_id: uuid.UUID | None = None
    source: ExportSource | None = None
    blocks: Annotated[list[ExportBlock], msgspec.Meta(max_length=16)] = msgspec.field(default_factory=list)
    passages: Annotated[list[ExportPassage], msgspec.Meta(max_length=MAX_EXPORT_PASSAGES)] = msgspec.field(
        default_factory=list
    )
    conversations: Annotated[list[ExportConversation], msgspec.Meta(max_length=MAX_EXPORT_CONVERSATIONS)] = (
        msgspec.field(default_factory=list)
    )
    messages: Annotated[list[ExportMessage], msgspec.Meta(max_length=MAX_EXPORT_MESSAGES)] = msgspec.field(
        default_factory=list
    )
    truncated: ExportTruncation = msgspec.field(default_factory=ExportTruncation)
    limits: ExportLimits = msgspec.field(default_factory=ExportLimits)


class RebuildResult(msgspec.Struct, kw_only=True):
    user_id: uuid.UUID
    agent_id: str
    previous_agent_id: str | None
    blocks: int
    passages: int
    messages: int  # replayed into the new agent's own history (Letta's message store)
    in_context: int  # of those, in its context window
    skipped_messages: int  # conversations' (threads') messages: not replayed
