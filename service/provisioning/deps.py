"""Dependencies that resolve the caller's own profile: the only way a route reaches an agent."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency

from service.auth.tokens import Principal
from service.errors import ProblemError
from service.profiles import Profile, get_profile
from service.provisioning.service import Provisioner

RETRY_AFTER_SECONDS = 5


def require_user(principal: Principal) -> uuid.UUID:
    if principal.user_id is None:
        raise ProblemError(403, "this route acts for a signed-in user; the service role has no agent")
    return principal.user_id


async def active_profile(state: State, user_id: uuid.UUID) -> Profile:
    """The user's profile if their agent is ready; otherwise start provisioning and answer 503."""
    profile = await get_profile(state.db, user_id)
    if profile is not None and profile.ready:
        return profile
    if profile is None:
        await ensure_account_exists(state, user_id)
    raise not_ready(state.provisioner, user_id, profile)


async def ensure_account_exists(state: State, user_id: uuid.UUID) -> None:
    """A user without a profile either predates the migration (provisioning creates it) or was deleted while
    their access token is still valid: that one is told so, not asked to wait for an agent forever."""
    if not await state.db.fetchval("select exists (select 1 from auth.users where id = $1)", user_id):
        raise account_deleted()


def account_deleted() -> ProblemError:
    return ProblemError(401, "this account has been deleted; sign in again", title="Account Deleted")


def not_ready(provisioner: Provisioner, user_id: uuid.UUID, profile: Profile | None) -> ProblemError:
    """The 503 for a user whose agent is not ready, having started provisioning: on demand, it covers a lost
    webhook; the client retries after a moment."""
    provisioner.schedule(user_id)
    return not_ready_problem(profile)


def not_ready_problem(profile: Profile | None) -> ProblemError:
    return ProblemError(
        503,
        "your assistant is still being set up; retry shortly",
        title="Agent Not Ready",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        agent_status=profile.agent_status if profile else "pending",
        retry_after=RETRY_AFTER_SECONDS,
    )


async def provide_active_profile(request: Request[Principal, Any, Any], state: State) -> Profile:
    return await active_profile(state, require_user(request.user))


async def provide_profile(request: Request[Principal, Any, Any], state: State) -> Profile:
    """The user's profile in any provisioning state (for routes that report that state)."""
    user_id = require_user(request.user)
    profile = await get_profile(state.db, user_id)
    if profile is None:
        await ensure_account_exists(state, user_id)
        state.provisioner.schedule(user_id)
        raise ProblemError(
            404, "no profile yet: it is being created", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    return profile


# Handlers declare ``profile: ActiveProfile`` / ``profile: AnyProfile`` with the matching provider.
ActiveProfile = NamedDependency[Profile]
AnyProfile = NamedDependency[Profile]
