"""``WS /api/v1/chat/stream``: the same turns and events as SSE, over one long-lived connection.

Browsers cannot set headers on a WebSocket, so the client authenticates in its first message:

    client -> {"type": "auth", "token": "<Supabase access token>"}      (within 10 s, else close 4401)
    server -> {"type": "ready", "user_id": "..."}
    client -> {"type": "message", "content": "...", "thread_id"?: "..."}
                                                      server -> turn, delta..., tool, usage, [error], done
    client -> {"type": "cancel"}                      stops the running turn (and its Letta run), from any device
    client -> {"type": "attach", "turn_id"?: "...", "thread_id"?: "...", "last_event_id"?: n}
                                                      follow a turn started elsewhere (default: the running one,
                                                      in ``thread_id`` if given)
                                                      from the event after ``last_event_id``
    client -> {"type": "ping"}                        server -> {"type": "pong"}
    client -> {"type": "auth", "token": "..."}        a refreshed token for the same user, any time

A refused message is ``{"type": "error", "code": ..., "message": ..., "status": ...}`` (the HTTP status the
same problem has over SSE/JSON) and leaves the socket open; a failure inside a turn is the turn's ``error``
event (no status), followed by its ``done``. A turn keeps running and is stored if the socket drops. Every turn
event carries its ``id`` (the SSE ``id:``): a device that reconnects attaches with the last one it saw.

Frames are JSON in text frames, or in binary frames as UTF-8. Limits: a first frame over 16 KiB, or any frame
over 256 KiB, closes the socket with 1009 (before it is buffered: see ``service.web.server``); past ``WS_MAX_SOCKETS``
open sockets in this replica a new one gets an error frame ``too_many_sockets`` (503) and close 1013, and a
user's socket past ``WS_MAX_SOCKETS_PER_USER`` gets ``too_many_sockets`` (429) and close 4429 once it has
authenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from typing import Annotated, Any, Literal, cast

import msgspec
from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import NotAuthorizedException, WebSocketDisconnect
from litestar.types import WebSocketDisconnectEvent, WebSocketReceiveEvent

from service.auth.middleware import authenticate_token
from service.auth.tokens import Principal, TokenVerifier
from service.chat import journal
from service.chat.errors import no_turn, turn_in_progress, validate_content
from service.chat.service import ChatService, Turn
from service.chat.sse import present
from service.errors import DomainError
from service.settings import Settings
from service.web.problems import REFUSALS, error_frame

logger = logging.getLogger("service.chat")

AUTH_TIMEOUT_SECONDS = 10.0
MAX_FRAME_BYTES = 256 * 1024
MAX_FIRST_FRAME_BYTES = 16 * 1024  # the auth frame: a socket not yet authenticated is held to this (web/server.py)
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_LARGE = 1009
CLOSE_TRY_AGAIN_LATER = 1013  # this replica has WS_MAX_SOCKETS open
CLOSE_TOO_MANY_SOCKETS = 4429  # this user has WS_MAX_SOCKETS_PER_USER open


class OpenSockets:
    """The chat sockets open in this process (one replica): in all, and per signed-in user."""

    def __init__(self) -> None:
        self.total = 0
        self.per_user: Counter[uuid.UUID] = Counter()

    def open(self, limit: int) -> bool:
        if self.total >= limit:
            return False
        self.total += 1
        return True

    def close(self) -> None:
        self.total -= 1

    def open_for(self, user_id: uuid.UUID, limit: int) -> bool:
        if self.per_user[user_id] >= limit:
            return False
        self.per_user[user_id] += 1
        return True

    def close_for(self, user_id: uuid.UUID) -> None:
        self.per_user[user_id] -= 1
        if self.per_user[user_id] <= 0:
            del self.per_user[user_id]


OPEN_SOCKETS = OpenSockets()


class ClientFrame(msgspec.Struct, forbid_unknown_fields=True):
    type: Literal["auth", "message", "cancel", "ping", "attach"]
    token: str | None = None
    content: str | None = None
    turn_id: uuid.UUID | None = None  # attach: which turn (default: the one running now)
    thread_id: uuid.UUID | None = None  # message: the thread (default: the default thread); attach: a filter
    last_event_id: Annotated[int, msgspec.Meta(ge=0)] = 0  # attach: the last event id this device saw


class ChatSocket:
    def __init__(
        self, socket: WebSocket[Any, Any, Any], chat: ChatService, tokens: TokenVerifier, settings: Settings
    ) -> None:
        self.socket = socket
        self.chat = chat
        self.tokens = tokens
        self.max_message_bytes = settings.chat_max_message_bytes
        self.max_sockets = settings.ws_max_sockets
        self.max_sockets_per_user = settings.ws_max_sockets_per_user
        self.counted = False  # in OPEN_SOCKETS.total
        self.counted_for: uuid.UUID | None = None  # in OPEN_SOCKETS.per_user
        self.principal: Principal | None = None
        self.turn: Turn | None = None
        self.forwarder: asyncio.Task[None] | None = None
        self.send_lock = asyncio.Lock()

    async def send(self, payload: dict[str, Any]) -> None:
        async with self.send_lock:
            with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                # Text frames: a browser hands them to onmessage as strings, ready for JSON.parse (binary ones
                # arrive as Blobs).
                await self.socket.send_text(msgspec.json.encode(payload).decode())

    async def error(self, code: str, message: str, status: int, **extra: Any) -> None:
        await self.send({"type": "error", "code": code, "message": message, "status": status, **extra})

    async def receive(self) -> ClientFrame | None:
        event = cast("WebSocketReceiveEvent | WebSocketDisconnectEvent", await self.socket.receive())
        if event["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(detail="disconnect event", code=event["code"])
        # A text frame, or a binary one holding the same JSON as UTF-8.
        text, data = event.get("text"), event.get("bytes")
        raw: str | bytes = text if text is not None else data or b""
        if len(raw) > MAX_FRAME_BYTES:  # uvicorn refuses these first (ws_max_size); this holds under any server
            await self.socket.close(code=CLOSE_TOO_LARGE, reason="frame too large")
            raise WebSocketDisconnect(detail="frame too large")
        try:
            return msgspec.json.decode(raw, type=ClientFrame)
        except msgspec.DecodeError as exc:
            await self.error("invalid_message", f"not a valid frame: {exc}", 400)
        except UnicodeDecodeError:
            await self.error("invalid_message", "not a valid frame: a binary frame must hold UTF-8 JSON", 400)
        return None

    async def authenticate(self, token: str | None) -> bool:
        try:
            principal = await authenticate_token(token or "", self.tokens, None)
        except NotAuthorizedException as exc:
            await self.error("unauthorized", exc.detail, 401)
            return False
        except DomainError as exc:  # the JWKS cannot be fetched (jwks_unavailable, with retry_after)
            await self.send(error_frame(exc))
            return False
        if principal.user_id is None or (self.principal and principal.user_id != self.principal.user_id):
            await self.error("unauthorized", "the token must belong to the same signed-in user", 401)
            return False
        self.principal = principal
        return True

    def token_expired(self) -> bool:
        assert self.principal is not None
        return self.principal.expires_at < time.time()

    async def run(self) -> None:
        await self.socket.accept()
        self.counted = OPEN_SOCKETS.open(self.max_sockets)
        if not self.counted:
            logger.warning("WebSocket refused: WS_MAX_SOCKETS open", extra={"limit": self.max_sockets})
            await self.error("too_many_sockets", "this server has too many open sockets; retry shortly", 503)
            await self.socket.close(code=CLOSE_TRY_AGAIN_LATER, reason="too many sockets")
            return
        try:
            first = await asyncio.wait_for(self.receive(), AUTH_TIMEOUT_SECONDS)
        except TimeoutError:
            await self.socket.close(code=CLOSE_UNAUTHORIZED, reason="authenticate first")
            return
        if first is None or first.type != "auth" or not await self.authenticate(first.token):
            await self.socket.close(code=CLOSE_UNAUTHORIZED, reason="authentication failed")
            return
        assert self.principal is not None and self.principal.user_id is not None
        if not OPEN_SOCKETS.open_for(self.principal.user_id, self.max_sockets_per_user):
            await self.error(
                "too_many_sockets",
                f"you have {self.max_sockets_per_user} sockets open; close one and retry",
                429,
                limit=self.max_sockets_per_user,
            )
            await self.socket.close(code=CLOSE_TOO_MANY_SOCKETS, reason="too many sockets for this user")
            return
        self.counted_for = self.principal.user_id
        await self.send({"type": "ready", "user_id": str(self.principal.user_id)})
        while True:
            frame = await self.receive()
            if frame is None:
                continue
            if frame.type == "ping":
                await self.send({"type": "pong"})
            elif frame.type == "auth":
                if await self.authenticate(frame.token):
                    await self.send({"type": "ready", "user_id": str(self.principal.user_id)})
            elif frame.type == "cancel":
                await self.cancel()
            elif frame.type == "message":
                await self.start_turn(frame.content or "", frame.thread_id)
            elif frame.type == "attach":
                await self.attach(frame.turn_id, frame.last_event_id, frame.thread_id)

    async def cancel(self) -> None:
        """Stop this socket's turn, or the user's turn started elsewhere (another socket, replica or device)."""
        assert self.principal is not None and self.principal.user_id is not None
        if self.turn is not None:
            await self.chat.cancel(self.turn)
            return
        try:
            cancelled = await self.chat.request_cancel(self.principal.user_id)
        except REFUSALS as exc:
            await self.send(error_frame(exc))
            return
        if not cancelled:
            await self.send(error_frame(no_turn()))

    async def start_turn(self, content: str, thread_id: uuid.UUID | None) -> None:
        assert self.principal is not None and self.principal.user_id is not None
        if self.token_expired():
            await self.error("token_expired", 'send {"type": "auth"} with a fresh token', 401)
            return
        try:
            if self.turn is not None:
                raise turn_in_progress()
            validate_content(content, self.max_message_bytes)
            self.turn = await self.chat.start(self.principal.user_id, content, thread_id)
        except REFUSALS as exc:
            await self.send(error_frame(exc))
            return
        except Exception:
            # Over HTTP this is a 500 problem; here the socket stays open for the next message.
            logger.exception("could not start a turn over WebSocket")
            await self.send(error_frame(DomainError("internal")))
            return
        self.forwarder = asyncio.create_task(self.forward(self.turn))

    async def attach(self, turn_id: uuid.UUID | None, after: int, thread_id: uuid.UUID | None) -> None:
        """Follow a turn started elsewhere (another device, socket or replica) from the event after ``after``."""
        assert self.principal is not None and self.principal.user_id is not None
        user_id = self.principal.user_id
        try:
            if self.forwarder is not None and not self.forwarder.done():
                raise turn_in_progress()
            turn_id = turn_id or await journal.running_turn(self.chat.db, user_id, thread_id)
            if turn_id is None:
                raise no_turn()
            await journal.check_resumable(self.chat.db, user_id, turn_id)
        except REFUSALS as exc:
            await self.send(error_frame(exc))
            return
        self.forwarder = asyncio.create_task(self.follow(turn_id, after))

    async def follow(self, turn_id: uuid.UUID, after: int) -> None:
        async for seq, name, data in journal.follow(self.chat.db, turn_id, after):
            name, data = present((name, data))
            await self.send({"type": name, "id": seq, **data})

    async def forward(self, turn: Turn) -> None:
        try:
            async for seq, name, data in turn.events():
                if name == "done":
                    self.turn = None  # the next message may start as soon as the client has the done
                name, data = present((name, data))
                await self.send({"type": name, "id": seq, **data})
        finally:
            self.turn = None

    async def close(self) -> None:
        # On every way out of run(): the socket's places are given back first, before anything can be awaited.
        if self.counted_for is not None:
            OPEN_SOCKETS.close_for(self.counted_for)
            self.counted_for = None
        if self.counted:
            OPEN_SOCKETS.close()
            self.counted = False
        # The turn itself is not cancelled: it finishes and is stored without a listener.
        if self.forwarder is not None:
            self.forwarder.cancel()


@websocket("/api/v1/chat/stream", name="chat_stream")
async def chat_stream(
    socket: WebSocket[Any, Any, Any],
    chat: NamedDependency[ChatService],
    tokens: NamedDependency[TokenVerifier],
    settings: NamedDependency[Settings],
) -> None:
    """Chat over WebSocket (first message authenticates). See the module docstring for the protocol."""
    session = ChatSocket(socket, chat, tokens, settings)
    try:
        await session.run()
    except WebSocketDisconnect:
        pass
    finally:
        await session.close()
