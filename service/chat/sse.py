"""A turn's events on the wire: Server-Sent Events framing, and the sentence an ``error`` event carries.

Hand-written rather than Litestar's ``ServerSentEvent``: events already emitted go out in one socket write,
and the framing costs nothing on the path to the first token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import msgspec

from service.chat.events import Event
from service.chat.journal import Numbered
from service.chat.service import Turn
from service.web.problems import sentence

KEEPALIVE_SECONDS = 15.0
KEEPALIVE = b": keep-alive\n\n"  # an SSE comment: proxies see traffic, clients ignore it
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def present(event: Event) -> Event:
    """The event as clients receive it: an ``error`` gets the user-facing sentence of its code."""
    name, data = event
    if name == "error":
        return name, {**data, "message": sentence(data["code"])}
    return event


def sse(event: Numbered) -> bytes:
    """One event: its id (what a client sends back as ``Last-Event-ID`` to resume after it), name and data."""
    seq, name, data = event
    name, data = present((name, data))
    return b"id: %d\nevent: " % seq + name.encode() + b"\ndata: " + msgspec.json.encode(data) + b"\n\n"


async def batches(turn: Turn) -> AsyncIterator[tuple[list[Numbered], bool] | None]:
    """A live turn's events as they come: those emitted since the last batch together (one socket write, not one
    per token, for a listener that fell behind), with whether the turn ended after them; ``None`` after
    ``KEEPALIVE_SECONDS`` of quiet (time for a keep-alive)."""
    while True:
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for wraps every wait in a new task, on the token path.
            async with asyncio.timeout(KEEPALIVE_SECONDS):
                batch = await turn.take()
        except TimeoutError:
            yield None
            continue
        yield batch
        if batch[1]:
            return


async def paced(events: AsyncIterator[Numbered]) -> AsyncIterator[Numbered | None]:
    """A journal's events (a resumed stream) as they come; ``None`` after ``KEEPALIVE_SECONDS`` of quiet."""
    pending: asyncio.Task[Numbered] | None = None
    iterator = aiter(events)
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_SECONDS)
            if not done:
                yield None
                continue
            try:
                event = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield event
    finally:
        if pending is not None:
            pending.cancel()


async def sse_stream(turn: Turn) -> AsyncIterator[bytes]:
    """The turn's events as SSE, with keep-alive comments so proxies do not cut a quiet stream.

    Events already emitted are written together. If the client goes away this generator is cancelled; the turn
    itself keeps running and is stored.
    """
    async for batch in batches(turn):
        if batch is None:
            yield KEEPALIVE
        elif batch[0]:
            yield b"".join(sse(event) for event in batch[0])


async def sse_replay(events: AsyncIterator[Numbered]) -> AsyncIterator[bytes]:
    """A resumed stream: the journal's events as SSE, with keep-alive comments while the turn is quiet."""
    async for event in paced(events):
        yield KEEPALIVE if event is None else sse(event)
