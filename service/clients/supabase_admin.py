"""Supabase Auth admin calls made with the project's service key."""

from __future__ import annotations

import logging
import uuid

import httpx
from supabase_auth import AsyncGoTrueAdminAPI
from supabase_auth.errors import AuthApiError, AuthError, AuthRetryableError

from service.clients.errors import UpstreamError, transient_status

logger = logging.getLogger("service.supabase_admin")

SERVICE = "supabase-auth"


def _admin(http: httpx.AsyncClient, supabase_url: str, service_key: str) -> AsyncGoTrueAdminAPI:
    # The admin API wants the service key both as the gateway's apikey and as the bearer (service_role).
    headers = {"apikey": service_key, "Authorization": f"Bearer {service_key}"}
    return AsyncGoTrueAdminAPI(url=f"{supabase_url.rstrip('/')}/auth/v1", headers=headers, http_client=http)


def _already_deleted(exc: AuthError) -> bool:
    # Only GoTrue's own "user not found" counts: a bare 404 from the gateway means a wrong SUPABASE_URL,
    # and calling that success would report an account deleted that still exists.
    if not isinstance(exc, AuthApiError) or exc.status != 404:
        return False
    return exc.code == "user_not_found" or (exc.code is None and "user not found" in exc.message.lower())


async def delete_auth_user(
    http: httpx.AsyncClient, supabase_url: str, service_key: str, user_id: uuid.UUID | str
) -> None:
    """Hard-delete a user from Supabase Auth (``DELETE /auth/v1/admin/users/{id}``); idempotent.

    A user that is already gone is success. Anything else raises ``UpstreamError(service="supabase-auth")``,
    ``transient`` for network failures and the statuses ``transient_status`` names (retrying may help).
    ``ValueError`` if ``user_id`` is not a UUID.
    """
    user_id = str(uuid.UUID(str(user_id)))
    try:
        await _admin(http, supabase_url, service_key).delete_user(user_id)
    except AuthError as exc:
        if _already_deleted(exc):
            logger.info("auth user already deleted", extra={"user_id": user_id})
            return
        # The httpx error supabase_auth raised from holds the real status, even when the body was unreadable.
        cause = exc.__cause__
        status = cause.response.status_code if isinstance(cause, httpx.HTTPStatusError) else None
        transient = isinstance(exc, AuthRetryableError) or status is None or transient_status(status)
        code = f" ({exc.code})" if exc.code else ""
        where = f"HTTP {status}" if status else "network error"
        message = f"deleting user {user_id} failed: {where}{code}: {exc.message[:300]}"
        raise UpstreamError(SERVICE, message, status=status, transient=transient) from exc
    logger.info("auth user deleted", extra={"user_id": user_id})
