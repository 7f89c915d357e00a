"""The SSE framing of a turn's events (service.chat.sse.sse_stream)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from service.chat import sse


async def test_a_quiet_stream_gets_keep_alive_comments_then_the_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.05)
    queue: asyncio.Queue = asyncio.Queue()
    stream = sse.sse_stream(SimpleNamespace(queue=queue))  # type: ignore[arg-type]

    assert await anext(stream) == b": keep-alive\n\n"
    assert await anext(stream) == b": keep-alive\n\n"
    queue.put_nowait((1, "delta", {"text": "Hi"}))
    assert await anext(stream) == b'id: 1\nevent: delta\ndata: {"text":"Hi"}\n\n'
    queue.put_nowait(None)
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_events_already_queued_go_out_in_one_write() -> None:
    queue: asyncio.Queue = asyncio.Queue()
    for event in [(1, "delta", {"text": "a"}), (2, "delta", {"text": "b"}), (3, "done", {"status": "complete"}), None]:
        queue.put_nowait(event)

    chunks = [chunk async for chunk in sse.sse_stream(SimpleNamespace(queue=queue))]  # type: ignore[arg-type]

    assert chunks == [
        b'id: 1\nevent: delta\ndata: {"text":"a"}\n\nid: 2\nevent: delta\ndata: {"text":"b"}\n\n'
        b'id: 3\nevent: done\ndata: {"status":"complete"}\n\n'
    ]
