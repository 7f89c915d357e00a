"""Reads of ``public.user_profiles`` shared by several routes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec


class Profile(msgspec.Struct, kw_only=True):
    id: uuid.UUID
    email: str | None
    display_name: str | None
    agent_status: str
    letta_agent_id: str | None
    model: str | None
    provisioning_attempts: int
    provisioning_error: str | None
    last_active_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def ready(self) -> bool:
        """The agent can chat. ``READY_SQL`` says the same for statements that decide it in the database."""
        return self.agent_status == "active" and bool(self.letta_agent_id)


PROFILE_COLUMNS = ", ".join(Profile.__struct_fields__)
READY_SQL = "agent_status = 'active' and letta_agent_id is not null"


def profile_from(row: asyncpg.Record | None) -> Profile | None:
    """The profile in a row that holds ``PROFILE_COLUMNS`` (all null when there is no profile)."""
    if row is None or row["id"] is None:
        return None
    return Profile(**{name: row[name] for name in Profile.__struct_fields__})


async def get_profile(db: asyncpg.Pool[Any] | asyncpg.Connection[Any], user_id: uuid.UUID) -> Profile | None:
    return profile_from(
        await db.fetchrow(f"select {PROFILE_COLUMNS} from public.user_profiles where id = $1", user_id)  # noqa: S608
    )
