"""``public.user_profiles`` as the service reads it: the row type, the ready view of it, and the reads.

``ProfileRow`` is the table; what the API returns is ``service.users.schemas.ProfileOut``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from service.db import Database


class ProfileRow(msgspec.Struct, kw_only=True):
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

    def as_ready(self) -> ReadyProfile | None:
        if not self.ready or self.letta_agent_id is None:
            return None
        return ReadyProfile(
            id=self.id, email=self.email, display_name=self.display_name, agent_id=self.letta_agent_id, model=self.model
        )


class ReadyProfile(msgspec.Struct, frozen=True, kw_only=True):
    """A user whose agent is active: what every route that talks to the agent works with."""

    id: uuid.UUID
    email: str | None
    display_name: str | None
    agent_id: str
    model: str | None


PROFILE_COLUMNS = ", ".join(ProfileRow.__struct_fields__)
READY_SQL = "agent_status = 'active' and letta_agent_id is not null"


def profile_from(row: asyncpg.Record | None) -> ProfileRow | None:
    """The profile in a row that holds ``PROFILE_COLUMNS`` (all null when there is no profile)."""
    if row is None or row["id"] is None:
        return None
    return ProfileRow(**{name: row[name] for name in ProfileRow.__struct_fields__})


async def get_profile(db: Database | asyncpg.Connection[Any], user_id: uuid.UUID) -> ProfileRow | None:
    return profile_from(
        await db.fetchrow(f"select {PROFILE_COLUMNS} from public.user_profiles where id = $1", user_id)  # noqa: S608
    )


async def account_exists(db: Database | asyncpg.Connection[Any], user_id: uuid.UUID) -> bool:
    """Whether Supabase Auth still has the user (a deleted user's access token stays valid until it expires)."""
    return bool(await db.fetchval("select exists (select 1 from auth.users where id = $1)", user_id))
