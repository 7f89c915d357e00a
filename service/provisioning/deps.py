"""The dependency every agent-backed route uses: the caller's profile, provisioned and active."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.datastructures import State
from litestar.di import NamedDependency

from service.auth.tokens import Principal
from service.errors import ProblemError
from service.profiles import Profile, get_profile
from service.provisioning.service import Provisioner

RETRY_AFTER_SECONDS = 5


async def provide_active_profile(request: Request[Principal, Any, Any], state: State) -> Profile:
    principal = request.user
    if principal.user_id is None:
        raise ProblemError(403, "this route acts for a signed-in user; the service role has no agent")
    profile = await get_profile(state.db, principal.user_id)
    if profile is not None and profile.agent_status == "active" and profile.letta_agent_id:
        return profile
    # Not ready: provisioning on demand covers a lost webhook; the client retries after a moment.
    provisioner: Provisioner = state.provisioner
    provisioner.schedule(principal.user_id)
    status = profile.agent_status if profile else "pending"
    raise ProblemError(
        503,
        "your assistant is still being set up; retry shortly",
        title="Agent Not Ready",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        agent_status=status,
    )


# Handlers declare ``profile: ActiveProfile`` and get it from ``provide_active_profile``.
ActiveProfile = NamedDependency[Profile]
