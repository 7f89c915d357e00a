"""``/api/v1/chat``: send a message (SSE or JSON), read history, cancel the running turn."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import QueryParameter
from litestar.response import Stream

from service.auth.tokens import Principal
from service.billing import Budget
from service.chat.schemas import HISTORY_COLUMNS, CancelResult, ChatMessageIn, ChatReply, HistoryPage, StoredMessage
from service.chat.turns import (
    ERROR_MESSAGES,
    ChatService,
    Event,
    Turn,
    agent_timeout,
    agent_unavailable,
    budget_exceeded,
    turn_in_progress,
)
from service.errors import ProblemError
from service.openapi import MESSAGE_EXAMPLE, NOT_READY, body_example, documented, ok, problem, rate_limited
from service.provisioning.deps import ActiveProfile, provide_active_profile, require_user
from service.rate_limit import CHAT_BUCKET

EXAMPLE_TURN_ID = str(MESSAGE_EXAMPLE["turn_id"])
EXAMPLE_BUDGET = Budget(spend=10.0123, max_budget=10.0, budget_duration="30d", budget_reset_at="2026-12-01T00:00:00Z")

KEEPALIVE_SECONDS = 15.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def validate_content(content: str, max_bytes: int) -> str:
    """The one check for a user message, shared by SSE, JSON and WebSocket."""
    if not content.strip():
        raise ProblemError(422, "content must not be empty")
    size = len(content.encode("utf-8"))
    if size > max_bytes:
        raise ProblemError(413, f"content is {size} bytes; the limit is {max_bytes}", max_bytes=max_bytes)
    if "\x00" in content:
        raise ProblemError(422, "content must not contain NUL characters")
    return content


def sse(event: Event) -> bytes:
    name, data = event
    return b"event: " + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


async def sse_stream(turn: Turn) -> AsyncIterator[bytes]:
    """The turn's events as SSE, with keep-alive comments so proxies do not cut a quiet stream.

    Events already queued are written together (one socket write, not one per token). If the client goes
    away this generator is cancelled; the turn itself keeps running and is stored.
    """
    queue = turn.queue
    while True:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for wraps every get in a new task, on the token path.
            async with asyncio.timeout(KEEPALIVE_SECONDS):
                event = await queue.get()
        except TimeoutError:
            yield b": keep-alive\n\n"
            continue
        chunk = []
        while event is not None:
            chunk.append(sse(event))
            if queue.empty():
                break
            event = queue.get_nowait()
        if chunk:
            yield b"".join(chunk)
        if event is None:
            return


def encode_cursor(created_at: datetime, message_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{message_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, message_id = raw.split("|", 1)
        moment = datetime.fromisoformat(created_at)
        if moment.tzinfo is None:
            raise ValueError("a cursor's time has an offset")
        # In UTC: a made-up offset at the ends of the calendar overflows here, not in Postgres.
        return moment.astimezone(UTC), uuid.UUID(message_id)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError) as exc:
        raise ProblemError(400, "before is not a cursor returned by this endpoint") from exc


class ChatController(Controller):
    path = "/api/v1/chat"
    tags = ["chat"]
    dependencies = {"profile": Provide(provide_active_profile)}

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
                {
                    "turn_id": MESSAGE_EXAMPLE["turn_id"],
                    "status": "complete",
                    "user_message_id": "0c4d2e1f-0000-4000-8000-000000000003",
                    "message_id": MESSAGE_EXAMPLE["id"],
                    "content": MESSAGE_EXAMPLE["content"],
                    "prompt_tokens": 812,
                    "completion_tokens": 14,
                    "total_tokens": 826,
                    "cost": 0.0001302,
                    "run_id": "run-5f0c2a9e-0000-4000-8000-000000000004",
                },
                "JSON reply, or with Accept: text/event-stream an SSE stream (see README for the events)",
            ),
            402: documented(budget_exceeded(EXAMPLE_BUDGET), "Over budget (checked before Letta is called)"),
            409: documented(turn_in_progress()),
            413: problem(413, "content is 20000 bytes; the limit is 16384", max_bytes=16384),
            422: problem(422, "content must not be empty"),
            429: rate_limited(CHAT_BUCKET, 20),  # the default RATE_LIMIT_CHAT_PER_MINUTE
            502: problem(
                502,
                ERROR_MESSAGES["llm_error"],
                "The turn failed (JSON replies; over SSE it is an `error` event); the message is kept as failed",
                code="llm_error",
                turn_id=EXAMPLE_TURN_ID,
            ),
            503: documented(
                agent_unavailable(uuid.UUID(EXAMPLE_TURN_ID)),
                "Letta unreachable before streaming (the message is kept as failed), or the agent is not provisioned "
                "yet (then `agent_status` and `retry_after`, no `turn_id`)",
            ),
            504: documented(
                agent_timeout(uuid.UUID(EXAMPLE_TURN_ID)), "Letta did not start answering; its run was cancelled"
            ),
        },
    )
    async def message(
        self,
        request: Request[Principal, Any, Any],
        data: Annotated[ChatMessageIn, body_example("A message", {"content": "remember that my cat is Miso"})],
        state: State,
    ) -> Response[Any]:
        user_id = require_user(request.user)
        content = validate_content(data.content, state.settings.chat_max_message_bytes)
        chat: ChatService = state.chat
        # The turn records its chat rate-limit hit and checks the profile itself, in the statement that starts it.
        turn = await chat.start(user_id, content)
        if "text/event-stream" in request.headers.get("accept", ""):
            return Stream(sse_stream(turn), media_type="text/event-stream", headers=SSE_HEADERS)
        return await _whole_reply(turn)

    @get(
        "/history",
        summary="Your messages, newest first (keyset pagination)",
        responses={
            200: ok(HistoryPage, "A page", {"messages": [MESSAGE_EXAMPLE], "next_cursor": "MjAyNi0xMS0yMVQx"}),
            503: NOT_READY,
        },
    )
    async def history(
        self,
        profile: ActiveProfile,
        state: State,
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="page size (1-100)")] = 50,
        before: Annotated[
            str | None, QueryParameter(description="`next_cursor` of the previous page", max_length=200)
        ] = None,
    ) -> HistoryPage:
        args: list[Any] = [profile.id, limit + 1]
        condition = ""
        if before:
            args.extend(decode_cursor(before))
            condition = "and (created_at, id) < ($3, $4)"
        rows = await state.db.fetch(
            f"select {HISTORY_COLUMNS} from public.messages where user_id = $1 {condition} "  # noqa: S608
            "order by created_at desc, id desc limit $2",
            *args,
        )
        messages = [StoredMessage(**dict(row)) for row in rows[:limit]]
        next_cursor = encode_cursor(messages[-1].created_at, messages[-1].id) if len(rows) > limit else None
        return HistoryPage(messages=messages, next_cursor=next_cursor)

    @post(
        "/cancel",
        status_code=202,
        summary="Stop the reply that is being written (on any replica)",
        responses={
            202: ok(CancelResult, "Cancelling", {"cancelled": True}),
            404: problem(404, "no reply is being written right now"),
        },
    )
    async def cancel(self, profile: ActiveProfile, state: State) -> CancelResult:
        chat: ChatService = state.chat
        if not await chat.request_cancel(profile.id):
            raise ProblemError(404, "no reply is being written right now")
        return CancelResult(cancelled=True)


async def _whole_reply(turn: Turn) -> Response[Any]:
    done: dict[str, Any] = {}
    error: dict[str, Any] | None = None
    async for name, data in turn.events():
        if name == "done":
            done = data
        elif name == "error":
            error = data
    if error is not None:
        status = 402 if error.get("code") == "budget_exceeded" else 502
        raise ProblemError(
            status, error.get("message") or "the agent failed", code=error.get("code"), turn_id=str(turn.turn_id)
        )
    reply = ChatReply(content=turn.result.text, **done)
    return Response(reply)
