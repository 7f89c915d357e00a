"""The account export's SQL (``service.users.export``); the rest of what it reads has its own stores."""

from __future__ import annotations

import uuid

import asyncpg

from service.db import Database

# Every rating the user gave, oldest first (one per assistant reply: bounded by the history).
ACCOUNT_FEEDBACK = """
    select f.message_id, m.thread_id, f.rating, f.comment, f.created_at, f.updated_at
    from public.message_feedback f join public.messages m on m.id = f.message_id
    where f.user_id = $1 order by f.created_at, f.message_id
"""


async def account_feedback(db: Database, user_id: uuid.UUID) -> list[asyncpg.Record]:
    return await db.fetch(ACCOUNT_FEEDBACK, user_id)
