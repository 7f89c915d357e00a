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


_COLUMNS = ", ".join(Profile.__struct_fields__)


async def get_profile(db: asyncpg.Pool[Any] | asyncpg.Connection[Any], user_id: uuid.UUID) -> Profile | None:
    row = await db.fetchrow(f"select {_COLUMNS} from public.user_profiles where id = $1", user_id)  # noqa: S608
    return None if row is None else Profile(**dict(row))
