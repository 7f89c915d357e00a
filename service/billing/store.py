"""The usage SQL of ``/api/v1/user/usage`` (turns add to ``usage_metrics`` in ``service.chat.store``)."""

from __future__ import annotations

import uuid
from datetime import date

import asyncpg

from service.db import Database

USAGE_DAYS = """
    select date, total_messages, prompt_tokens, completion_tokens, total_tokens, total_cost
    from public.usage_metrics where user_id = $1 and date between $2 and $3 order by date
"""


async def usage_days(db: Database, user_id: uuid.UUID, start: date, end: date) -> list[asyncpg.Record]:
    return await db.fetch(USAGE_DAYS, user_id, start, end)
