"""Letta's streamed turn: its Server-Sent Events parsed with msgspec into the fields the service reads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

import httpx
import letta_client
import msgspec

from service.clients.errors import UpstreamError
from service.observability.upstream import first_token

SERVICE = "letta"
logger = logging.getLogger("service.letta")
# A busy Letta may take long to start a turn (it queues for the LLM and its database); once streaming, it
# sends keep-alive pings, so a long read timeout never holds a dead connection for long.
STREAM_TIMEOUT = httpx.Timeout(connect=5.0, read=120.0, write=30.0, pool=30.0)


def translate(exc: Exception) -> UpstreamError:
    """An SDK or httpx error as ``UpstreamError``."""
    if isinstance(exc, letta_client.APIStatusError):
        return UpstreamError.from_status(SERVICE, exc.status_code, str(exc)[:2000])
    # The SDK wraps httpx's error: look at that. A connect timeout never reached Letta; any other timeout came
    # after the request went out, and Letta may still act on it.
    transport = exc.__cause__ if isinstance(exc, letta_client.APIConnectionError) and exc.__cause__ else exc
    timed_out = isinstance(transport, httpx.TimeoutException | letta_client.APITimeoutError) and not isinstance(
        transport, httpx.ConnectTimeout
    )
    return UpstreamError.from_transport(SERVICE, exc, timed_out=timed_out)


def text_of(content: Any) -> str:
    """The text of a Letta message's content: a string, or a list of parts with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(getattr(part, "text", "") or "" for part in content)
    return ""


class ToolCall(msgspec.Struct):
    name: str | None = None
    arguments: str | None = None
    tool_call_id: str | None = None


class ContentPart(msgspec.Struct):
    text: str | None = None


class LettaEvent(msgspec.Struct):
    """One event of Letta's stream: the fields the service reads, whatever the ``message_type``."""

    message_type: str | None = None
    id: str | None = None
    run_id: str | None = None
    seq_id: int | None = None
    content: str | list[ContentPart] | None = None
    tool_call: ToolCall | None = None
    tool_calls: list[ToolCall] | ToolCall | None = None  # a list, or one delta while token streaming
    name: str | None = None
    status: str | None = None
    tool_call_id: str | None = None
    tool_return: Any = None
    stop_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    step_count: int | None = None
    error_type: str | None = None
    message: str | None = None
    detail: str | None = None


_decode_event = msgspec.json.Decoder(LettaEvent).decode


# SSE lines end at CR LF, LF or CR only. Split as bytes: those bytes never occur inside a UTF-8 sequence, and JSON
# encoders leave U+2028, U+0085 and the like raw inside strings (a text splitter such as httpx's ``aiter_lines`` ends
# lines there too: a delta holding one would be cut in two and lost).
_LINE_END = re.compile(rb"\r\n|\r|\n")


class LettaStream:
    """Letta's Server-Sent Events as ``LettaEvent``s, until ``data: [DONE]``.

    An ``event: error`` (Letta's in-stream failure) raises ``UpstreamError`` with the stream's status, and
    transport failures raise transient ones.

    The body's bytes are split into lines here, in the one generator that parses them, straight from the
    transport's byte stream: httpx's text iteration (``aiter_text`` over ``aiter_bytes`` over ``aiter_raw``) adds
    three async generators, each with its own decoder or buffer, held for as long as the stream is open (~4 KiB
    for every open chat stream).
    """

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        stream = response.stream
        # Letta does not compress its streams; a body that is compressed anyway (a proxy) is decoded by httpx.
        identity = response.headers.get("content-encoding", "identity") == "identity"
        self._chunks: AsyncIterable[bytes] = (
            stream if identity and isinstance(stream, httpx.AsyncByteStream) else response.aiter_bytes()
        )
        self._kind = b""  # the current event's ``event:`` field
        self._finished = False  # [DONE] was read
        self._closed = False
        self.first_token_at: float | None = None  # time.perf_counter() when the reply's first token came

    async def __aiter__(self) -> AsyncIterator[LettaEvent]:
        pending = b""
        try:
            async for chunk in self._chunks:
                text = pending + chunk
                # A CR at the end may be the first half of a CR LF: keep it for the next chunk.
                held = b"\r" if text.endswith(b"\r") else b""
                *lines, pending = _LINE_END.split(text.removesuffix(held))
                pending += held
                for line in lines:
                    event = self._read(line)
                    if self._finished:
                        return
                    if event is not None:
                        yield event
            if pending and (event := self._read(pending.removesuffix(b"\r"))) is not None:
                yield event
        except httpx.HTTPError as exc:
            raise translate(exc) from exc

    def _read(self, line: bytes) -> LettaEvent | None:
        """One line of the stream: the event it completes, if any."""
        if line.startswith(b"event:"):
            self._kind = line[6:].strip()
        elif line.startswith(b"data:"):
            data = line[5:].strip()
            if data == b"[DONE]":
                self._finished = True
                return None
            if self._kind == b"error":
                raise UpstreamError(
                    SERVICE,
                    f"HTTP {self._response.status_code}: {data[:2000].decode(errors='replace')}",
                    status=self._response.status_code,
                    transient=False,
                )
            try:
                event = _decode_event(data)
            except msgspec.DecodeError as exc:
                # A shape we do not know must not end the turn: skip it, and say so.
                logger.warning("skipped an unreadable Letta event", extra={"error": str(exc)})
                return None
            if self.first_token_at is None and event.message_type == "assistant_message" and event.content:
                self.first_token_at = first_token(self._response)  # metrics and traces
            return event
        elif not line:
            self._kind = b""
        return None

    async def close(self) -> None:
        """Release the response. After [DONE], Letta still finishes its run before it ends the body (~100 ms):
        that rest is read in the background, so the turn is not held up and the connection, read to its end,
        goes back to the pool (closed mid-body, it would be dropped and the next turn would open a new one)."""
        if self._closed:  # a cancel and the turn's own clean-up may both close it
            return
        self._closed = True
        if not self._finished:
            await self._response.aclose()
            return
        task = asyncio.get_running_loop().create_task(self._drain())
        _draining.add(task)
        task.add_done_callback(_draining.discard)

    async def _drain(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(DRAIN_SECONDS):
                async for _ in self._chunks:
                    pass
        with contextlib.suppress(Exception):
            await self._response.aclose()


# How long a finished stream may take to end its body before its connection is dropped instead.
DRAIN_SECONDS = 10.0
_draining: set[asyncio.Task[None]] = set()  # strong references: the event loop keeps only weak ones
