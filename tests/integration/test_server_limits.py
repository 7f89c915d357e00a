"""What one client can make a replica hold, against the real server: ``python -m service`` (uvicorn with
``service.web.server``'s protocol) as a process of its own, on a free port, with ``service_settings``' test
settings and small limits. One test per refusal: each is a problem (HTTP) or a close code with an error frame
(WebSocket), and nothing a client sends is buffered past its limit. Letta and LiteLLM are unreachable; none of
these requests needs them."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from devstack.keys import SigningKey
from service.settings import Settings
from tests.integration.support import ready_user, service_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HEADER_TIMEOUT = 1.0
SOCKETS_PER_USER = 2
MAX_CONNECTIONS = 4  # the "tight" server's


@dataclass
class Server:
    url: str
    port: int
    database_url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/chat/stream"


def environment(settings: Settings) -> dict[str, str]:
    """``settings`` as the environment variables that make them (``python -m service`` reads only those)."""
    env: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict):
            value = json.dumps(value)
        elif isinstance(value, list):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = str(value).lower()
        env[str(field.validation_alias)] = str(value)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(database_url: str, signing_key: SigningKey, log: Path, **env: str) -> Iterator[Server]:
    port = free_port()
    settings = service_settings(database_url, signing_key, PORT=str(port), LOG_LEVEL="info", **env)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service"],
            env={"PATH": os.environ.get("PATH", ""), **environment(settings)},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", port, database_url, process, log)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"python -m service exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{server.url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"python -m service did not start in 30 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(
    new_database: Callable[[], str], signing_key: SigningKey, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The service with a 1 s head deadline and 2 sockets per user; the other limits are the defaults."""
    yield from serve(
        new_database(),
        signing_key,
        tmp_path_factory.mktemp("service") / "service.log",
        SERVER_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        WS_MAX_SOCKETS_PER_USER=str(SOCKETS_PER_USER),
    )


@pytest.fixture(scope="module")
def tight_server(
    new_database: Callable[[], str], signing_key: SigningKey, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The service with room for 4 connections and 1 WebSocket."""
    yield from serve(
        new_database(),
        signing_key,
        tmp_path_factory.mktemp("tight") / "service.log",
        SERVER_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        WS_MAX_SOCKETS="1",
        SERVER_HEADER_TIMEOUT_SECONDS="30",
    )


# -- raw HTTP -----------------------------------------------------------------------------------------------
@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self, status: int, code: str) -> dict[str, Any]:
        assert self.status == status, (self.status, self.body)
        assert self.headers["content-type"] == "application/problem+json"
        body: dict[str, Any] = json.loads(self.body)
        assert body["status"] == status and body["code"] == code
        assert body["title"] and body["detail"]
        assert body["request_id"] == self.headers["x-request-id"]
        return body


async def read_response(reader: asyncio.StreamReader, timeout: float = 5.0) -> RawResponse | None:
    """The response on ``reader`` (with ``Content-Length``), or None if the connection closed without one."""
    async with asyncio.timeout(timeout):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            assert exc.partial == b"", exc.partial
            return None
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines if line)}
        body = await reader.readexactly(int(headers["content-length"]))
        return RawResponse(int(status_line.split()[1]), headers, body)


async def send_raw(server: Server, data: bytes) -> RawResponse | None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(data)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


async def closed_after(reader: asyncio.StreamReader, timeout: float) -> tuple[float, bytes]:
    """Seconds until the server closes the connection, and everything it sent before."""
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        data = await reader.read()
    return time.monotonic() - started, data


# -- raw WebSocket ------------------------------------------------------------------------------------------
async def ws_handshake(server: Server) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    key = base64.b64encode(os.urandom(16))
    writer.write(
        b"GET /api/v1/chat/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


def frame_header(opcode: int, length: int) -> bytes:
    """A masked frame's header announcing ``length`` bytes (the payload is not included)."""
    return struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length) + b"\x00\x00\x00\x00"


async def close_code(reader: asyncio.StreamReader) -> int:
    """The code of the close frame the server sends (skipping any other frame)."""
    async with asyncio.timeout(5):
        while True:
            first, second = await reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            payload = await reader.readexactly(length)
            if first & 0x0F == 0x8:
                return int(struct.unpack("!H", payload[:2])[0])


async def new_token(server: Server, signing_key: SigningKey) -> str:
    """The access token of a new user (profile pending: a socket needs no agent)."""
    _, headers = await ready_user(server.database_url, signing_key, ready=False)
    return headers["Authorization"].removeprefix("Bearer ")


async def authenticated(server: Server, token: str) -> ClientConnection:
    ws = await connect(server.ws_url, max_size=None)
    await ws.send(json.dumps({"type": "auth", "token": token}))
    frame = json.loads(await ws.recv())
    assert frame["type"] == "ready", frame
    return ws


async def refused(ws: ClientConnection) -> tuple[dict[str, Any], int | None]:
    """The error frame the server sent before closing, and the close code."""
    frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    return frame, ws.close_code


# -- frames and bodies ------------------------------------------------------------------------------------------
async def test_an_oversized_frame_before_authentication_is_closed_1009_before_it_is_sent(server: Server) -> None:
    reader, writer = await ws_handshake(server)
    try:
        # A text frame announcing 15 MiB, of which only the header and 1 KiB are sent: the server refuses it on
        # the header, without waiting for (or holding) the rest.
        writer.write(frame_header(0x1, 15 * 1024 * 1024) + b"x" * 1024)
        await writer.drain()
        assert await close_code(reader) == 1009
    finally:
        writer.close()


async def test_a_first_frame_over_16_kib_is_closed_1009(server: Server, signing_key: SigningKey) -> None:
    """Before it has authenticated, a socket can make the server hold no more than an auth frame."""
    token = await new_token(server, signing_key)
    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token, "padding": "x" * (16 * 1024)}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1009
    async with connect(server.ws_url) as ws:  # an auth frame just under it is read
        await ws.send(json.dumps({"type": "auth", "token": token}).ljust(16 * 1024))
        assert json.loads(await ws.recv())["type"] == "ready"


async def test_a_frame_just_over_256_kib_is_closed_1009_and_one_under_is_read(
    server: Server, signing_key: SigningKey
) -> None:
    token = await new_token(server, signing_key)
    ws = await authenticated(server, token)
    # Under the cap: read, and refused as a frame, not for its size (the socket stays open).
    await ws.send(json.dumps({"type": "ping", "padding": "x" * (200 * 1024)}))
    frame = json.loads(await ws.recv())
    assert frame["type"] == "error" and frame["code"] == "invalid_message"
    await ws.send(json.dumps({"type": "ping"}))
    assert json.loads(await ws.recv()) == {"type": "pong"}
    await ws.send("x" * (256 * 1024 + 1))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1009


async def test_an_oversized_body_is_a_413_problem(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        # Announced: refused on the Content-Length, before the body is read.
        body = b'{"email": "a@example.com", "password": "' + b"p" * (100 * 1024) + b'"}'
        response = await http.post("/api/v1/auth/register", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["status"] == 413 and response.json()["detail"]

        # Chunked, with no length: refused once 64 KiB have been read.
        async def chunks() -> Any:
            for _ in range(40):
                yield b"p" * 8192

        response = await http.post("/api/v1/auth/login", content=chunks(), headers={"Content-Type": "application/json"})
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_the_chat_message_route_keeps_its_256_kib_body_limit(server: Server, signing_key: SigningKey) -> None:
    _, headers = await ready_user(server.database_url, signing_key)  # the module's one ready user (agent-x)
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        # 100 KiB is past the app-wide 64 KiB but within the route's own limit: the content check answers.
        response = await http.post("/api/v1/chat/message", json={"content": "x" * (100 * 1024)})
        assert response.status_code == 413 and response.json()["code"] == "message_too_large"
        response = await http.post("/api/v1/chat/message", json={"content": "x" * (300 * 1024)})
        assert response.status_code == 413 and response.json().get("code") != "message_too_large"


# -- request heads --------------------------------------------------------------------------------------------------
async def test_an_incomplete_request_head_gets_408_within_the_timeout(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # no blank line: the head never ends
        await writer.drain()
        seconds, data = await closed_after(reader, HEADER_TIMEOUT + 3)
    finally:
        writer.close()
    assert seconds < HEADER_TIMEOUT + 1
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"content-type: application/problem+json" in head
    assert json.loads(body)["code"] == "request_timeout"


async def test_a_head_sent_a_byte_at_a_time_is_cut_off_at_the_timeout(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    answer = asyncio.ensure_future(reader.read())  # everything until the server closes
    try:
        for byte in b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
            if answer.done() or time.monotonic() - started > HEADER_TIMEOUT + 3:
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)
        data = await asyncio.wait_for(answer, 3)
    finally:
        writer.close()
    assert time.monotonic() - started < HEADER_TIMEOUT + 1
    assert data.startswith(b"HTTP/1.1 408 ")


async def test_an_idle_connection_is_closed_at_the_timeout_without_an_answer(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        seconds, data = await closed_after(reader, HEADER_TIMEOUT + 3)
    finally:
        writer.close()
    assert data == b"" and seconds < HEADER_TIMEOUT + 1


async def test_a_kept_alive_connection_serves_requests_after_the_head_deadline(server: Server) -> None:
    """The deadline covers a head, not the connection: keep-alive (5 s) governs the idle time between requests."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(2):
            writer.write(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            response = await read_response(reader)
            assert response is not None and response.status == 200
            await asyncio.sleep(HEADER_TIMEOUT + 0.5)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="not-http"),
        pytest.param(b"GET /\xff\xfe<script> HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="raw-bytes-in-target"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n", id="bad-header"),
    ],
)
async def test_a_malformed_request_is_a_400_problem_that_echoes_nothing(server: Server, request_bytes: bytes) -> None:
    response = await send_raw(server, request_bytes)
    assert response is not None
    body = response.problem(400, "bad_request")
    assert body["detail"] == "the request is not valid HTTP/1.1"
    assert b"GARBAGE" not in response.body and b"script" not in response.body


async def test_a_1_mib_request_line_is_a_414_problem(server: Server) -> None:
    response = await send_raw(server, b"GET /" + b"a" * (1024 * 1024) + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert response is not None
    response.problem(414, "uri_too_long")
    assert b"aaaa" not in response.body


async def test_a_1_mib_header_is_a_431_problem(server: Server) -> None:
    # uvicorn alone reads any number of header bytes into memory.
    response = await send_raw(
        server, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (1024 * 1024) + b"\r\n\r\n"
    )
    assert response is not None
    response.problem(431, "headers_too_large")


# -- WebSocket sockets ----------------------------------------------------------------------------------------------
async def test_a_users_socket_past_the_cap_gets_an_error_frame_and_close_4429(
    server: Server, signing_key: SigningKey
) -> None:
    token = await new_token(server, signing_key)
    held = [await authenticated(server, token) for _ in range(SOCKETS_PER_USER)]

    extra = await connect(server.ws_url)
    await extra.send(json.dumps({"type": "auth", "token": token}))
    frame, code = await refused(extra)
    assert code == 4429
    assert frame["type"] == "error" and frame["code"] == "too_many_sockets" and frame["status"] == 429
    assert frame["limit"] == SOCKETS_PER_USER

    # Another user is not affected.
    await (await authenticated(server, await new_token(server, signing_key))).close()

    # A closed socket (a clean close here, a dropped connection below) gives its place back.
    await held.pop().close()
    writer = (await ws_handshake(server))[1]
    writer.close()  # an unauthenticated socket that goes away: counted in the total only
    held.append(await eventually_authenticated(server, token))
    held[0].transport.abort()  # dropped without a close frame
    held.append(await eventually_authenticated(server, token))
    for ws in held:
        await ws.close()


async def eventually_authenticated(server: Server, token: str) -> ClientConnection:
    """Authenticated once the server has seen a closed socket of the user go (within 2 s)."""
    deadline = time.monotonic() + 2
    while True:
        ws = await connect(server.ws_url)
        await ws.send(json.dumps({"type": "auth", "token": token}))
        frame = json.loads(await ws.recv())
        if frame["type"] == "ready":
            return ws
        assert frame["code"] == "too_many_sockets"
        await ws.close()
        assert time.monotonic() < deadline, "the closed socket's place was not given back"
        await asyncio.sleep(0.1)


async def test_a_binary_frame_holding_json_is_read_like_a_text_frame(server: Server, signing_key: SigningKey) -> None:
    token = await new_token(server, signing_key)
    async with connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}).encode())  # binary
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(b'{"type": "ping"}')
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.send(b'{"type": "ping", "content": "\xff"}')  # not UTF-8
        frame = json.loads(await ws.recv())
        assert frame["type"] == "error" and frame["code"] == "invalid_message" and frame["status"] == 400
        assert "UTF-8" in frame["message"]
        await ws.send(b'{"type": "ping"}')  # the socket stays open
        assert json.loads(await ws.recv()) == {"type": "pong"}


# -- the replica's totals ---------------------------------------------------------------------------------------------
async def idle_connections(server: Server, count: int) -> list[asyncio.StreamWriter]:
    writers = [(await asyncio.open_connection("127.0.0.1", server.port))[1] for _ in range(count)]
    await asyncio.sleep(0.2)  # accepted by the server
    return writers


async def test_a_request_past_the_connection_limit_is_a_503_problem(tight_server: Server) -> None:
    writers = await idle_connections(tight_server, MAX_CONNECTIONS - 1)
    try:
        response = await send_raw(tight_server, b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert response is not None
        response.problem(503, "server_busy")
        assert response.headers["retry-after"] == "5"
        with pytest.raises(InvalidStatus) as refused_handshake:
            await connect(tight_server.ws_url)
        assert refused_handshake.value.response.status_code == 503
    finally:
        for writer in writers:
            writer.close()
    await asyncio.sleep(0.2)
    async with httpx.AsyncClient(base_url=tight_server.url) as http:
        assert (await http.get("/health/live")).status_code == 200


async def test_a_socket_past_the_replicas_cap_gets_an_error_frame_and_close_1013(tight_server: Server) -> None:
    async with connect(tight_server.ws_url):  # unauthenticated sockets count too
        extra = await connect(tight_server.ws_url)
        frame, code = await refused(extra)
        assert code == 1013
        assert frame["type"] == "error" and frame["code"] == "too_many_sockets" and frame["status"] == 503
    await asyncio.sleep(0.2)
    async with connect(tight_server.ws_url) as ws:  # the place was given back
        await ws.send(json.dumps({"type": "ping"}))  # not an auth frame: refused, but not for the count
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 4401
