"""Authentication for every HTTP route except the few that are public by design.

Default-deny: a new route is authenticated unless it is added to ``PUBLIC_PATHS``. WebSockets
authenticate inside the handshake protocol instead (browsers cannot set headers on them).
"""

from __future__ import annotations

import hmac
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult, DefineMiddleware

from service.auth.tokens import InvalidToken, Principal, TokenVerifier
from service.web.state import services_of

# Regexes matched against the path by Litestar.
PUBLIC_PATHS = [
    "^/health/",
    "^/schema",
    "^/webhooks/",
    "^/api/v1/auth/(register|login|refresh)$",
]


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise NotAuthorizedException(detail="missing Authorization header (Bearer <Supabase access token>)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthorizedException(detail="Authorization header must be 'Bearer <token>'")
    return token.strip()


async def authenticate_token(token: str, verifier: TokenVerifier, service_key: str | None) -> Principal:
    """Resolve a bearer token to a principal; the project's service key is the service role."""
    if service_key and hmac.compare_digest(token.encode(), service_key.encode()):
        return Principal(role="service_role", claims={"role": "service_role"}, user_id=None)
    try:
        return await verifier.verify(token)
    except InvalidToken as exc:
        raise NotAuthorizedException(detail=str(exc)) from exc


class SupabaseAuthMiddleware(AbstractAuthenticationMiddleware):
    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        services = services_of(connection.app.state)
        token = bearer_token(connection.headers.get("authorization"))
        service_key = services.settings.supabase_service_key
        principal = await authenticate_token(
            token, services.tokens, service_key.get_secret_value() if service_key else None
        )
        return AuthenticationResult(user=principal, auth=token)


auth_middleware = DefineMiddleware(SupabaseAuthMiddleware, exclude=PUBLIC_PATHS, scopes={ScopeType.HTTP})
