"""How a finished turn is stored, against the real Postgres (Letta and LiteLLM replaced by fakes
that return fixed values: what is under test is the bookkeeping)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from devstack.gotrue import sign_up
from service.billing import Prices
from service.chat.turns import ChatService, Turn
from service.profiles import get_profile
from service.settings import load_settings

pytestmark = pytest.mark.integration


class FakeLetta:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def run_usage(self, run_id: str) -> dict[str, int]:
        self.asked.append(run_id)
        return {"prompt_tokens": 1000, "completion_tokens": 50, "total_tokens": 1050}


class FakeBilling:
    async def prices(self, model: str) -> Prices:
        return Prices(Decimal("0.000001"), Decimal("0.000002"))

    def add_spend(self, user_id: str, cost: float) -> None:
        self.spent = cost


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def a_turn(chat: ChatService, pool: asyncpg.Pool, database_url: str) -> Turn:
    user_id = await sign_up(database_url, f"{uuid.uuid4().hex[:8]}@example.com")
    profile = await get_profile(pool, user_id)
    assert profile is not None
    content = "hello"
    turn_id = await chat.acquire_lease(user_id)
    message_id = await pool.fetchval(
        "insert into public.messages (user_id, turn_id, role, content, status) values ($1, $2, 'user', $3, "
        "'pending') returning id",
        user_id,
        turn_id,
        content,
    )
    return Turn(turn_id, message_id, profile)


async def test_a_turn_that_broke_after_the_llm_call_is_still_counted(pool: asyncpg.Pool, database_url: str) -> None:
    letta = FakeLetta()
    settings: Any = load_settings(
        {
            "DATABASE_URL": database_url,
            "SUPABASE_URL": "http://a.b",
            "LETTA_BASE_URL": "http://a.b",
            "LITELLM_BASE_URL": "http://a.b",
            "LITELLM_MASTER_KEY": "k",
        }
    )
    chat = ChatService(pool, letta, FakeBilling(), settings, None, None)  # type: ignore[arg-type]
    turn = await a_turn(chat, pool, database_url)
    turn.result.status, turn.result.run_id = "failed", "run-1"
    turn.result.content = ["partial reply the user saw"]
    turn.result.error_code, turn.result.error_message = "agent_error", "stream broke"
    await chat._finish(turn)

    assert letta.asked == ["run-1"]
    rows = {r["role"]: r for r in await pool.fetch("select * from public.messages where turn_id = $1", turn.turn_id)}
    assert rows["user"]["status"] == "failed" and rows["user"]["error"] == "stream broke"
    assert rows["assistant"]["status"] == "failed" and rows["assistant"]["content"] == "partial reply the user saw"
    assert (rows["assistant"]["prompt_tokens"], rows["assistant"]["completion_tokens"]) == (1000, 50)
    assert rows["assistant"]["cost"] == Decimal("0.00110000")
    day = await pool.fetchrow("select * from public.usage_metrics where user_id = $1", turn.profile.id)
    assert (day["total_messages"], day["total_tokens"], day["total_cost"]) == (2, 1050, Decimal("0.00110000"))
    # The lease is released with the turn.
    assert not await pool.fetchval("select count(*) from private.chat_turn_leases where user_id = $1", turn.profile.id)
    events = [turn.queue.get_nowait() for _ in range(turn.queue.qsize())]
    assert [e[0] for e in events if e] == ["error", "done"] and events[-1] is None
