"""How a finished turn is stored, against the real Postgres (Letta and LiteLLM replaced by fakes
that return fixed values: what is under test is the bookkeeping)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from service.billing.budgets import Prices
from service.chat.service import ChatService, Turn
from service.users.profiles import ReadyProfile, get_profile
from tests.integration.support import new_user_id, service_settings

pytestmark = pytest.mark.integration

# A turn's messages, with the upstream's error text (kept privately) as ``error``.
TURN_WITH_ERRORS = (
    "select m.*, e.detail as error from public.messages m "
    "left join private.message_errors e on e.message_id = m.id where m.turn_id = $1 order by m.created_at"
)


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


async def a_turn(chat: ChatService, pool: asyncpg.Pool, database_url: str) -> Turn:
    user_id = await new_user_id(database_url)
    row = await get_profile(pool, user_id)
    assert row is not None
    profile = ReadyProfile(id=row.id, email=row.email, display_name=row.display_name, agent_id="agent-x", model=None)
    content = "hello"
    turn_id = await chat.acquire_lease(user_id)
    message_id = await pool.fetchval(
        "insert into public.messages (user_id, thread_id, turn_id, role, content, status) values ($1, "
        "(select id from public.threads where user_id = $1 and is_default), $2, 'user', $3, 'pending') returning id",
        user_id,
        turn_id,
        content,
    )
    thread_id = await pool.fetchval("select thread_id from public.messages where id = $1", message_id)
    return Turn(turn_id, message_id, profile, thread_id)


def chat_service(pool: asyncpg.Pool, database_url: str, letta: FakeLetta) -> ChatService:
    return ChatService(pool, letta, FakeBilling(), service_settings(database_url), None, None)  # type: ignore[arg-type]


def events_of(turn: Turn) -> list[Any]:
    """The turn's pending events as (name, data), then None if it ended; their ids are checked to run 1, 2, ..."""
    pending = list(turn.pending)
    assert [e[0] for e in pending] == list(range(1, len(pending) + 1))
    return [e[1:] for e in pending] + ([None] if turn.ended else [])


async def lease_count(pool: asyncpg.Pool, turn: Turn) -> int:
    return await pool.fetchval("select count(*) from private.chat_turn_leases where user_id = $1", turn.profile.id)


async def test_a_complete_turn_is_stored_with_usage_and_cost_and_frees_the_lease(
    pool: asyncpg.Pool, database_url: str
) -> None:
    chat = chat_service(pool, database_url, FakeLetta())
    turn = await a_turn(chat, pool, database_url)
    result = turn.result
    result.status, result.run_id, result.letta_message_id = "complete", "run-7", "message-7"
    result.content = ["Hel", "lo"]
    result.prompt_tokens, result.completion_tokens, result.total_tokens = 800, 20, 820
    await chat._finish(turn)

    rows = {r["role"]: r for r in await pool.fetch(TURN_WITH_ERRORS, turn.turn_id)}
    assert (rows["user"]["status"], rows["user"]["error"], rows["user"]["letta_run_id"]) == ("complete", None, "run-7")
    reply = rows["assistant"]
    assert (reply["content"], reply["status"], reply["error"]) == ("Hello", "complete", None)
    assert (reply["prompt_tokens"], reply["completion_tokens"], reply["tokens_used"]) == (800, 20, 820)
    assert (reply["cost"], reply["model"]) == (Decimal("0.00084000"), "gpt-4o-mini")
    assert (reply["letta_run_id"], reply["letta_message_id"]) == ("run-7", "message-7")
    day = await pool.fetchrow("select * from public.usage_metrics where user_id = $1", turn.profile.id)
    assert (day["total_messages"], day["prompt_tokens"], day["completion_tokens"]) == (2, 800, 20)
    assert await pool.fetchval("select last_active_at from public.user_profiles where id = $1", turn.profile.id)
    assert await lease_count(pool, turn) == 0
    events = events_of(turn)
    assert [e[0] for e in events if e] == ["done"] and events[-1] is None
    assert events[0][1]["message_id"] == str(reply["id"]) and events[0][1]["cost"] == 0.00084


async def test_a_turn_that_failed_before_any_text_keeps_only_the_users_message(
    pool: asyncpg.Pool, database_url: str
) -> None:
    chat = chat_service(pool, database_url, FakeLetta())
    turn = await a_turn(chat, pool, database_url)
    turn.result.status, turn.result.error_code, turn.result.error_message = "failed", "llm_error", "LLM down"
    await chat._finish(turn)

    rows = await pool.fetch(f"select role, status, error from ({TURN_WITH_ERRORS}) turn", turn.turn_id)
    assert [tuple(r) for r in rows] == [("user", "failed", "LLM down")]
    day = await pool.fetchrow("select * from public.usage_metrics where user_id = $1", turn.profile.id)
    assert (day["total_messages"], day["total_tokens"], day["total_cost"]) == (1, 0, Decimal("0"))
    assert await lease_count(pool, turn) == 0
    assert [e[0] for e in events_of(turn) if e] == ["error", "done"]


async def test_a_turn_that_cannot_be_stored_says_so_and_still_frees_the_lease(
    pool: asyncpg.Pool, database_url: str
) -> None:
    chat = chat_service(pool, database_url, FakeLetta())
    turn = await a_turn(chat, pool, database_url)
    await pool.execute(
        """
        create function public.refuse_for_test() returns trigger language plpgsql as $$
        begin raise exception 'disk full'; end $$;
        create trigger refuse_usage before insert on public.usage_metrics
            for each row execute function public.refuse_for_test();
        """
    )
    turn.result.status, turn.result.content = "complete", ["a reply"]
    await chat._finish(turn)

    # One statement: nothing of the outcome is half-stored; the user's message is kept as it was.
    rows = await pool.fetch("select role, status from public.messages where turn_id = $1", turn.turn_id)
    assert [tuple(r) for r in rows] == [("user", "pending")]
    assert await lease_count(pool, turn) == 0
    events = [e for e in events_of(turn) if e]
    assert [e[0] for e in events] == ["error", "done"]
    assert events[0][1]["code"] == "storage_failed" and events[1][1]["status"] == "failed"


async def test_a_turn_that_broke_after_the_llm_call_is_still_counted(pool: asyncpg.Pool, database_url: str) -> None:
    letta = FakeLetta()
    chat = chat_service(pool, database_url, letta)
    turn = await a_turn(chat, pool, database_url)
    turn.result.status, turn.result.run_id = "failed", "run-1"
    turn.result.content = ["partial reply the user saw"]
    turn.result.error_code, turn.result.error_message = "agent_error", "stream broke"
    await chat._finish(turn)

    assert letta.asked == ["run-1"]
    rows = {r["role"]: r for r in await pool.fetch(TURN_WITH_ERRORS, turn.turn_id)}
    assert rows["user"]["status"] == "failed" and rows["user"]["error"] == "stream broke"
    assert rows["assistant"]["status"] == "failed" and rows["assistant"]["content"] == "partial reply the user saw"
    assert (rows["assistant"]["prompt_tokens"], rows["assistant"]["completion_tokens"]) == (1000, 50)
    assert rows["assistant"]["cost"] == Decimal("0.00110000")
    day = await pool.fetchrow("select * from public.usage_metrics where user_id = $1", turn.profile.id)
    assert (day["total_messages"], day["total_tokens"], day["total_cost"]) == (2, 1050, Decimal("0.00110000"))
    # The lease is released with the turn.
    assert not await pool.fetchval("select count(*) from private.chat_turn_leases where user_id = $1", turn.profile.id)
    events = events_of(turn)
    assert [e[0] for e in events if e] == ["error", "done"] and events[-1] is None
