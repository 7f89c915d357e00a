"""What the thread routes take and answer with (the table rows are read in ``store``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec

TITLE_MAX_CHARS = 200
Title = Annotated[str, msgspec.Meta(min_length=1, max_length=TITLE_MAX_CHARS)]


class Thread(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    title: str | None  # none until the first reply (then generated, or the first message)
    title_source: str | None  # generated | first_message | user
    is_default: bool  # where messages without a thread_id go
    forked_from_thread_id: uuid.UUID | None
    forked_from_message_id: uuid.UUID | None
    created_at: datetime
    last_message_at: datetime

    @classmethod
    def of(cls, row: Any) -> Thread:
        return cls(**{name: row[name] for name in cls.__struct_fields__})


class ThreadPage(msgspec.Struct):
    threads: list[Thread]
    next_cursor: str | None


class ThreadIn(msgspec.Struct, forbid_unknown_fields=True):
    title: Title | None = None


class ThreadUpdate(msgspec.Struct, forbid_unknown_fields=True):
    title: Title


class ForkIn(msgspec.Struct, forbid_unknown_fields=True):
    message_id: uuid.UUID  # the branch starts with the thread's history up to and including this message
    title: Title | None = None
