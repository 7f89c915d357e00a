"""The HTTP server: uvicorn, with a bound on what one client can make a replica hold.

``run`` starts uvicorn with

- ``ws_max_size`` = the WebSocket frame cap (``MAX_FRAME_BYTES``, 256 KiB): a larger message is refused by the
  protocol as soon as its frame header announces it (close 1009), before any of it is buffered; and ``ws=``
  ``WebSocketProtocol``, which caps a socket's first message lower (``MAX_FIRST_FRAME_BYTES``, 16 KiB: the chat
  socket's auth frame), so that a client that has not authenticated can make the server hold no more than that;
- ``limit_concurrency`` = ``SERVER_MAX_CONNECTIONS``: open connections (WebSockets included) and running
  requests; a request or WebSocket handshake over it gets a 503 ``server_busy`` problem;
- ``timeout_keep_alive`` = ``SERVER_KEEPALIVE_SECONDS``: an idle keep-alive connection is closed;
- ``http=`` ``HttpProtocol``, uvicorn's httptools protocol (the one ``uvicorn[standard]`` uses) with what
  uvicorn lacks: a deadline for the request head (``SERVER_HEADER_TIMEOUT_SECONDS``, counted from the
  connection's start, or on a kept-alive connection from the first byte after a response, the idle time before
  it being uvicorn's keep-alive: 408 ``request_timeout``, or a plain close when not a byte of a request came),
  a size cap for the head (target 16 KiB: 414 ``uri_too_long``; head 64 KiB: 431
  ``headers_too_large``; uvicorn keeps any number of header bytes), and its own refusals answered as RFC 9457
  problem details with a fixed sentence and no echo of the input: those, uvicorn's 400 for bytes that are not
  HTTP/1.1 (``bad_request``, ``text/plain`` in uvicorn), and the 503. A connection's flow control and its queue of
  pipelined requests are made without uvicorn's up-front deques (``FlowControl``, ``Pipeline``): ~1.6 KiB less
  for every open connection, a chat stream included.

After such an answer the connection is half-closed and what the client still sends is read and dropped for
a moment (a lingering close), so that the answer reaches a client still sending instead of being lost to a
TCP reset. Request bodies are bounded by Litestar (``HTTP_MAX_BODY_BYTES``, see ``service.app``).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from asyncio import TimerHandle
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import msgspec
import uvicorn
from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http import flow_control
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from service.chat.websocket import MAX_FIRST_FRAME_BYTES, MAX_FRAME_BYTES
from service.observability.collector import watch_server_connections
from service.settings import Settings
from service.web.problems import ERRORS, PROBLEM_JSON, problem_body

logger = logging.getLogger("service.server")

MAX_TARGET_BYTES = 16 * 1024  # the request target (path and query)
MAX_HEAD_BYTES = 64 * 1024  # the request target and every header name and value
LINGER_SECONDS = 2.0  # after a refusal: how long what the client still sends is read and dropped ...
LINGER_BYTES = 1024 * 1024  # ... and how much of it, at most
WS_PING_SECONDS = 20.0


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request the server answers itself, with this problem, before closing the connection."""

    status: int
    code: str
    detail: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


class _StopParsing(Exception):
    """Raised in a parser callback to stop httptools; ``HttpProtocol.refusal`` says what to answer."""


def refusal(code: str, detail: str | None = None) -> Refusal:
    """The refusal of ``code`` in ``service.web.problems.ERRORS`` (its status, sentence and Retry-After)."""
    spec = ERRORS[code]
    headers = ((b"retry-after", str(spec.retry_after).encode()),) if spec.retry_after is not None else ()
    return Refusal(spec.status, code, detail or spec.sentence, headers)


BAD_REQUEST = refusal("bad_request")
TARGET_TOO_LONG = refusal("uri_too_long", f"the request target is longer than {MAX_TARGET_BYTES} bytes")
HEAD_TOO_LARGE = refusal("headers_too_large", f"the request head is larger than {MAX_HEAD_BYTES} bytes")
BUSY = refusal("server_busy")


def head_timeout(seconds: float) -> Refusal:
    return refusal("request_timeout", f"the request head did not arrive within {seconds:g} s")


def problem(refusal: Refusal) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The headers (``Content-Length`` included) and body of ``refusal``'s problem details."""
    # A fresh context: the request id minted here must not stay in the event loop's context.
    body = contextvars.Context().run(
        problem_body, refusal.status, HTTPStatus(refusal.status).phrase, refusal.detail, None, code=refusal.code
    )
    content = msgspec.json.encode(body)
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(content)).encode()),
        (b"x-request-id", str(body["request_id"]).encode()),
        (b"connection", b"close"),
        *refusal.headers,
    ]
    return headers, content


async def server_busy(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """The ASGI app a request gets when the server is at ``limit_concurrency``."""
    headers, content = problem(BUSY)
    await send({"type": "http.response.start", "status": BUSY.status, "headers": headers})
    await send({"type": "http.response.body", "body": content, "more_body": False})


class FlowControl(flow_control.FlowControl):
    """uvicorn's flow control, with its ``asyncio.Event`` made when the transport first pauses writing (most
    connections never do) instead of with every connection: an event holds a deque, 760 bytes."""

    def __init__(self, transport: asyncio.Transport) -> None:  # not the parent's: it makes the event
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._writable: asyncio.Event | None = None

    async def drain(self) -> None:
        if self._writable is not None:
            await self._writable.wait()

    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            self._writable = self._writable or asyncio.Event()
            self._writable.clear()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            if self._writable is not None:
                self._writable.set()


class Pipeline(list[tuple[Any, Any]]):
    """uvicorn's queue of a connection's pipelined requests, as a list: it is almost always empty, and an empty
    deque is 760 bytes, for every open connection."""

    def appendleft(self, item: tuple[Any, Any]) -> None:
        self.insert(0, item)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a request-head deadline and size cap, and problem-details refusals.

    ``header_timeout_seconds`` is set by ``protocol_class``."""

    header_timeout_seconds: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = Pipeline()  # type: ignore[assignment]
        self.head_timer: TimerHandle | None = None
        self.head_started = False  # a byte of the awaited request head has arrived
        self.target_bytes = 0
        self.head_bytes = 0
        self.refusal: Refusal | None = None
        self.refused = False  # answered and half-closed: what still arrives is dropped
        self.dropped_bytes = 0
        watch_server_connections(self.connections)  # uvicorn's set, one per server: counted by each metrics scrape

    # -- the request-head deadline --------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.flow = FlowControl(transport)
        self.await_head()

    def await_head(self) -> None:
        self.cancel_head_timer()
        self.head_timer = self.loop.call_later(self.header_timeout_seconds, self.head_timed_out)

    def cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        if not self.head_started:  # an idle connection: nothing to answer
            self.transport.close()
            return
        logger.info("request head timed out", extra={"client": _address(self.client)})
        self.refuse(head_timeout(self.header_timeout_seconds))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_started = True
        self.target_bytes = 0
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.target_bytes += len(url)
        self.head_bytes += len(url)
        if self.target_bytes > MAX_TARGET_BYTES:
            self.stop_parsing(TARGET_TOO_LONG)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD_BYTES:
            self.stop_parsing(HEAD_TOO_LARGE)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.cancel_head_timer()
        self.head_started = False
        upgrade = self.parser.should_upgrade() and self._should_upgrade()
        if upgrade or not self.at_capacity():
            super().on_headers_complete()
            return
        logger.warning("connection limit reached", extra={"limit": self.limit_concurrency})
        # uvicorn's own check answers text/plain: this request runs ``server_busy`` instead, through uvicorn's
        # request cycle (which closes the connection after it, as the answer says).
        app, limit = self.app, self.limit_concurrency
        self.app, self.limit_concurrency = server_busy, None
        try:
            super().on_headers_complete()
        finally:
            self.app, self.limit_concurrency = app, limit

    def at_capacity(self) -> bool:
        limit = self.limit_concurrency
        return limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit)

    def handle_websocket_upgrade(self) -> None:
        # uvicorn hands a WebSocket handshake over without its concurrency check.
        if self.at_capacity():
            logger.warning("connection limit reached", extra={"limit": self.limit_concurrency})
            self.refuse(BUSY)
            return
        super().handle_websocket_upgrade()

    # -- refusals ---------------------------------------------------------------------------------------------
    def stop_parsing(self, refusal: Refusal) -> None:
        """In a parser callback: httptools stops with an error, and uvicorn calls ``send_400_response``."""
        self.refusal = refusal
        raise _StopParsing(refusal.code)

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn when the parser fails: bytes that are not HTTP/1.1, or a ``Refusal`` raised above."""
        cause = self.refusal or BAD_REQUEST
        self.refusal = None
        self.refuse(cause)

    def refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` as problem details, then half-close and drop what still arrives for a moment."""
        if self.refused or self.transport.is_closing():
            return
        self.refused = True
        self.cancel_head_timer()
        self._unset_keepalive_if_required()
        if self.cycle is not None and not self.cycle.response_complete:
            # A request of this connection is still being answered: no second answer can go in between.
            self.transport.close()
            return
        headers, content = problem(refusal)
        head = [b"HTTP/1.1 %d %s\r\n" % (refusal.status, HTTPStatus(refusal.status).phrase.encode())]
        head += [name + b": " + value + b"\r\n" for name, value in [*self.server_state.default_headers, *headers]]
        self.transport.write(b"".join([*head, b"\r\n", content]))
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            self.dropped_bytes += len(data)
            if self.dropped_bytes > LINGER_BYTES:
                self.transport.close()
            return
        if self.head_timer is None and (self.cycle is None or self.cycle.response_complete):
            # The first bytes after a response: uvicorn's keep-alive timer stops here, the head's deadline starts.
            self.await_head()
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_head_timer()
        super().connection_lost(exc)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets (sans-I/O) protocol with the first message capped at ``MAX_FIRST_FRAME_BYTES``: the
    only WebSocket route, the chat socket, takes an auth frame first and closes the socket on anything else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn.max_size = MAX_FIRST_FRAME_BYTES  # read by the parser at each frame's header

    def send_receive_event_to_app(self) -> None:
        super().send_receive_event_to_app()
        self.conn.max_size = self.config.ws_max_size


def protocol_class(settings: Settings) -> type[HttpProtocol]:
    """``HttpProtocol`` with this deployment's request-head deadline (uvicorn takes a class, not an instance)."""

    class ConfiguredHttpProtocol(HttpProtocol):
        header_timeout_seconds = settings.server_header_timeout_seconds

    return ConfiguredHttpProtocol


def _address(client: tuple[str, int] | None) -> str | None:
    return f"{client[0]}:{client[1]}" if client else None


def run(settings: Settings) -> None:
    """Serve ``service.app:create_app`` on HOST:PORT with the limits above, until SIGINT/SIGTERM."""
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=True,
        http=protocol_class(settings),
        ws=WebSocketProtocol,
        ws_max_size=MAX_FRAME_BYTES,
        ws_ping_interval=WS_PING_SECONDS,
        ws_ping_timeout=WS_PING_SECONDS,
        limit_concurrency=settings.server_max_connections,
        timeout_keep_alive=settings.server_keepalive_seconds,
    )


__all__ = ["HttpProtocol", "Refusal", "WebSocketProtocol", "protocol_class", "run"]
