"""Authentication for every HTTP route except the few that are public by design.

Default-deny: a new route is authenticated unless it is added to ``PUBLIC_PATHS``. WebSockets
authenticate inside the handshake protocol instead (browsers cannot set headers on them).

A bearer token is one of:
- ``ADMIN_API_KEY``: the admin credential (role ``admin``, no user): admin routes only;
- a Supabase access token, verified locally: a user (an admin too when its ``app_metadata.role`` is ``admin``);
- the Supabase service key, or a verified ``service_role`` token: refused (403 ``service_role_refused``) unless
  ``SERVICE_ROLE_IS_ADMIN`` is set, the old behaviour kept for compatibility, where it is an admin (no user).
Keys are compared in constant time, as digests, so not even their length shows.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware
from pydantic import SecretStr

from service.auth.tokens import InvalidToken, Principal, TokenVerifier
from service.errors import DomainError
from service.web.state import services_of

# Regexes matched against the path by Litestar.
PUBLIC_PATHS = [
    "^/health/",
    "^/schema",
    "^/webhooks/",
    "^/api/v1/auth/(register|login|refresh)$",
]


def parse_bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for no header, another scheme or no token."""
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def bearer_token(authorization: str | None) -> str:
    """``parse_bearer`` for a route that needs a token: a 401 without one."""
    if not authorization:
        raise NotAuthorizedException(detail="missing Authorization header (Bearer <Supabase access token>)")
    token = parse_bearer(authorization)
    if token is None:
        raise NotAuthorizedException(detail="Authorization header must be 'Bearer <token>'")
    return token


def same_secret(supplied: str, secret: str) -> bool:
    """Constant time, whatever the lengths: the digests are compared, not the strings."""
    return hmac.compare_digest(hashlib.sha256(supplied.encode()).digest(), hashlib.sha256(secret.encode()).digest())


async def authenticate_token(
    token: str,
    verifier: TokenVerifier,
    service_key: str | None,
    *,
    admin_key: str | None = None,
    service_role_is_admin: bool = False,
) -> Principal:
    """Resolve a bearer token to a principal: ``admin_key`` is the admin, ``service_key`` the service role
    (an admin only when ``service_role_is_admin``), anything else must verify as an access token."""
    if admin_key and same_secret(token, admin_key):
        return Principal.admin_key()
    if service_key and same_secret(token, service_key):
        return Principal.service_role(admin=service_role_is_admin)
    try:
        principal = await verifier.verify(token)
    except InvalidToken as exc:
        raise NotAuthorizedException(detail=str(exc)) from exc
    if principal.is_service_role and service_role_is_admin:
        return replace(principal, admin_credential=True)
    return principal


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


class SupabaseAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        services = services_of(connection.app.state)
        settings = services.settings
        token = bearer_token(connection.headers.get("authorization"))
        principal = await authenticate_token(
            token,
            services.tokens,
            _secret(settings.supabase_service_key),
            admin_key=_secret(settings.admin_api_key),
            service_role_is_admin=settings.service_role_is_admin,
        )
        if principal.is_service_role and not settings.service_role_is_admin:
            raise DomainError("service_role_refused")
        return AuthenticationResult(user=principal, auth=token)


auth_middleware = DefineMiddleware(SupabaseAuthMiddleware, exclude=PUBLIC_PATHS, scopes={ScopeType.HTTP})
