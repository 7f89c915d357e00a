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
    last_active_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # From Supabase Auth's row: a ban (banned_until in the future) and an anonymous sign-in.
    banned: bool
    is_anonymous: bool

    @property
    def ready(self) -> bool:
        """The agent can chat. ``READY_SQL`` says the same for statements that decide it in the database."""
        return self.agent_status == "active" and bool(self.letta_agent_id) and not self.banned

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


# The profile with its Supabase Auth state; a statement adds "where p.id = $n".
PROFILE_SELECT = (
    "select p.id, p.email, p.display_name, p.agent_status, p.letta_agent_id, p.model, p.provisioning_attempts, "
    "p.last_active_at, p.created_at, p.updated_at, coalesce(u.banned_until > now(), false) as banned, "
    "u.is_anonymous from public.user_profiles p join auth.users u on u.id = p.id"
)
READY_SQL = "agent_status = 'active' and letta_agent_id is not null and not banned"


def profile_from(row: asyncpg.Record | None) -> ProfileRow | None:
    """The profile in a row that holds ``PROFILE_SELECT``'s columns (all null when there is no profile)."""
    if row is None or row["id"] is None:
        return None
    return ProfileRow(**{name: row[name] for name in ProfileRow.__struct_fields__})


async def get_profile(db: Database | asyncpg.Connection[Any], user_id: uuid.UUID) -> ProfileRow | None:
    return profile_from(await db.fetchrow(f"{PROFILE_SELECT} where p.id = $1", user_id))


async def account_exists(db: Database | asyncpg.Connection[Any], user_id: uuid.UUID) -> bool:
    """Whether Supabase Auth still has the user (a deleted user's access token stays valid until it expires)."""
    return bool(await db.fetchval("select exists (select 1 from auth.users where id = $1)", user_id))
