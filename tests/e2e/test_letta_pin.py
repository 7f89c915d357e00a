"""Issue 15 item 4 on the real stack: the service holds Letta to the version it was tested with, Letta runs with
a password the service must send, and Letta's embeddings go out on a LiteLLM key of their own.

The refused version is in tests/unit/test_letta_version.py (Letta 0.16.8 is the only Letta here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.clients.letta_version import TESTED_LETTA_VERSIONS
from tests.e2e.conftest import StackClient

pytestmark = pytest.mark.e2e


def service_log_lines(client: StackClient, since: int) -> list[dict[str, Any]]:
    """The service's JSON log lines written after byte ``since`` of its log."""
    with client.stack.processes["service"].log_path.open("rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def service_log_size(client: StackClient) -> int:
    return client.stack.processes["service"].log_path.stat().st_size


async def ready(client: StackClient) -> httpx.Response:
    admin = {"Authorization": f"Bearer {client.stack.config.admin_api_key}"}
    return await client.http.get(f"{client.stack.config.service_url}/health/ready", headers=admin)


@contextlib.asynccontextmanager
async def restarted(client: StackClient, **env: str) -> AsyncIterator[None]:
    """The service restarted with ``env`` for the block, then as before."""
    stack = client.stack
    await asyncio.to_thread(stack.restart_service, **env)
    try:
        yield
    finally:
        for name in env:
            stack.config.service_env.pop(name)
        await asyncio.to_thread(stack.restart_service)


async def test_the_service_checked_lettas_version_at_start_and_readiness_reports_it(client: StackClient) -> None:
    letta_says = (await client.http.get(f"{client.stack.config.letta_url}/v1/health/")).json()["version"]
    since = service_log_size(client)

    async with restarted(client):
        checks = (await ready(client)).json()["checks"]
        started = service_log_lines(client, since)

    assert letta_says in TESTED_LETTA_VERSIONS
    assert checks["letta"]["ok"] is True and checks["letta"]["version"] == letta_says
    checked = [line for line in started if line["msg"] == "Letta version checked"]
    assert [line["letta_version"] for line in checked] == [letta_says]


async def test_letta_takes_only_calls_with_its_password_and_the_service_sends_it(client: StackClient) -> None:
    letta = client.stack.config.letta_url
    user = await client.sign_up("Pia")  # provisioned through Letta: the service's token was accepted

    without = await client.http.get(f"{letta}/v1/agents/")
    wrong = await client.http.get(f"{letta}/v1/agents/", headers={"Authorization": "Bearer not-the-password"})
    agents = await client.agents_of(user.id)  # with the password

    assert without.status_code == wrong.status_code == 401
    assert len(agents) == 1
    async with restarted(client, LETTA_API_TOKEN="not-the-password"):
        # Letta's health needs no password (readiness stays green), every other call does.
        assert (await ready(client)).status_code == 200
        refused = await client.chat(user, "hello")
    assert refused.status_code == 503 and refused.json()["code"] == "agent_unavailable"
    assert (await client.chat(user, "hello")).status_code == 200


async def test_a_letta_down_at_start_does_not_stop_the_service_and_is_checked_once_it_answers(
    client: StackClient,
) -> None:
    user = await client.sign_up("Ola")
    with socket.socket() as probe:  # a port nothing listens on yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    upstream = ("127.0.0.1", client.stack.config.letta_port)

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The real Letta, reached through this port once it listens."""
        up_reader, up_writer = await asyncio.open_connection(*upstream)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    since = service_log_size(client)
    async with restarted(client, LETTA_BASE_URL=f"http://127.0.0.1:{port}"):  # restart_service waits for live
        down = await ready(client)
        refused = await client.chat(user, "anyone there?")
        server = await asyncio.start_server(forward, "127.0.0.1", port)
        try:
            up = await ready(client)
            answered = await client.chat(user, "hello again")
        finally:
            server.close()
        started = service_log_lines(client, since)

    assert down.status_code == 503
    assert down.json()["checks"]["letta"]["ok"] is False and "code" not in down.json()["checks"]["letta"]
    assert refused.status_code == 503 and refused.json()["code"] == "agent_unavailable"
    assert up.status_code == 200 and up.json()["checks"]["letta"]["version"] in TESTED_LETTA_VERSIONS
    assert answered.status_code == 200 and answered.json()["content"] == "You said: hello again"
    messages = [line["msg"] for line in started]
    assert any(m.startswith("Letta's version could not be read at start-up") for m in messages)
    assert "Letta version checked" in messages


async def test_lettas_embedding_key_serves_archival_memory_and_nothing_else(client: StackClient) -> None:
    config = client.stack.config
    user = await client.sign_up("Eve")
    await client.litellm("DELETE", "/_double/requests")

    stored = await client.chat(user, "[[archive my locker code is 3141]]")
    found = await client.http.get(
        f"{config.service_url}/api/v1/agent/memory", headers=user.headers, params={"q": "locker code"}
    )
    chat_on_it = await client.http.post(
        f"{config.litellm_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {config.letta_embedding_key}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )

    assert stored.status_code == 200, stored.text
    assert any("3141" in hit["content"] for hit in found.json()["archival_results"])
    # Archival insert and search each embedded on Letta's own key, never the master key.
    embeddings = [r for r in await client.upstream_requests() if r["path"].endswith("/embeddings")]
    assert len(embeddings) >= 2
    assert {(r["api_key"], r["model"], r["status_code"]) for r in embeddings} == {
        (config.letta_embedding_key, config.embedding_model, 200)
    }
    assert chat_on_it.status_code == 403
    assert chat_on_it.json()["error"]["type"] == "key_model_access_denied"
    info = (await client.litellm("GET", "/key/info", params={"key": config.letta_embedding_key}))["info"]
    assert info["models"] == [config.embedding_model] and info["max_budget"] == config.letta_embedding_budget
    assert info["spend"] > 0 and info["user_id"] is None  # its own budget, no user's
