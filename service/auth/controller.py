"""``/api/v1/auth``: who the caller is."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency

from service.auth.tokens import Principal
from service.db import Database
from service.errors import account_deleted
from service.users.profiles import account_exists, get_profile
from service.users.schemas import ProfileOut
from service.web.examples import PROFILE_EXAMPLE, USER_ID
from service.web.openapi import ok, problem

# Claims worth returning to the caller; everything else in a Supabase token is session plumbing.
_PUBLIC_CLAIMS = (
    "sub",
    "email",
    "phone",
    "role",
    "aal",
    "amr",
    "session_id",
    "is_anonymous",
    "app_metadata",
    "user_metadata",
    "exp",
    "iat",
)


class MeResponse(msgspec.Struct):
    user_id: str | None
    role: str
    claims: dict[str, Any]
    profile: ProfileOut | None


class AuthController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]

    @get(
        "/me",
        summary="The caller's verified token claims and profile",
        responses={
            200: ok(
                MeResponse,
                "A signed-in user",
                {
                    "user_id": USER_ID,
                    "role": "authenticated",
                    "claims": {
                        "sub": USER_ID,
                        "email": "ada@example.com",
                        "role": "authenticated",
                        "aal": "aal1",
                        "app_metadata": {"provider": "email", "providers": ["email"]},
                        "user_metadata": {"full_name": "Ada"},
                        "exp": 1795269600,
                        "iat": 1795266000,
                    },
                    "profile": PROFILE_EXAMPLE,
                },
            ),
            401: problem(401, "token has expired", "An invalid token, or an account that has been deleted"),
        },
    )
    async def me(self, request: Request[Principal, str, Any], db: NamedDependency[Database]) -> MeResponse:
        principal = request.user
        profile = await get_profile(db, principal.user_id) if principal.user_id else None
        if principal.user_id and profile is None and not await account_exists(db, principal.user_id):
            raise account_deleted()  # as every other route says: the token outlived the account
        claims = {k: principal.claims[k] for k in _PUBLIC_CLAIMS if k in principal.claims}
        user_id = str(principal.user_id) if principal.user_id else None
        return MeResponse(
            user_id=user_id, role=principal.role, claims=claims, profile=ProfileOut.of(profile) if profile else None
        )
