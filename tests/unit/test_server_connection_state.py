"""What ``service.web.server`` keeps per connection instead of uvicorn's eager deques: the flow control and the
pipeline queue behave as uvicorn's own, on a real asyncio transport."""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import AsyncIterator

import pytest
from uvicorn.protocols.http.flow_control import FlowControl as UvicornFlowControl

from service.web.server import FlowControl, Pipeline


@pytest.fixture
async def transport() -> AsyncIterator[asyncio.Transport]:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    yield transport
    transport.close()
    theirs.close()


async def test_no_event_until_writing_pauses_and_drain_waits_for_the_resume(transport: asyncio.Transport) -> None:
    flow = FlowControl(transport)
    assert flow._writable is None
    await asyncio.wait_for(flow.drain(), timeout=1)  # never paused: nothing to wait for
    flow.pause_writing()
    assert flow.write_paused
    drained = asyncio.ensure_future(flow.drain())
    await asyncio.sleep(0.05)
    assert not drained.done()
    flow.resume_writing()
    await asyncio.wait_for(drained, timeout=1)
    flow.resume_writing()  # uvicorn calls it again when the connection is lost
    assert not flow.write_paused


async def test_reading_is_paused_and_resumed_as_uvicorn_does(transport: asyncio.Transport) -> None:
    flow = FlowControl(transport)
    assert isinstance(flow, UvicornFlowControl)
    flow.pause_reading()
    assert flow.read_paused and not transport.is_reading()
    flow.resume_reading()
    assert not flow.read_paused and transport.is_reading()


def test_the_pipeline_hands_requests_out_first_in_first_out_as_uvicorns_deque() -> None:
    ours, theirs = Pipeline(), collections.deque[tuple[str, str]]()
    assert not ours
    for request in [("cycle-1", "app"), ("cycle-2", "app"), ("cycle-3", "app")]:
        ours.appendleft(request)
        theirs.appendleft(request)
    assert (
        [ours.pop() for _ in range(3)]
        == [theirs.pop() for _ in range(3)]
        == [
            ("cycle-1", "app"),
            ("cycle-2", "app"),
            ("cycle-3", "app"),
        ]
    )
    assert not ours
