"""``/api/v1/user``: the caller's profile, and deleting the account (usage and budget: ``service.billing``)."""

from __future__ import annotations

from typing import Any

import httpx
from litestar import Controller, Request, delete, get
from litestar.di import NamedDependency, Provide

from service.auth.dependencies import provide_profile, require_user
from service.auth.tokens import Principal
from service.errors import DomainError
from service.provisioning.service import Provisioner
from service.settings import Settings
from service.users.accounts import delete_account
from service.users.profiles import ProfileRow
from service.users.schemas import AccountDeleted, ProfileOut
from service.web.examples import PROFILE_EXAMPLE
from service.web.openapi import documented, ok


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
