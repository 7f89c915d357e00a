"""What the chat routes take and answer with (the table rows are read in ``store``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec


class ChatMessageIn(msgspec.Struct, forbid_unknown_fields=True):
    content: str
    thread_id: uuid.UUID | None = None  # the default thread when absent


FEEDBACK_COMMENT_MAX_CHARS = 2000
Comment = Annotated[str, msgspec.Meta(max_length=FEEDBACK_COMMENT_MAX_CHARS, pattern=r"^[^\x00]*$")]


class FeedbackIn(msgspec.Struct, forbid_unknown_fields=True):
    rating: Literal["up", "down"]
    comment: Comment | None = None  # blank: no comment


class MessageFeedback(msgspec.Struct, kw_only=True):
    """The user's thumbs up or down on an assistant's reply, with an optional comment (one per message)."""

    rating: Literal["up", "down"]
    comment: str | None
    created_at: datetime
    updated_at: datetime  # when the user last changed it

    @classmethod
    def of(cls, row: Any, prefix: str = "") -> MessageFeedback:
        return cls(**{name: row[prefix + name] for name in cls.__struct_fields__})


class ChatMessage(msgspec.Struct, kw_only=True):
    """A stored message as the history and the export show it."""

    id: uuid.UUID
    thread_id: uuid.UUID
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
    feedback: MessageFeedback | None  # an assistant's reply, rated by the user (PUT .../feedback)

    @classmethod
    def of(cls, row: Any) -> ChatMessage:
        """A row of ``store.messages_page`` (the message's columns, and its feedback's prefixed ``feedback_``)."""
        feedback = MessageFeedback.of(row, "feedback_") if row["feedback_rating"] else None
        return cls(**{name: row[name] for name in cls.__struct_fields__ if name != "feedback"}, feedback=feedback)


class HistoryPage(msgspec.Struct):
    messages: list[ChatMessage]
    next_cursor: str | None


class ChatReply(msgspec.Struct, kw_only=True):
    """The whole turn, for clients that do not ask for a stream."""

    turn_id: str
    thread_id: str
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


class SearchHit(msgspec.Struct, kw_only=True):
    """One message that matches a search (``public.search_messages`` returns the same columns to supabase-js)."""

    id: uuid.UUID  # the message
    thread_id: uuid.UUID
    thread_title: str | None
    role: str
    created_at: datetime
    rank: float  # higher is better; with the id, where the next page starts
    # The message, or up to two fragments of it joined by " … ", each match between U+E000 and U+E001: plain text
    # to split on the markers, never HTML.
    snippet: str

    @classmethod
    def of(cls, row: Any) -> SearchHit:
        return cls(**{name: row[name] for name in cls.__struct_fields__})


class SearchPage(msgspec.Struct):
    results: list[SearchHit]
    next_cursor: str | None
