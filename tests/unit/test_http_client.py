"""The pooled HTTP client (httpx on aiohttp's transport) against real loopback sockets: what a success and
each kind of failure look like to the code above it, which only knows httpx's exceptions."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from service.clients.errors import UpstreamError
from service.clients.http import http_client
from service.clients.letta import LettaClient

OTID = "0c4d2e1f-0000-4000-8000-000000000003"  # the stored user message id a turn carries

OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=5)
    async with http_client(limits=limits, timeout=httpx.Timeout(5.0, read=0.3)) as client:
        yield client


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_answers_and_reuses_one_connection(http: httpx.AsyncClient, serve) -> None:  # type: ignore[no-untyped-def]
    connections = 0

    async def ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(OK)
            await writer.drain()

    url = await serve(ok)
    for _ in range(3):
        response = await http.get(url)
        assert (response.status_code, response.text) == (200, "ok")
    assert connections == 1


async def test_a_refused_connection_is_a_connect_error(http: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ConnectError):
        await http.get(f"http://127.0.0.1:{unused_port()}/")


async def test_a_server_that_closes_without_answering_is_a_protocol_error(http: httpx.AsyncClient, serve) -> None:  # type: ignore[no-untyped-def]
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    with pytest.raises(httpx.RemoteProtocolError):
        await http.get(await serve(hang_up))


async def test_no_answer_in_time_is_a_read_timeout(http: httpx.AsyncClient, serve) -> None:  # type: ignore[no-untyped-def]
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    with pytest.raises(httpx.ReadTimeout):
        await http.get(await serve(silent))


async def test_a_body_cut_short_is_a_read_error(http: httpx.AsyncClient, serve) -> None:  # type: ignore[no-untyped-def]
    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly a part")
        await writer.drain()
        writer.transport.abort()

    async with http.stream("GET", await serve(cut_short)) as response:
        with pytest.raises(httpx.ReadError):
            await response.aread()


async def test_letta_unreachable_is_a_connection_error_not_a_timeout(http: httpx.AsyncClient) -> None:
    letta = LettaClient(http, f"http://127.0.0.1:{unused_port()}", None)
    with pytest.raises(UpstreamError) as caught:
        await letta.open_stream(letta.turn_request("agent-x", "hi", OTID))
    assert caught.value.transient is True
    assert caught.value.timed_out is False  # nothing reached Letta: safe to retry (a 503, not a 504)
    assert "ConnectError" in str(caught.value) and "Timeout" not in str(caught.value)
