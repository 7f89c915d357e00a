"""``/api/v1/threads``: the caller's threads — list, create, read, rename, delete, fork."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, QueryParameter

from service.auth.dependencies import require_user
from service.auth.tokens import Principal
from service.errors import DomainError
from service.threads.schemas import ForkIn, Thread, ThreadIn, ThreadPage, ThreadUpdate
from service.threads.service import ThreadService
from service.web.examples import THREAD_EXAMPLE
from service.web.openapi import body_example, documented, ok

NO_SUCH_THREAD = documented(DomainError("no_such_thread"), "Not one of your threads")


class ThreadController(Controller):
    path = "/api/v1/threads"
    tags = ["threads"]

    @get(
        "/",
        summary="Your threads, most recent activity first (keyset pagination)",
        responses={200: ok(ThreadPage, "A page", {"threads": [THREAD_EXAMPLE], "next_cursor": None})},
    )
    async def list_threads(
        self,
        request: Request[Principal, Any, Any],
        threads: NamedDependency[ThreadService],
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="page size (1-100)")] = 50,
        before: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page", max_length=200)
        ] = None,
    ) -> ThreadPage:
        return await threads.list(require_user(request.user), limit, before)

    @post(
        "/",
        summary="Start a new thread (it shares your agent's memory with all your threads)",
        request_max_body_size=4096,
        responses={201: ok(Thread, "The new thread", THREAD_EXAMPLE)},
    )
    async def create_thread(
        self,
        request: Request[Principal, Any, Any],
        threads: NamedDependency[ThreadService],
        data: Annotated[ThreadIn, body_example("A titled thread", {"title": "Trip to Lisbon"})],
    ) -> Thread:
        return await threads.create(require_user(request.user), data.title)

    @get(
        "/{thread_id:uuid}",
        summary="One of your threads",
        responses={200: ok(Thread, "The thread", THREAD_EXAMPLE), 404: NO_SUCH_THREAD},
    )
    async def get_thread(
        self,
        request: Request[Principal, Any, Any],
        threads: NamedDependency[ThreadService],
        thread_id: FromPath[uuid.UUID],
    ) -> Thread:
        return await threads.get(require_user(request.user), thread_id)

    @patch(
        "/{thread_id:uuid}",
        summary="Rename a thread (a generated title never replaces yours)",
        request_max_body_size=4096,
        responses={200: ok(Thread, "The renamed thread", THREAD_EXAMPLE), 404: NO_SUCH_THREAD},
    )
    async def rename_thread(
        self,
        request: Request[Principal, Any, Any],
        threads: NamedDependency[ThreadService],
        thread_id: FromPath[uuid.UUID],
        data: Annotated[ThreadUpdate, body_example("A new title", {"title": "Lisbon, day by day"})],
    ) -> Thread:
        return await threads.rename(require_user(request.user), thread_id, data.title)

    @delete(
        "/{thread_id:uuid}",
        summary="Delete a thread: its messages and its Letta conversation (the default thread is emptied)",
        description="Your agent's memory stays: what it learned in this thread it still knows in the others.",
        responses={
            404: NO_SUCH_THREAD,
            409: documented(DomainError("thread_busy"), "A reply is being written in this thread"),
            503: documented(DomainError("agent_unavailable"), "Letta unreachable: nothing was deleted, retry"),
        },
    )
    async def delete_thread(
        self,
        request: Request[Principal, Any, Any],
        threads: NamedDependency[ThreadService],
        thread_id: FromPath[uuid.UUID],
    ) -> None:
        await threads.delete(require_user(request.user), thread_id)

    @post(
        "/{thread_id:uuid}/fork",
        summary="Branch from a message: a new thread that starts with this thread's history up to that message",
        request_max_body_size=4096,
        responses={
            201: ok(Thread, "The branch", {**THREAD_EXAMPLE, "forked_from_message_id": THREAD_EXAMPLE["id"]}),
            404: documented(DomainError("no_such_message"), "The thread, or the message in it, is not yours"),
            409: documented(DomainError("thread_busy"), "The message's reply is still being written"),
        },
    )
    async def fork_thread(
        self,
        request: Request[Principal, Any, Any],
        threads: NamedDependency[ThreadService],
        thread_id: FromPath[uuid.UUID],
        data: Annotated[ForkIn, body_example("Branch here", {"message_id": "7aa1c2d3-0000-4000-8000-000000000002"})],
    ) -> Thread:
        return await threads.fork(require_user(request.user), thread_id, data)
