"""What the chat routes take and answer with (the table rows are read in ``store``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import msgspec


class ChatMessageIn(msgspec.Struct, forbid_unknown_fields=True):
    content: str


class ChatMessage(msgspec.Struct, kw_only=True):
    """A stored message as the history and the export show it."""

    id: uuid.UUID
    turn_id: uuid.UUID
    role: str
    content: str
    status: str
    error_code: str | None  # a failed turn's code (README, "Problem codes")
    prompt_tokens: int | None
    completion_tokens: int | None
    tokens_used: int | None
    cost: Decimal | None
    cost_final: bool | None  # on the message that carries its turn's cost: whether LiteLLM's charge is in
    model: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: Any) -> ChatMessage:
        return cls(**{name: row[name] for name in cls.__struct_fields__})


class HistoryPage(msgspec.Struct):
    messages: list[ChatMessage]
    next_cursor: str | None


class ChatReply(msgspec.Struct, kw_only=True):
    """The whole turn, for clients that do not ask for a stream."""

    turn_id: str
    status: str
    user_message_id: str
    message_id: str | None
    content: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float | None
    run_id: str | None


class CancelResult(msgspec.Struct):
    cancelled: bool
