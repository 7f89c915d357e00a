"""A TCP pass-through in front of Letta that stamps streamed turns on the benchmark's clock.

Letta's own time to first token varies by tens of milliseconds from turn to turn on this machine, more
than the few milliseconds the service adds, so comparing end-to-end times of two paths needs many turns
and still wobbles. Both paths (the service, and the benchmark calling Letta directly) reach Letta through
this tap, which notes for every streamed turn (``POST /v1/agents/{id}/messages`` or
``/v1/conversations/{id}/messages``) when the whole request
had passed through, when the first ``assistant_message`` came back and when the stream ended. A client's time minus
Letta's part (first assistant event - request) is what that path adds around Letta; the tap's own hop is in
both paths alike.

It runs in its own process (a thread would wait for the benchmark's GIL, and the stack boots synchronously
while the service must reach Letta through it from the start) and sends each finished mark back through a
pipe. ``time.perf_counter`` is CLOCK_MONOTONIC: one clock for every process on the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import re
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection

# letta-client posts a streamed turn to /messages with "streaming": true (Letta also serves /messages/stream), to
# the agent's own history or to one of its conversations (a thread).
STREAM_REQUEST = re.compile(rb"POST /v1/(?:agents|conversations)/[^/ ]+/messages(?:/stream)? HTTP/1")
CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
FIRST_ASSISTANT = b'"message_type":"assistant_message"'
END_OF_STREAM = b"data: [DONE]"
# Bytes kept from the previous read, so a marker split across two reads is still found.
_OVERLAP = 128


@dataclass
class StreamMark:
    """One streamed turn as the tap saw it (perf_counter seconds)."""

    requested: float
    first_assistant: float | None = None
    ended: float | None = None

    @property
    def letta_first(self) -> float | None:
        """Letta's own time to the first assistant token, as seen at the tap."""
        return None if self.first_assistant is None else self.first_assistant - self.requested

    @property
    def letta_total(self) -> float | None:
        return None if self.ended is None else self.ended - self.requested


class LettaTap:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.marks: list[StreamMark] = []
        self._pipe, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(upstream_host, upstream_port, child), name="letta-tap", daemon=True
        )
        self.port = 0

    def start(self) -> LettaTap:
        self._process.start()
        if not self._pipe.poll(30):
            raise RuntimeError("the Letta tap did not start")
        self.port = self._pipe.recv()
        return self

    def stop(self) -> None:
        self._process.terminate()
        self._process.join(timeout=5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def mark_after(self, started: float, wait_seconds: float = 2.0) -> StreamMark:
        """The one turn request that passed through after ``started`` (turns never overlap here)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            while self._pipe.poll():
                self.marks.append(StreamMark(*self._pipe.recv()))
            found = [m for m in self.marks if m.requested >= started]
            if found or time.monotonic() > deadline:
                break
            self._pipe.poll(0.01)
        if len(found) != 1:
            raise RuntimeError(f"expected one Letta turn request after the turn started, saw {len(found)}")
        return found[0]


def _serve(upstream_host: str, upstream_port: int, pipe: Connection) -> None:
    asyncio.run(_Tap(upstream_host, upstream_port, pipe).serve())


class _Tap:
    """The tap's process: forwards bytes both ways and reports each turn once its stream ended."""

    def __init__(self, upstream_host: str, upstream_port: int, pipe: Connection) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.pipe = pipe

    async def serve(self) -> None:
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.pipe.send(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    def report(self, mark: StreamMark) -> None:
        self.pipe.send((mark.requested, mark.first_assistant, mark.ended))

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        current: list[StreamMark] = []  # the connection's latest turn request (keep-alive reuses it)

        async def requests() -> None:
            # HTTP/1.1 request framing: a head, then Content-Length bytes of body. A turn is stamped when its
            # whole request has passed (a client may send the body in a later segment than the head).
            head = b""
            body_left = 0
            turn: StreamMark | None = None
            while data := await client_reader.read(65536):
                now = time.perf_counter()
                upstream_writer.write(data)
                rest = data
                while rest:
                    if body_left:
                        taken = min(body_left, len(rest))
                        body_left, rest = body_left - taken, rest[taken:]
                    else:
                        head += rest
                        end = head.find(b"\r\n\r\n")
                        if end < 0:
                            break
                        block, rest, head = head[: end + 4], head[end + 4 :], b""
                        found = CONTENT_LENGTH.search(block)
                        body_left = int(found[1]) if found else 0
                        if STREAM_REQUEST.match(block):
                            if current:  # the previous turn on this connection never ended: report what it got
                                self.report(current[0])
                            turn = StreamMark(requested=math.nan)
                            current[:] = [turn]
                    if turn is not None and not body_left:
                        turn.requested, turn = now, None
                await upstream_writer.drain()
            upstream_writer.write_eof()

        async def responses() -> None:
            tail, tail_of = b"", None
            while data := await upstream_reader.read(65536):
                now = time.perf_counter()
                mark = current[0] if current else None
                window = (tail if tail_of is mark else b"") + data  # never carry a marker into the next request
                if mark is not None:
                    if mark.first_assistant is None and FIRST_ASSISTANT in window:
                        mark.first_assistant = now
                    if mark.ended is None and END_OF_STREAM in window:
                        mark.ended = now
                        current.clear()
                        self.report(mark)
                client_writer.write(data)
                await client_writer.drain()
                tail, tail_of = window[-_OVERLAP:], mark

        pumps = [asyncio.create_task(requests()), asyncio.create_task(responses())]
        with contextlib.suppress(OSError, ConnectionError):
            await asyncio.gather(*pumps)
        for pump in pumps:
            pump.cancel()
        upstream_writer.close()
        client_writer.close()
