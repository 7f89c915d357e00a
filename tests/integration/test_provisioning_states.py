"""The provisioning state machine against the real Postgres, with LiteLLM and Letta answering through
pytest-httpx: what is stored after each kind of failure, and that a retry reuses what exists."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from pytest_httpx import HTTPXMock

from devstack.gotrue import sign_up
from service.clients.letta import LettaClient
from service.clients.litellm import LiteLLMClient
from service.provisioning.service import Provisioner
from tests.integration.support import service_settings

pytestmark = pytest.mark.integration

LITELLM = "http://litellm.test"
LETTA = "http://letta.test"


@pytest.fixture
async def provisioner(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[Provisioner]:
    settings = service_settings(
        database_url,
        LETTA_BASE_URL=LETTA,
        LITELLM_BASE_URL=LITELLM,
        LITELLM_MASTER_KEY="sk-master",
        PROVISIONING_MAX_ATTEMPTS="2",
    )
    async with httpx.AsyncClient() as http:
        yield Provisioner(pool, LiteLLMClient(http, LITELLM, "sk-master"), LettaClient(http, LETTA, None), settings)


async def profile(pool: asyncpg.Pool, user_id: uuid.UUID) -> dict[str, Any]:
    """The profile, with the last failure's upstream text (kept privately) as ``provisioning_error``."""
    row = await pool.fetchrow(
        "select p.*, e.detail as provisioning_error from public.user_profiles p "
        "left join private.provisioning_errors e on e.user_id = p.id where p.id = $1",
        user_id,
    )
    return dict(row)


def litellm_new_user(httpx_mock: HTTPXMock, user_id: uuid.UUID, key: str = "sk-user-1") -> None:
    httpx_mock.add_response(
        method="GET",
        url=re.compile(f"{LITELLM}/user/info.*"),
        status_code=404,
        json={
            "error": {"message": f"User {user_id} not found", "type": "not_found", "param": "user_id", "code": "404"}
        },
    )
    httpx_mock.add_response(method="POST", url=f"{LITELLM}/user/new", json={"user_id": str(user_id), "key": key})


def letta_creates(httpx_mock: HTTPXMock, user_id: uuid.UUID) -> None:
    httpx_mock.add_response(method="GET", url=re.compile(f"{LETTA}/v1/providers/.*"), json=[])
    httpx_mock.add_response(
        method="POST", url=f"{LETTA}/v1/providers/", json={"id": "provider-1", "name": f"user-{user_id}"}
    )
    httpx_mock.add_response(method="GET", url=re.compile(f"{LETTA}/v1/agents/.*"), json=[])
    httpx_mock.add_response(method="POST", url=f"{LETTA}/v1/agents/", json={"id": "agent-1", "name": "a"})


async def test_success_stores_every_id_and_the_key_privately(
    provisioner: Provisioner, pool: asyncpg.Pool, database_url: str, httpx_mock: HTTPXMock
) -> None:
    user_id = await sign_up(database_url, "p1@example.com", {"full_name": "Pat"})
    litellm_new_user(httpx_mock, user_id)
    letta_creates(httpx_mock, user_id)
    assert await provisioner.provision(user_id) == "active"
    row = await profile(pool, user_id)
    assert (row["agent_status"], row["letta_agent_id"], row["letta_provider_id"]) == ("active", "agent-1", "provider-1")
    assert row["provisioning_attempts"] == 0 and row["provisioning_error"] is None
    assert (
        await pool.fetchval("select litellm_key from private.litellm_keys where user_id = $1", user_id) == "sk-user-1"
    )
    new_user = json.loads(httpx_mock.get_request(url=f"{LITELLM}/user/new").content)
    assert new_user["user_id"] == str(user_id) and new_user["max_budget"] == 10.0
    assert new_user["budget_duration"] == "1mo"
    provider = json.loads(httpx_mock.get_request(method="POST", url=f"{LETTA}/v1/providers/").content)
    assert provider == {
        "name": f"user-{user_id}",
        "provider_type": "openai",
        "api_key": "sk-user-1",
        "base_url": f"{LITELLM}/v1",
    }
    agent = json.loads(httpx_mock.get_request(method="POST", url=f"{LETTA}/v1/agents/").content)
    assert agent["tags"] == [f"user:{user_id}"] and agent["name"] == f"agent-{user_id}"
    assert agent["llm_config"]["provider_name"] == f"user-{user_id}"
    assert agent["llm_config"]["provider_category"] == "byok"
    assert {b["label"]: b["value"] for b in agent["memory_blocks"]}["human"] == "User's name: Pat"
    # Already active: a second call claims nothing and calls nobody.
    requests = len(httpx_mock.get_requests())
    assert await provisioner.provision(user_id) == "active"
    assert len(httpx_mock.get_requests()) == requests


async def test_a_retry_after_letta_failed_reuses_the_stored_key(
    provisioner: Provisioner, pool: asyncpg.Pool, database_url: str, httpx_mock: HTTPXMock
) -> None:
    user_id = await sign_up(database_url, "p2@example.com")
    litellm_new_user(httpx_mock, user_id, key="sk-first")
    httpx_mock.add_response(method="GET", url=re.compile(f"{LETTA}/v1/providers/.*"), status_code=502, is_reusable=True)
    assert await provisioner.provision(user_id) == "pending"
    row = await profile(pool, user_id)
    assert row["provisioning_attempts"] == 1 and "letta" in row["provisioning_error"]
    assert row["next_provisioning_at"] > await pool.fetchval("select now()")
    httpx_mock.reset()
    letta_creates(httpx_mock, user_id)
    assert await provisioner.provision(user_id) == "active"
    # No second LiteLLM user or key: the provider got the key from the first attempt.
    assert not [r for r in httpx_mock.get_requests() if r.url.host == "litellm.test"]
    provider = json.loads(httpx_mock.get_request(method="POST", url=f"{LETTA}/v1/providers/").content)
    assert provider["api_key"] == "sk-first"


async def test_transient_failures_end_in_failed_after_max_attempts(
    provisioner: Provisioner, pool: asyncpg.Pool, database_url: str, httpx_mock: HTTPXMock
) -> None:
    user_id = await sign_up(database_url, "p3@example.com")
    httpx_mock.add_exception(httpx.ConnectError("refused"), is_reusable=True)
    assert await provisioner.provision(user_id) == "pending"
    assert await provisioner.provision(user_id) == "failed"
    row = await profile(pool, user_id)
    assert row["agent_status"] == "failed" and row["provisioning_attempts"] == 2
    assert "ConnectError" in row["provisioning_error"]
    # Each attempt retried the call with backoff (3 tries), then gave up.
    assert len(httpx_mock.get_requests()) == 6
    # The reconciler leaves a failed profile alone until its cool-down passes.
    assert await provisioner.reconcile_once() == 0


async def test_a_4xx_is_not_retried_and_fails_at_once(
    provisioner: Provisioner, pool: asyncpg.Pool, database_url: str, httpx_mock: HTTPXMock
) -> None:
    user_id = await sign_up(database_url, "p4@example.com")
    httpx_mock.add_response(method="GET", url=re.compile(f"{LITELLM}/user/info.*"), status_code=404)
    httpx_mock.add_response(
        method="POST",
        url=f"{LITELLM}/user/new",
        status_code=400,
        json={
            "error": {"message": "Invalid budget_duration", "type": "bad_request_error", "param": None, "code": "400"}
        },
    )
    httpx_mock.add_response(method="GET", url=re.compile(f"{LITELLM}/user/info.*"), status_code=404)
    assert await provisioner.provision(user_id) == "failed"
    row = await profile(pool, user_id)
    assert row["provisioning_attempts"] == 1 and "Invalid budget_duration" in row["provisioning_error"]
    assert len(httpx_mock.get_requests(url=f"{LITELLM}/user/new")) == 1


async def test_only_one_of_many_concurrent_runners_claims_the_user(
    provisioner: Provisioner, pool: asyncpg.Pool, database_url: str, httpx_mock: HTTPXMock
) -> None:
    user_id = await sign_up(database_url, "p5@example.com")
    litellm_new_user(httpx_mock, user_id)
    letta_creates(httpx_mock, user_id)
    results = await asyncio.gather(*[provisioner.provision(user_id) for _ in range(10)])
    assert results.count("active") == 1
    assert set(results) <= {"active", "provisioning"}
    assert len(httpx_mock.get_requests(method="POST", url=f"{LETTA}/v1/agents/")) == 1


async def test_an_agent_left_by_an_interrupted_attempt_is_adopted_and_duplicates_removed(
    provisioner: Provisioner, pool: asyncpg.Pool, database_url: str, httpx_mock: HTTPXMock
) -> None:
    user_id = await sign_up(database_url, "p6@example.com")
    litellm_new_user(httpx_mock, user_id)
    httpx_mock.add_response(
        method="GET", url=re.compile(f"{LETTA}/v1/providers/.*"), json=[{"id": "provider-9", "name": f"user-{user_id}"}]
    )
    httpx_mock.add_response(method="PATCH", url=f"{LETTA}/v1/providers/provider-9", json={"id": "provider-9"})
    httpx_mock.add_response(
        method="GET",
        url=re.compile(f"{LETTA}/v1/agents/.*"),
        json=[
            {"id": "agent-new", "created_at": "2026-11-21T10:00:01Z"},
            {"id": "agent-old", "created_at": "2026-11-21T10:00:00Z"},
        ],
    )
    httpx_mock.add_response(method="GET", url=f"{LETTA}/v1/archives/?agent_id=agent-new", json=[])
    httpx_mock.add_response(method="DELETE", url=f"{LETTA}/v1/agents/agent-new", json={})
    assert await provisioner.provision(user_id) == "active"
    row = await profile(pool, user_id)
    assert (row["letta_agent_id"], row["letta_provider_id"]) == ("agent-old", "provider-9")
    assert not httpx_mock.get_requests(method="POST", url=f"{LETTA}/v1/agents/")
    # The provider outlived its key (a new one was minted): it was given the new key.
    patch = json.loads(httpx_mock.get_request(method="PATCH").content)
    assert patch["api_key"] == "sk-user-1"


async def test_a_user_deleted_mid_provisioning_gets_cleaned_up_again(
    provisioner: Provisioner, pool: asyncpg.Pool, database_url: str, httpx_mock: HTTPXMock
) -> None:
    user_id = await sign_up(database_url, "p7@example.com")
    litellm_new_user(httpx_mock, user_id)
    httpx_mock.add_response(method="GET", url=re.compile(f"{LETTA}/v1/providers/.*"), json=[])
    httpx_mock.add_response(method="POST", url=f"{LETTA}/v1/providers/", json={"id": "provider-1"})
    httpx_mock.add_response(method="GET", url=re.compile(f"{LETTA}/v1/agents/.*"), json=[])

    async def create_agent_while_the_user_is_deleted(request: httpx.Request) -> httpx.Response:
        await pool.execute("delete from auth.users where id = $1", user_id)
        # ... and its clean-up already ran, before this agent existed.
        await pool.execute("delete from private.deprovisioning where user_id = $1", user_id)
        return httpx.Response(200, json={"id": "agent-orphan"})

    httpx_mock.add_callback(create_agent_while_the_user_is_deleted, method="POST", url=f"{LETTA}/v1/agents/")
    assert await provisioner.provision(user_id) == "lost"
    # The clean-up is queued again, so the reconciler removes the agent this attempt made.
    assert await pool.fetchval("select exists(select 1 from private.deprovisioning where user_id = $1)", user_id)


async def test_an_anonymous_user_gets_the_anonymous_budget(
    provisioner: Provisioner, pool: asyncpg.Pool, database_url: str, httpx_mock: HTTPXMock
) -> None:
    user_id = await sign_up(database_url, "anon@example.com")
    await pool.execute("update auth.users set is_anonymous = true where id = $1", user_id)
    litellm_new_user(httpx_mock, user_id)
    letta_creates(httpx_mock, user_id)
    assert await provisioner.provision(user_id) == "active"
    new_user = json.loads(httpx_mock.get_request(url=f"{LITELLM}/user/new").content)
    assert new_user["max_budget"] == 0.10  # ANONYMOUS_BUDGET's default, not USER_DEFAULT_BUDGET's 10.0


async def test_anonymous_users_refused_get_nothing_made(
    pool: asyncpg.Pool, database_url: str, httpx_mock: HTTPXMock
) -> None:
    settings = service_settings(database_url, LETTA_BASE_URL=LETTA, LITELLM_BASE_URL=LITELLM, ANONYMOUS_USERS="refuse")
    user_id = await sign_up(database_url, "anon2@example.com")
    await pool.execute("update auth.users set is_anonymous = true where id = $1", user_id)
    async with httpx.AsyncClient() as http:
        refusing = Provisioner(
            pool, LiteLLMClient(http, LITELLM, "sk-master"), LettaClient(http, LETTA, None), settings
        )
        assert await refusing.provision(user_id) == "failed"
    assert httpx_mock.get_requests() == []  # no LiteLLM user, no Letta provider or agent
    row = await profile(pool, user_id)
    assert row["agent_status"] == "failed" and "anonymous" in row["provisioning_error"]
