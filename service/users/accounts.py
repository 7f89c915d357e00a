"""Deleting an account: the login in Supabase Auth, then everything the cascade and deprovisioning remove."""

from __future__ import annotations

import logging
import uuid

import httpx

from service.clients.errors import UpstreamError
from service.clients.supabase_admin import delete_auth_user
from service.errors import DomainError
from service.provisioning.service import Provisioner
from service.settings import Settings
from service.users.profiles import ProfileRow

logger = logging.getLogger("service.users")


def check_account_state(profile: ProfileRow, settings: Settings) -> None:
    """Supabase Auth's account states the service honours: a banned user (``banned_until`` in the future; their
    access tokens stay valid until they expire) is refused, and so is an anonymous one if so configured."""
    if profile.banned:
        raise DomainError("account_banned")
    if profile.is_anonymous and settings.anonymous_users == "refuse":
        raise DomainError("anonymous_not_allowed")


async def delete_account(
    http: httpx.AsyncClient, settings: Settings, provisioner: Provisioner, user_id: uuid.UUID
) -> bool:
    """Delete the user everywhere; returns whether the clean-up of agent and billing user is already complete
    (else the deprovisioning queue finishes it). Retry-safe."""
    service_key = settings.supabase_service_key
    if service_key is None:
        raise DomainError("deletion_not_configured")
    try:
        # GoTrue deletes auth.users; the cascade removes our rows and the delete trigger queues the external
        # clean-up durably, so a crash from here on loses nothing. Already gone = success.
        await delete_auth_user(http, settings.supabase_url, service_key.get_secret_value(), user_id)
    except UpstreamError as exc:
        logger.warning("auth user deletion failed", extra={"user_id": str(user_id), "error": str(exc)})
        raise DomainError("auth_unavailable") from exc
    complete = await provisioner.deprovision(user_id)
    logger.info("account deleted", extra={"user_id": str(user_id), "cleanup_complete": complete})
    return complete
