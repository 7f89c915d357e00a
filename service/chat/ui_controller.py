"""``/api/v1/chat/ui``: the chat for the Vercel AI SDK (``useChat`` with ``DefaultChatTransport``), no adapter.

``POST`` takes the body ``DefaultChatTransport`` sends and answers the turn as a UI message stream;
``GET /{chat_id}/stream`` is what its ``reconnectToStream`` (``useChat({ resume: true })``) calls. The events and
their chunks are mapped in ``service.chat.ui_stream``; refusals before a stream starts are problem details, as on
``/api/v1/chat/message`` (the SDK raises a non-2xx answer as an error carrying the body).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import PathParameter
from litestar.response import Stream

from service.auth.dependencies import require_user
from service.auth.tokens import Principal
from service.billing.budgets import budget_exceeded
from service.chat import journal
from service.chat.errors import agent_timeout, agent_unavailable, turn_in_progress, validate_content
from service.chat.journal import Numbered
from service.chat.service import ChatService, Turn
from service.chat.sse import KEEPALIVE, SSE_HEADERS, batches, paced
from service.chat.ui_stream import DONE, UI_STREAM_HEADERS, UIChatRequest, UIMessageStream, frame, newest_user_text
from service.db import Database
from service.errors import DomainError
from service.rate_limit import CHAT_BUCKET
from service.settings import Settings
from service.web.examples import EXHAUSTED_BUDGET, MESSAGE_EXAMPLE
from service.web.openapi import body_example, documented, rate_limited

# The transport posts the whole conversation each time; only its last message is read (the agent keeps the
# history). A frontend with very long chats can send only that one (prepareSendMessagesRequest).
UI_MAX_BODY_BYTES = 1024 * 1024
EXAMPLE_TURN_ID = uuid.UUID(str(MESSAGE_EXAMPLE["turn_id"]))
HEADERS = {**SSE_HEADERS, **UI_STREAM_HEADERS}

_SEND_EXAMPLE = {
    "id": "chat-1",
    "messages": [{"id": "m1", "role": "user", "parts": [{"type": "text", "text": "remember that my cat is Miso"}]}],
    "trigger": "submit-message",
}
_STREAM_EXAMPLE = (
    'data: {"type":"start","messageId":"9b1…","messageMetadata":{"turn_id":"9b1…","user_message_id":"0c4…"}}\n\n'
    'data: {"type":"text-start","id":"text-9b1…"}\n\n'
    'data: {"type":"text-delta","id":"text-9b1…","delta":"Got it"}\n\n'
    'data: {"type":"text-end","id":"text-9b1…"}\n\n'
    'data: {"type":"finish","finishReason":"stop","messageMetadata":{"message_id":"7aa…","cost":0.0001302}}\n\n'
    "data: [DONE]\n\n"
)

_UI_STREAM = ResponseSpec(
    data_container=str,
    description="A UI message stream (SSE `data:` chunks, then `data: [DONE]`)",
    media_type="text/event-stream",
    generate_examples=False,
    examples=[Example(summary="A reply", value=_STREAM_EXAMPLE)],
)


class ChatUIController(Controller):
    path = "/api/v1/chat/ui"
    tags = ["chat"]

    @post(
        "/",
        summary="Send a message, answered as a Vercel AI SDK UI message stream",
        description=(
            "The body `DefaultChatTransport` posts (`{id, messages, trigger, messageId}`): the last message must be "
            "the user's, and only its text parts are read. The answer is SSE `data:` chunks (`start`, `text-*`, "
            "`tool-input-available`/`tool-output-available`, `error`, `finish`) then `data: [DONE]`, with "
            "`x-vercel-ai-ui-message-stream: v1`."
        ),
        status_code=200,
        request_max_body_size=UI_MAX_BODY_BYTES,
        responses={
            200: _UI_STREAM,
            402: documented(budget_exceeded(EXHAUSTED_BUDGET), "Over budget (checked before Letta is called)"),
            404: documented(DomainError("no_such_thread"), "`id` is a thread id, but not one of your threads"),
            409: documented(turn_in_progress()),
            413: documented(DomainError("message_too_large", "content is 20000 bytes; the limit is 16384")),
            422: documented(DomainError("invalid_message", "the last message must be the user's message")),
            429: rate_limited(CHAT_BUCKET, 20),
            503: documented(
                agent_unavailable(EXAMPLE_TURN_ID),
                "Letta unreachable (the message is kept as failed), or the agent is not provisioned yet",
            ),
            504: documented(agent_timeout(EXAMPLE_TURN_ID), "Letta did not start answering; its run was cancelled"),
        },
    )
    async def send(
        self,
        request: Request[Principal, Any, Any],
        data: Annotated[UIChatRequest, body_example("useChat's request", _SEND_EXAMPLE)],
        chat: NamedDependency[ChatService],
        settings: NamedDependency[Settings],
    ) -> Stream:
        user_id = require_user(request.user)
        content = validate_content(newest_user_text(data), settings.chat_max_message_bytes)
        turn = await chat.start(user_id, content, thread_of(data.id or ""))
        return Stream(_live(turn), media_type="text/event-stream", headers=HEADERS)

    @get(
        "/{chat_id:str}/stream",
        summary="Resume the running reply as a UI message stream (204 when none runs)",
        description=(
            "What `reconnectToStream` calls (`useChat({ resume: true })`). A `chat_id` that is a thread id resumes "
            "the turn running in that thread; any other id (the client's own) resumes the user's running turn. "
            "From any device or replica, replayed from its first chunk and followed to its end."
        ),
        status_code=200,
        responses={
            200: _UI_STREAM,
            204: ResponseSpec(data_container=None, description="No reply is being written"),
        },
    )
    async def resume(
        self,
        request: Request[Principal, Any, Any],
        db: NamedDependency[Database],
        chat_id: Annotated[str, PathParameter(min_length=1, max_length=200, description="the client's chat id")],
    ) -> Response[Any]:
        """The user's running turn in the thread ``chat_id`` names, or, for a chat id of the client's own, the
        user's running turn (one runs per user at a time)."""
        user_id = require_user(request.user)
        turn_id = await journal.running_turn(db, user_id, thread_of(chat_id))
        if turn_id is None:
            return Response(content=None, status_code=204)
        await journal.check_resumable(db, user_id, turn_id)
        events = journal.follow(db, turn_id, 0)
        return Stream(_replayed(events, str(turn_id)), media_type="text/event-stream", headers=HEADERS)


def thread_of(chat_id: str) -> uuid.UUID | None:
    """The thread a ``useChat`` id names: give ``useChat`` a thread's id as its ``id`` to chat in that thread; any
    other id (``useChat`` generates its own) is the default thread."""
    try:
        return uuid.UUID(chat_id)
    except ValueError:
        return None


async def _live(turn: Turn) -> AsyncIterator[bytes]:
    """The turn's events as UI chunks, as they come (those already emitted in one write), with keep-alive comments
    while it is quiet. A client that goes away cancels this generator, not the turn: its reply is stored."""
    ui = UIMessageStream(str(turn.turn_id))
    async for batch in batches(turn):
        if batch is None:
            yield KEEPALIVE
            continue
        events, ended = batch
        out = [frame(chunk) for event in events for chunk in ui.chunks(event)]
        if ended:
            out.extend(frame(chunk) for chunk in ui.end())
            out.append(DONE)
        if out:
            yield b"".join(out)


async def _replayed(events: AsyncIterator[Numbered], turn_id: str) -> AsyncIterator[bytes]:
    """A journal's events as UI chunks, with keep-alive comments while the turn is quiet."""
    ui = UIMessageStream(turn_id)
    async for event in paced(events):
        if event is None:
            yield KEEPALIVE
            continue
        chunks = ui.chunks(event)
        if chunks:
            yield b"".join(frame(chunk) for chunk in chunks)
    yield b"".join(frame(chunk) for chunk in ui.end()) + DONE
