"""Dependencies that resolve the caller's own profile: the only way a route reaches an agent.

A user whose agent is not ready yet nudges provisioning (a lost webhook is covered that way) and is told to
retry; a user whose account was deleted, or is banned, while their access token is still valid is told so.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request
from litestar.di import NamedDependency

from service.auth.tokens import Principal
from service.db import Database
from service.errors import DomainError, account_deleted, agent_not_ready, not_a_user
from service.provisioning.service import Provisioner
from service.settings import Settings
from service.users.accounts import check_account_state
from service.users.profiles import ProfileRow, ReadyProfile, account_exists, get_profile


def require_user(principal: Principal) -> uuid.UUID:
    if principal.user_id is None:
        raise not_a_user()
    return principal.user_id


async def _profile_or_nudge(
    db: NamedDependency[Database], provisioner: NamedDependency[Provisioner], user_id: uuid.UUID
) -> ProfileRow | None:
    """The user's profile; when there is none, the account must exist (else ``account_deleted``) and
    provisioning, which creates the profile, is nudged."""
    profile = await get_profile(db, user_id)
    if profile is None:
        if not await account_exists(db, user_id):
            raise account_deleted()
        provisioner.nudge(user_id)
    return profile


async def provide_ready_profile(
    request: Request[Principal, Any, Any],
    db: NamedDependency[Database],
    provisioner: NamedDependency[Provisioner],
    settings: NamedDependency[Settings],
) -> ReadyProfile:
    """The caller's profile with an active agent; otherwise provisioning is nudged and the answer is 503."""
    user_id = require_user(request.user)
    profile = await _profile_or_nudge(db, provisioner, user_id)
    if profile is not None:
        check_account_state(profile, settings)
    ready = profile.as_ready() if profile is not None else None
    if ready is not None:
        return ready
    if profile is not None:
        provisioner.nudge(user_id)
    raise agent_not_ready(profile.agent_status if profile else None)


async def provide_profile(
    request: Request[Principal, Any, Any], db: NamedDependency[Database], provisioner: NamedDependency[Provisioner]
) -> ProfileRow:
    """The caller's profile in any provisioning state (for routes that report that state)."""
    profile = await _profile_or_nudge(db, provisioner, require_user(request.user))
    if profile is None:
        raise DomainError("no_profile")
    return profile
