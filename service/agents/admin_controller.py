"""``/api/v1/admin/users/{user_id}/agent``: an admin rebuilds a user's agent from an agent export (a lost agent, or
a move to another Letta server). Admin credential only: ``ADMIN_API_KEY``, or a user whose ``app_metadata.role``
is admin."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import FromPath

from service.agents.export import REBUILD_MAX_BODY_BYTES, invalid_export
from service.agents.schemas import AgentExport, RebuildResult
from service.agents.service import AgentService
from service.auth.tokens import Principal
from service.chat.errors import turn_in_progress
from service.db import Database
from service.errors import DomainError
from service.provisioning.service import Provisioner
from service.users.profiles import get_profile
from service.web.examples import AGENT_ID, USER_ID
from service.web.openapi import documented, ok, problem
from service.web.problems import ProblemError

logger = logging.getLogger("service.agents")

REBUILD_EXAMPLE = {
    "user_id": USER_ID,
    "agent_id": "agent-5c2e9a7d-0000-4000-8000-000000000006",
    "previous_agent_id": AGENT_ID,
    "blocks": 2,
    "passages": 1,
    "messages": 4,
    "in_context": 4,
    "skipped_messages": 1,
}


class AgentAdminController(Controller):
    path = "/api/v1/admin/users"
    tags = ["admin"]

    @post(
        "/{user_id:uuid}/agent/rebuild",
        status_code=200,
        summary="Rebuild a user's agent from an agent export (admins only)",
        description=(
            "Takes a `GET /api/v1/agent/export` document (at most "
            f"{REBUILD_MAX_BODY_BYTES // (1024 * 1024)} MiB) and makes the user a new agent on the configured Letta "
            "server: the user's spec, the export's memory blocks and archival passages (embedded anew), and the "
            "agent's own message history stored again, its in-context part back in context (conversations' "
            "messages are not replayed). The profile then points at the new agent and the old one is deleted if it "
            "still exists. The user's chat is held off meanwhile."
        ),
        request_max_body_size=REBUILD_MAX_BODY_BYTES,
        responses={
            200: ok(RebuildResult, "Rebuilt", REBUILD_EXAMPLE),
            400: problem(400, "the body is not valid JSON"),
            403: documented(DomainError("admin_only")),
            404: problem(404, "no such user"),
            409: documented(turn_in_progress(), "A reply is being written (or `reset_in_progress`)"),
            413: problem(413, f"the body is over {REBUILD_MAX_BODY_BYTES} bytes"),
            422: documented(
                invalid_export("block 'notes': the agent has only the blocks human, persona"),
                "Not an agent export this service can rebuild from (or `rebuild_refused`: Letta refused part of it)",
            ),
            503: documented(DomainError("agent_unavailable")),
        },
    )
    async def rebuild(
        self,
        request: Request[Principal, Any, Any],
        user_id: FromPath[uuid.UUID],
        db: NamedDependency[Database],
        agents: NamedDependency[AgentService],
        provisioner: NamedDependency[Provisioner],
    ) -> RebuildResult:
        if not request.user.is_admin:  # see Principal.is_admin: user_metadata never makes an admin
            raise DomainError("admin_only")
        if await get_profile(db, user_id) is None:
            raise ProblemError(404, "no such user")
        body = await request.body()  # Litestar enforces request_max_body_size (413) while reading
        try:
            export = msgspec.json.decode(body, type=AgentExport)
        except msgspec.ValidationError as exc:
            raise invalid_export(str(exc)) from exc
        except (msgspec.DecodeError, RecursionError) as exc:
            raise ProblemError(400, "the body is not valid JSON") from exc
        result = await agents.rebuild(user_id, export, provisioner)
        logger.info(
            "agent rebuilt",
            extra={
                "user_id": str(user_id),
                "agent_id": result.agent_id,
                "previous": result.previous_agent_id,
                "by": str(request.user.user_id or request.user.role),
            },
        )
        return result
