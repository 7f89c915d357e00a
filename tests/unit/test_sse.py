"""The SSE framing of a turn's events (service.chat.sse.sse_stream)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from service.chat import sse
from service.chat.service import Turn
from service.users.profiles import ReadyProfile


def a_turn(turn_id: uuid.UUID | None = None) -> Turn:
    """A turn driven by hand (no journal): its events are emitted by the test."""
    profile = ReadyProfile(id=uuid.uuid4(), email=None, display_name=None, agent_id="agent-1", model=None)
    return Turn(turn_id or uuid.uuid4(), uuid.uuid4(), profile, uuid.uuid4())


async def test_a_quiet_stream_gets_keep_alive_comments_then_the_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.05)
    turn = a_turn()
    stream = sse.sse_stream(turn)

    assert await anext(stream) == b": keep-alive\n\n"
    assert await anext(stream) == b": keep-alive\n\n"  # a wait cut by the keep-alive left nothing behind
    turn.emit(("delta", {"text": "Hi"}))
    assert await anext(stream) == b'id: 1\nevent: delta\ndata: {"text":"Hi"}\n\n'
    turn.end()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_events_already_emitted_go_out_in_one_write() -> None:
    turn = a_turn()
    for event in [("delta", {"text": "a"}), ("delta", {"text": "b"}), ("done", {"status": "complete"})]:
        turn.emit(event)
    turn.end()

    chunks = [chunk async for chunk in sse.sse_stream(turn)]

    assert chunks == [
        b'id: 1\nevent: delta\ndata: {"text":"a"}\n\nid: 2\nevent: delta\ndata: {"text":"b"}\n\n'
        b'id: 3\nevent: done\ndata: {"status":"complete"}\n\n'
    ]


async def test_a_listener_that_fell_behind_gets_what_came_meanwhile_together_and_nothing_twice() -> None:
    turn = a_turn()
    listener = sse.batches(turn)
    waiting = asyncio.ensure_future(anext(listener))
    await asyncio.sleep(0)  # the listener waits
    turn.emit(("delta", {"text": "a"}))
    assert await waiting == ([(1, "delta", {"text": "a"})], False)
    turn.emit(("delta", {"text": "b"}))  # while the listener writes
    turn.emit(("delta", {"text": "c"}))
    assert await anext(listener) == ([(2, "delta", {"text": "b"}), (3, "delta", {"text": "c"})], False)
    waiting = asyncio.ensure_future(anext(listener))
    await asyncio.sleep(0)
    turn.end()  # no event after the last batch
    assert await waiting == ([], True)
    with pytest.raises(StopAsyncIteration):
        await anext(listener)


async def test_the_events_one_by_one_until_the_turn_ends() -> None:
    turn = a_turn()
    taken: list[str] = []

    async def listen() -> None:
        async for _, name, _ in turn.events():
            taken.append(name)

    listening = asyncio.ensure_future(listen())
    await asyncio.sleep(0)
    turn.emit(("turn", {}))
    await asyncio.sleep(0)
    turn.emit(("delta", {"text": "a"}))
    turn.emit(("done", {"status": "complete"}))
    turn.end()
    await asyncio.wait_for(listening, timeout=1)
    assert taken == ["turn", "delta", "done"]
