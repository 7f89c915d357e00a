"""``/api/v1/user``: the caller's profile, the account export, and deleting the account (usage and budget:
``service.billing``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
from litestar import Controller, Request, Response, delete, get
from litestar.di import NamedDependency, Provide
from litestar.response import Stream

from service.agents.export import EXPORT_EXAMPLE
from service.agents.service import AgentService
from service.auth.dependencies import provide_profile, require_user
from service.auth.tokens import Principal
from service.db import Database
from service.errors import DomainError
from service.provisioning.service import Provisioner
from service.rate_limit import MEMORY_BUCKET, rate_limit
from service.settings import Settings
from service.users.accounts import delete_account
from service.users.export import ACCOUNT_EXPORT_FORMAT, account_export
from service.users.profiles import ProfileRow
from service.users.schemas import AccountDeleted, ProfileOut
from service.web.examples import MESSAGE_EXAMPLE, PROFILE_EXAMPLE, USER_ID
from service.web.openapi import documented, ok, rate_limited

logger = logging.getLogger("service.users")


class UserController(Controller):
    path = "/api/v1/user"
    tags = ["user"]

    @get(
        "/profile",
        dependencies={"profile": Provide(provide_profile)},
        summary="Your profile (works before your agent is ready)",
        responses={200: ok(ProfileOut, "Profile", PROFILE_EXAMPLE), 404: documented(DomainError("no_profile"))},
    )
    async def profile(self, profile: NamedDependency[ProfileRow]) -> ProfileOut:
        return ProfileOut.of(profile)

    @get(
        "/export",
        dependencies={"profile": Provide(provide_profile)},
        summary="Everything kept about you: profile, usage, feedback, chat history and your agent's export",
        description=(
            "One streamed JSON document, format `ai-chat-backend.account-export` version 1: `profile`, `usage` "
            "(every day and the totals), `feedback` (every rating you gave a reply), `history` (as "
            "`GET /api/v1/chat/export`) and `agent` (as "
            "`GET /api/v1/agent/export`; null when you have no agent yet or it could not be reached)."
        ),
        guards=[rate_limit(MEMORY_BUCKET)],
        responses={
            200: ok(
                dict[str, Any],
                "An account export",
                {
                    "format": ACCOUNT_EXPORT_FORMAT,
                    "version": 1,
                    "exported_at": "2026-11-30T10:20:00Z",
                    "profile": PROFILE_EXAMPLE,
                    "usage": {"days": [], "totals": {}},
                    "feedback": [
                        {
                            "message_id": MESSAGE_EXAMPLE["id"],
                            "thread_id": MESSAGE_EXAMPLE["thread_id"],
                            "rating": "up",
                            "comment": "Exactly right.",
                            "created_at": "2026-11-21T10:16:00Z",
                            "updated_at": "2026-11-21T10:16:00Z",
                        }
                    ],
                    "history": {"user_id": USER_ID, "exported_at": "2026-11-30T10:20:00Z", "messages": []},
                    "agent": EXPORT_EXAMPLE,
                },
            ),
            429: rate_limited(MEMORY_BUCKET, 30),
        },
    )
    async def export(
        self, profile: NamedDependency[ProfileRow], db: NamedDependency[Database], agents: NamedDependency[AgentService]
    ) -> Response[Any]:
        agent: AsyncIterator[bytes] | None = None
        ready = profile.as_ready()
        if ready is not None:
            try:
                agent = await agents.export(ready)
            except DomainError as exc:  # the rest of the account is still worth exporting
                logger.warning("account export without the agent", extra={"user_id": str(profile.id), "code": exc.code})
        stamp = datetime.now(UTC).strftime("%Y%m%d")
        return Stream(
            await account_export(db, profile, agent),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="account-export-{stamp}.json"'},
        )

    @delete(
        "/",
        status_code=200,
        summary="Delete your account: agent, billing user, history and login",
        responses={
            200: ok(AccountDeleted, "Deleted", {"deleted": True, "cleanup_complete": True}),
            503: documented(DomainError("auth_unavailable")),
        },
    )
    async def delete_account(
        self,
        request: Request[Principal, Any, Any],
        http: NamedDependency[httpx.AsyncClient],
        settings: NamedDependency[Settings],
        provisioner: NamedDependency[Provisioner],
    ) -> AccountDeleted:
        complete = await delete_account(http, settings, provisioner, require_user(request.user))
        return AccountDeleted(deleted=True, cleanup_complete=complete)
