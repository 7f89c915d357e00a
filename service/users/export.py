"""The account export: what the service keeps about a user, as one streamed JSON document.

``format: "ai-chat-backend.account-export"``, ``version: 1``: the profile, every day's usage, every rating the user
gave a reply, the chat history (``GET /api/v1/chat/export``'s document) and the agent (``GET /api/v1/agent/export``'s
document, or null when the user has no agent or Letta could not be reached when the export began).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import msgspec

from service.billing import store as billing_store
from service.billing.schemas import DailyUsage, UsageTotals
from service.chat.export import export_json
from service.db import Database
from service.users import store
from service.users.profiles import ProfileRow
from service.users.schemas import AccountFeedback, ProfileOut

ACCOUNT_EXPORT_FORMAT = "ai-chat-backend.account-export"


async def account_export(db: Database, profile: ProfileRow, agent: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    """The export as a stream of bytes; the profile and usage are read before this returns."""
    days = [DailyUsage(**dict(row)) for row in await billing_store.usage_days(db, profile.id, date.min, date.max)]
    head: dict[str, Any] = {
        "format": ACCOUNT_EXPORT_FORMAT,
        "version": 1,
        "exported_at": datetime.now(UTC),
        "profile": ProfileOut.of(profile),
        "usage": {"days": days, "totals": UsageTotals.of(days)},
        "feedback": [AccountFeedback(**dict(row)) for row in await store.account_feedback(db, profile.id)],
    }
    return _stream(db, profile, head, agent)


async def _stream(
    db: Database, profile: ProfileRow, head: dict[str, Any], agent: AsyncIterator[bytes] | None
) -> AsyncIterator[bytes]:
    yield msgspec.json.encode(head)[:-1] + b',"history":'
    async for chunk in export_json(db, profile.id):
        yield chunk
    yield b',"agent":'
    if agent is None:
        yield b"null"
    else:
        async for chunk in agent:
            yield chunk
    yield b"}"
