"""Fixtures the unit modules share."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """One client per module: building one loads the CA bundle (~80 ms). pytest-httpx patches the transport
    class, so each test's ``httpx_mock`` still sees every request."""
    async with httpx.AsyncClient() as client:
        yield client


# What a test socket does with one connection (``serve``): a stand-in for a server that misbehaves on purpose.
Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Behaviour], Awaitable[str]]]:
    """Starts a loopback socket that runs a ``Behaviour`` per connection; returns its URL. Closed after the test."""
    servers: list[asyncio.Server] = []

    async def start(behaviour: Behaviour) -> str:
        server = await asyncio.start_server(behaviour, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()
