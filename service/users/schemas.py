"""What ``/api/v1/user`` answers with (not the table rows: those are in ``profiles``)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from service.users.profiles import ProfileRow


class ProfileOut(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    email: str | None
    display_name: str | None
    agent_status: str
    letta_agent_id: str | None
    model: str | None
    last_active_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ProfileRow) -> ProfileOut:
        return cls(**{name: getattr(row, name) for name in cls.__struct_fields__})


class AccountDeleted(msgspec.Struct):
    deleted: bool
    cleanup_complete: bool


class AccountFeedback(msgspec.Struct, kw_only=True):
    """A rating the user gave a reply (also shown with its message in the history)."""

    message_id: uuid.UUID
    thread_id: uuid.UUID
    rating: str  # up | down
    comment: str | None
    created_at: datetime
    updated_at: datetime
