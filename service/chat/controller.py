"""``/api/v1/chat``: send a message (SSE or JSON), read history, cancel the running turn, export everything."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from service.auth.dependencies import provide_ready_profile, require_user
from service.auth.tokens import Principal
from service.billing.budgets import budget_exceeded
from service.chat import journal, store
from service.chat.errors import (
    agent_timeout,
    agent_unavailable,
    no_such_thread,
    no_turn,
    turn_failed,
    turn_in_progress,
    validate_content,
)
from service.chat.export import export_json, export_markdown
from service.chat.schemas import CancelResult, ChatMessage, ChatMessageIn, ChatReply, HistoryPage
from service.chat.service import ChatService, Turn
from service.chat.sse import SSE_HEADERS, sse_replay, sse_stream
from service.db import Database
from service.errors import DomainError
from service.pagination import decode_cursor, encode_cursor
from service.rate_limit import CHAT_BUCKET
from service.settings import Settings
from service.threads import store as thread_store
from service.users.profiles import ReadyProfile
from service.web.examples import CHAT_REPLY_EXAMPLE, EXHAUSTED_BUDGET, MESSAGE_EXAMPLE, USER_ID
from service.web.openapi import NOT_READY, body_example, documented, ok, rate_limited

EXAMPLE_TURN_ID = uuid.UUID(str(MESSAGE_EXAMPLE["turn_id"]))
EXAMPLE_THREAD_ID = uuid.UUID(str(MESSAGE_EXAMPLE["thread_id"]))


class ChatController(Controller):
    path = "/api/v1/chat"
    tags = ["chat"]
    dependencies = {"profile": Provide(provide_ready_profile)}

    @post(
        "/message",
        summary="Send a message to your agent",
        description=(
            "With `Accept: text/event-stream` the reply streams as Server-Sent Events (`turn`, `delta`, `tool`, "
            "`usage`, `error`, `done`, plus `: keep-alive` comments); otherwise the whole reply is returned as JSON."
        ),
        status_code=200,
        request_max_body_size=256 * 1024,
        responses={
            200: ok(
                ChatReply,
                "The whole reply (without Accept: text/event-stream)",
                CHAT_REPLY_EXAMPLE,
                "JSON reply, or with Accept: text/event-stream an SSE stream (see README for the events)",
            ),
            402: documented(budget_exceeded(EXHAUSTED_BUDGET), "Over budget (checked before Letta is called)"),
            404: documented(DomainError("no_such_thread"), "`thread_id` is not one of your threads"),
            409: documented(turn_in_progress(EXAMPLE_THREAD_ID), "One turn at a time per user, across all threads"),
            413: documented(DomainError("message_too_large", "content is 20000 bytes; the limit is 16384")),
            422: documented(DomainError("invalid_message", "content must not be empty")),
            429: rate_limited(CHAT_BUCKET, 20),  # the default RATE_LIMIT_CHAT_PER_MINUTE
            502: documented(
                turn_failed("llm_error", EXAMPLE_TURN_ID),
                "The turn failed (JSON replies; over SSE it is an `error` event); the message is kept as failed",
            ),
            503: documented(
                agent_unavailable(EXAMPLE_TURN_ID),
                "Letta unreachable before streaming (the message is kept as failed), or the agent is not provisioned "
                "yet (then `agent_status` and `retry_after`, no `turn_id`)",
            ),
            504: documented(agent_timeout(EXAMPLE_TURN_ID), "Letta did not start answering; its run was cancelled"),
        },
    )
    async def message(
        self,
        request: Request[Principal, Any, Any],
        data: Annotated[ChatMessageIn, body_example("A message", {"content": "remember that my cat is Miso"})],
        chat: NamedDependency[ChatService],
        settings: NamedDependency[Settings],
    ) -> Response[Any]:
        user_id = require_user(request.user)
        # No profile dependency: the turn reads the profile in the statement that starts it.
        content = validate_content(data.content, settings.chat_max_message_bytes)
        turn = await chat.start(user_id, content, data.thread_id)
        if "text/event-stream" in request.headers.get("accept", ""):
            return Stream(sse_stream(turn), media_type="text/event-stream", headers=SSE_HEADERS)
        return Response(await _whole_reply(turn))

    @get(
        "/history",
        summary="Your messages, newest first (keyset pagination), in one thread or all",
        responses={
            200: ok(HistoryPage, "A page", {"messages": [MESSAGE_EXAMPLE], "next_cursor": "MjAyNi0xMS0yMVQx"}),
            400: documented(DomainError("invalid_cursor")),
            404: documented(DomainError("no_such_thread"), "`thread_id` is not one of your threads"),
            503: NOT_READY,
        },
    )
    async def history(
        self,
        profile: NamedDependency[ReadyProfile],
        db: NamedDependency[Database],
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="page size (1-100)")] = 50,
        before: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page", max_length=200)
        ] = None,
        thread_id: Annotated[uuid.UUID | None, QueryParameter(description="only this thread (default: all)")] = None,
    ) -> HistoryPage:
        after = decode_cursor(before) if before else None
        rows = await store.messages_page(db, profile.id, limit + 1, after, thread_id=thread_id)
        if thread_id and not rows and not await db.fetchval(thread_store.ONE, thread_id, profile.id):
            raise no_such_thread()
        messages = [ChatMessage.of(row) for row in rows[:limit]]
        next_cursor = encode_cursor(messages[-1].created_at, messages[-1].id) if len(rows) > limit else None
        return HistoryPage(messages=messages, next_cursor=next_cursor)

    @post(
        "/cancel",
        status_code=202,
        summary="Stop the reply that is being written (on any replica)",
        responses={
            202: ok(CancelResult, "Cancelling", {"cancelled": True}),
            404: documented(no_turn()),
        },
    )
    async def cancel(self, profile: NamedDependency[ReadyProfile], chat: NamedDependency[ChatService]) -> CancelResult:
        if not await chat.request_cancel(profile.id):
            raise no_turn()
        return CancelResult(cancelled=True)

    @get(
        "/turns/{turn_id:uuid}/stream",
        summary="Resume a turn's stream: the events after Last-Event-ID, then the rest until `done`",
        description=(
            "Any replica, any device. `Last-Event-ID` (header) or `last_event_id` (query) is the id of the last "
            "event received; without it the stream starts from the turn's first event. A turn's events are kept "
            "for TURN_RESUME_SECONDS after it ended; later this is 410 and the turn is in the history."
        ),
        responses={
            200: ok(str, "An SSE stream (text/event-stream), the same events as the message route", "id: 8\n..."),
            404: documented(DomainError("no_such_turn")),
            410: documented(DomainError("turn_expired")),
        },
    )
    async def resume(
        self,
        request: Request[Principal, Any, Any],
        turn_id: FromPath[uuid.UUID],
        db: NamedDependency[Database],
        last_event_id: Annotated[int | None, QueryParameter(ge=0, le=10**9)] = None,
    ) -> Stream:
        user_id = require_user(request.user)
        return await _resumed(db, user_id, turn_id, _last_event_id(request, last_event_id))

    @get(
        "/turns/current/stream",
        summary="Follow your turn that is running now, from any device (204 when none runs)",
        description=(
            "Like the resume route, for a client that does not know the turn's id (`X-Turn-ID` says it); with "
            "`thread_id`, only a turn running in that thread."
        ),
        status_code=200,
        responses={
            200: ok(str, "An SSE stream of the running turn", "id: 1\nevent: turn\n..."),
            204: ResponseSpec(data_container=None, description="No turn is running"),
        },
    )
    async def current(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[Database],
        last_event_id: Annotated[int | None, QueryParameter(ge=0, le=10**9)] = None,
        thread_id: Annotated[uuid.UUID | None, QueryParameter(description="only a turn of this thread")] = None,
    ) -> Response[Any]:
        user_id = require_user(request.user)
        turn_id = await journal.running_turn(db, user_id, thread_id)
        if turn_id is None:
            return Response(content=None, status_code=204)
        return await _resumed(db, user_id, turn_id, _last_event_id(request, last_event_id))

    @get(
        "/export",
        summary="Your whole chat history (or one thread's) as a streamed download (JSON or Markdown)",
        responses={
            200: ok(
                dict[str, Any],
                "JSON export (format=json); Markdown with format=markdown",
                {"user_id": USER_ID, "exported_at": "2026-11-21T10:20:00Z", "messages": [MESSAGE_EXAMPLE]},
            )
        },
    )
    async def export(
        self,
        profile: NamedDependency[ReadyProfile],
        db: NamedDependency[Database],
        format: FromQuery[Literal["json", "markdown"]] = "json",
        thread_id: Annotated[uuid.UUID | None, QueryParameter(description="only this thread (default: all)")] = None,
    ) -> Response[Any]:
        stamp = datetime.now(UTC).strftime("%Y%m%d")
        if format == "markdown":
            # Litestar adds the charset.
            body, media, ext = export_markdown(db, profile.id, thread_id), "text/markdown", "md"
        else:
            body, media, ext = export_json(db, profile.id, thread_id), "application/json", "json"
        return Stream(
            body, media_type=media, headers={"Content-Disposition": f'attachment; filename="chat-export-{stamp}.{ext}"'}
        )


def _last_event_id(request: Request[Any, Any, Any], query: int | None) -> int:
    """Where a resumed stream starts: after ``Last-Event-ID`` (what EventSource sends when it reconnects) or the
    ``last_event_id`` query parameter (for clients that cannot set headers); from the start without either."""
    header = request.headers.get("last-event-id")
    if header is None:
        return query or 0
    if not header.isdigit() or len(header) > 9:
        raise DomainError("invalid_message", "Last-Event-ID must be an event id this stream sent")
    return int(header)


async def _resumed(db: Database, user_id: uuid.UUID, turn_id: uuid.UUID, after: int) -> Stream:
    await journal.check_resumable(db, user_id, turn_id)
    return Stream(
        sse_replay(journal.follow(db, turn_id, after)),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, "X-Turn-ID": str(turn_id)},
    )


async def _whole_reply(turn: Turn) -> ChatReply:
    """Wait for the turn's ``done``; a turn that ended with an ``error`` event is raised as that error."""
    done: dict[str, Any] = {}
    error_code: str | None = None
    async for _, name, data in turn.events():
        if name == "done":
            done = data
        elif name == "error":
            error_code = data["code"]
    if error_code is not None:
        raise turn_failed(error_code, turn.turn_id)
    return ChatReply(content=turn.result.text, thread_id=str(turn.thread_id), **done)
