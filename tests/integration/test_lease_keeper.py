"""One lease keeper per replica (``service.chat.service.LeaseKeeper``), against the real Postgres: it renews the
leases of all the turns running there in one statement, tells which of them a cancel was asked for (from any
replica), records their Letta run ids as soon as they are seen, and runs only while turns do."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from service.chat import service as chat_service_module
from service.chat import store
from service.chat.service import LeaseKeeper, Turn
from tests.integration.support import wait_until
from tests.integration.test_turn_storage import FakeLetta, a_turn, chat_service

pytestmark = pytest.mark.integration

# Whether the user's lease runs for more than 20 s from now (LEASE_SECONDS is 30).
LEASE_LEFT = "select expires_at > now() + interval '20 seconds' from private.chat_turn_leases where user_id = $1"


async def no_cancel(turn: Turn) -> None:
    raise AssertionError(f"nothing asked for turn {turn.turn_id} to stop")


async def test_every_turns_lease_is_renewed_and_a_cancel_from_another_replica_is_acted_on(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_service_module, "LEASE_RENEW_SECONDS", 0.2)
    chat = chat_service(pool, database_url, FakeLetta())
    first, second = await a_turn(chat, pool, database_url), await a_turn(chat, pool, database_url)
    users = [first.profile.id, second.profile.id]
    await pool.execute(
        "update private.chat_turn_leases set expires_at = now() + interval '1 second' where user_id = any($1)", users
    )
    cancelled: list[Turn] = []
    stopped = asyncio.Event()

    async def cancel(turn: Turn) -> None:  # as ChatService.cancel: the turn is marked at once
        turn.cancel_requested = True
        cancelled.append(turn)
        stopped.set()

    keeper = LeaseKeeper(pool, cancel)
    keeper.add(first)
    keeper.add(second)
    try:
        for user_id in users:  # renewed
            await wait_until(pool, LEASE_LEFT, user_id, timeout=3, what="the renewed lease")
        assert cancelled == []
        # Another replica asks for the second turn to stop (ChatService.request_cancel's flag): the next renewal here
        # sees it.
        assert await pool.fetchrow(store.REQUEST_CANCEL, second.profile.id) is not None
        await asyncio.wait_for(stopped.wait(), timeout=3)
        await asyncio.sleep(0.5)  # more renewals: the turn is cancelled once
        assert cancelled == [second]
    finally:
        keeper.discard(first)
        keeper.discard(second)


async def test_a_run_id_is_recorded_on_the_lease_and_the_user_message_at_once(
    pool: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_service_module, "LEASE_RENEW_SECONDS", 60.0)  # no renewal records it meanwhile
    chat = chat_service(pool, database_url, FakeLetta())
    turn = await a_turn(chat, pool, database_url)
    keeper = LeaseKeeper(pool, no_cancel)
    keeper.add(turn)
    try:
        turn.result.run_id = "run-1"
        keeper.record_run(turn)
        await wait_until(
            pool,
            "select letta_run_id = 'run-1' from public.messages where id = $1",
            turn.user_message_id,
            timeout=3,
            what="the run id on the user message",
        )
        lease_run = await pool.fetchval(
            "select letta_run_id from private.chat_turn_leases where user_id = $1", turn.profile.id
        )
        assert lease_run == "run-1"
    finally:
        keeper.discard(turn)


async def test_the_keeper_runs_only_while_turns_do(pool: asyncpg.Pool, database_url: str) -> None:
    chat = chat_service(pool, database_url, FakeLetta())
    turn = await a_turn(chat, pool, database_url)
    keeper = LeaseKeeper(pool, no_cancel)
    keeper.add(turn)
    task = keeper._task
    assert task is not None and not task.done()
    keeper.discard(turn)
    await asyncio.wait_for(task, timeout=1)  # it ends with the last turn, without waiting for its next renewal
    keeper.add(turn)  # and starts again with the next one
    assert keeper._task is not None and keeper._task is not task and not keeper._task.done()
    keeper.discard(turn)
    await asyncio.wait_for(keeper._task, timeout=1)
