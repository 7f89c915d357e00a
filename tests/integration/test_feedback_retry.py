"""The retry of feedback whose send to Letta failed, on the real Postgres: which feedback it claims (unsent, due,
the longest due first), that two replicas never claim the same one, how each attempt moves the next one further
out until the last gives it up, that a change of rating gives it its attempts again, and how it treats a Letta that
does not answer (one call per pass, then passes skipped for a growing wait). Letta is unreachable here (connection
refused); that the retry delivers is tested on the real stack (tests/e2e/test_feedback_retry.py)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from devstack.keys import SigningKey
from service.chat import store
from service.chat.feedback import RETRY_ATTEMPTS, FeedbackService
from service.chat.schemas import FeedbackIn
from service.clients.letta import LettaClient
from service.observability.metrics import REGISTRY
from tests.integration.support import UNREACHABLE, PoolFactory, ready_user
from tests.integration.test_feedback import a_turn

pytestmark = pytest.mark.integration

INTERVAL = 60.0


async def rated(
    db: asyncpg.Connection[Any],
    user_id: uuid.UUID,
    *,
    run: bool = True,
    step: str | None = None,
    sent: bool = False,
    due_seconds_ago: float = 3600,
    attempts: int = 0,
) -> uuid.UUID:
    """A reply of the user's with feedback, as the service leaves it: sent to Letta or not, due for a retry
    ``due_seconds_ago`` (negative: not yet) after ``attempts``; its turn ran in Letta (``run``) or not."""
    reply: uuid.UUID = (await a_turn(db, user_id))["assistant"]
    if not run:
        await db.execute("update public.messages set letta_run_id = null where id = $1", reply)
    await db.execute(
        "insert into public.message_feedback "
        "(message_id, user_id, rating, letta_step_id, letta_sent_at, letta_retry_at, letta_attempts) "
        "values ($1, $2, 'down', $3, case when $4 then now() end, now() - make_interval(secs => $5), $6)",
        reply,
        user_id,
        step,
        sent,
        due_seconds_ago,
        attempts,
    )
    return reply


def retries(outcome: str) -> float:
    """This process's ``aichat_feedback_retries_total`` for ``outcome`` so far."""
    return REGISTRY.get_sample_value("aichat_feedback_retries_total", {"outcome": outcome}) or 0.0


async def claim(db: asyncpg.Connection[Any] | asyncpg.Pool[Any]) -> asyncpg.Record | None:
    return await db.fetchrow(store.CLAIM_UNSENT_FEEDBACK, INTERVAL, RETRY_ATTEMPTS)


async def retry_state(db: asyncpg.Connection[Any], message_id: uuid.UUID) -> tuple[int, float]:
    """The feedback's attempts so far and the seconds until its next retry."""
    row = await db.fetchrow(
        "select letta_attempts, case when letta_retry_at = 'infinity' then 'infinity'::float8 "
        "else extract(epoch from letta_retry_at - now())::float8 end as wait "
        "from public.message_feedback where message_id = $1",
        message_id,
    )
    assert row is not None
    return row["letta_attempts"], row["wait"]


async def test_the_retry_claims_due_unsent_feedback_the_longest_due_first(
    db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    user_id, _ = await ready_user(database_url, signing_key, own_agent=True)
    due = [await rated(db, user_id, due_seconds_ago=3000 - n) for n in range(3)]
    step = "step-00000000-0000-4000-8000-000000000001"
    due.append(await rated(db, user_id, run=False, step=step, due_seconds_ago=10))
    await rated(db, user_id, sent=True)  # Letta has it
    await rated(db, user_id, due_seconds_ago=-30)  # just changed: its own sender is at it
    nowhere = await rated(db, user_id, run=False, due_seconds_ago=5)  # no step, no run: nothing in Letta to send to

    claimed = [await claim(db) for _ in range(6)]
    assert [row["message_id"] for row in claimed if row] == [*due, nowhere]
    assert [row["nowhere"] for row in claimed if row] == [False] * 4 + [True]
    assert claimed[-1] is None  # the rest is sent, or not due
    for message_id in due:  # the first attempt counted, the next one an interval away
        attempts, wait = await retry_state(db, message_id)
        assert attempts == 1 and INTERVAL - 5 < wait <= INTERVAL
    assert (await retry_state(db, nowhere))[1] == float("inf")  # never again

    # A claim reads the unsent rows only, by their partial index (whatever the table holds besides).
    async with db.transaction():
        await db.execute("set local enable_seqscan = off")
        plan = "\n".join(row[0] for row in await db.fetch("explain " + store.CLAIM_UNSENT_FEEDBACK, INTERVAL, 12))
    assert "message_feedback_retry_idx" in plan, plan


async def test_two_replicas_never_claim_the_same_feedback(
    db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey, new_pool: PoolFactory
) -> None:
    user_id, _ = await ready_user(database_url, signing_key, own_agent=True)
    rows = {await rated(db, user_id, due_seconds_ago=100 - n) for n in range(2)}
    replica_a, replica_b = await new_pool(), await new_pool()
    async with replica_a.acquire() as a, replica_b.acquire() as b:
        # A's claim is not committed yet (its transaction holds the row): B skips it and takes the other.
        async with a.transaction():
            first = await claim(a)
            second = await claim(b)
            third = await claim(b)
        assert first and second and {first["message_id"], second["message_id"]} == rows
        assert third is None
        assert await claim(a) is None  # both claimed: not due again for an interval


async def test_each_attempt_waits_twice_as_long_and_the_last_gives_the_feedback_up(
    db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    user_id, _ = await ready_user(database_url, signing_key, own_agent=True)
    message_id = await rated(db, user_id)
    make_due = "update public.message_feedback set letta_retry_at = now() where message_id = $1"
    for attempt in range(1, RETRY_ATTEMPTS):
        row = await claim(db)
        assert row is not None and (row["message_id"], row["attempt"]) == (message_id, attempt)
        attempts, wait = await retry_state(db, message_id)
        assert attempts == attempt
        assert INTERVAL * 2 ** (attempt - 1) - 5 < wait <= INTERVAL * 2 ** (attempt - 1)
        await db.execute(make_due, message_id)
    last = await claim(db)
    assert last is not None and last["attempt"] == RETRY_ATTEMPTS
    assert await retry_state(db, message_id) == (RETRY_ATTEMPTS, float("inf"))
    assert await claim(db) is None  # given up

    # A new rating is a new change: due an interval from now, with all its attempts again.
    feedback = FeedbackService(db, LettaClient(httpx.AsyncClient(), UNREACHABLE, None), retry_interval_seconds=INTERVAL)
    await db.execute("update public.message_feedback set rating = 'down' where message_id = $1", message_id)
    await feedback.put(user_id, message_id, FeedbackIn(rating="up"))
    await feedback.drain()  # its own send, which fails (Letta unreachable)
    attempts, wait = await retry_state(db, message_id)
    assert attempts == 0 and INTERVAL - 5 < wait <= INTERVAL


@pytest.fixture
async def unreachable_letta() -> AsyncIterator[LettaClient]:
    async with httpx.AsyncClient(timeout=5) as http:
        yield LettaClient(http, UNREACHABLE, None)


async def test_while_letta_is_down_a_pass_makes_one_call_and_the_next_passes_wait_longer(
    db: asyncpg.Connection[Any],
    database_url: str,
    signing_key: SigningKey,
    new_pool: PoolFactory,
    unreachable_letta: LettaClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user_id, _ = await ready_user(database_url, signing_key, own_agent=True)
    due = [await rated(db, user_id, due_seconds_ago=3000 - n) for n in range(3)]
    interval = 0.1
    feedback = FeedbackService(await new_pool(), unreachable_letta, retry_interval_seconds=interval)

    def letta_calls() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "feedback retry: Letta unavailable"]

    unavailable = retries("unavailable")
    with caplog.at_level(logging.WARNING, logger="service.chat"):
        # The first pass stops at its first feedback: one call to Letta, not three; a wait of about an interval.
        assert await feedback.retry_unsent() == 0
        assert [r.message_id for r in letta_calls()] == [str(due[0])]  # type: ignore[attr-defined]
        # At once again: skipped, no call.
        assert await feedback.retry_unsent() == 0
        assert len(letta_calls()) == 1
        # Each failed pass doubles the wait (with jitter: between half and all of it). The feedback that failed
        # waits its own interval, so the next passes try the others first.
        for failed, wait in ((1, interval), (2, 2 * interval), (3, 4 * interval)):
            record = letta_calls()[-1]
            assert wait / 2 <= record.retry_in_seconds <= wait + 0.05, (failed, record.retry_in_seconds)  # type: ignore[attr-defined]
            await asyncio.sleep(record.retry_in_seconds + 0.02)  # type: ignore[attr-defined]
            assert await feedback.retry_unsent() == 0
            assert len(letta_calls()) == failed + 1
    assert [r.message_id for r in letta_calls()] == [str(m) for m in (*due, due[0])]  # type: ignore[attr-defined]
    assert [(await retry_state(db, m))[0] for m in due] == [2, 1, 1]
    assert retries("unavailable") - unavailable == 4  # one per call, in /metrics
    assert await db.fetchval("select count(*) from public.message_feedback where letta_sent_at is null") == 3


async def test_a_feedback_whose_last_attempt_fails_is_given_up_and_logged(
    db: asyncpg.Connection[Any],
    database_url: str,
    signing_key: SigningKey,
    new_pool: PoolFactory,
    unreachable_letta: LettaClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    user_id, _ = await ready_user(database_url, signing_key, own_agent=True)
    message_id = await rated(db, user_id, attempts=RETRY_ATTEMPTS - 1)
    feedback = FeedbackService(await new_pool(), unreachable_letta, retry_interval_seconds=INTERVAL)
    given_up_before = retries("given_up")
    with caplog.at_level(logging.WARNING, logger="service.chat"):
        assert await feedback.retry_unsent() == 0
    assert retries("given_up") - given_up_before == 1
    given_up = [r for r in caplog.records if r.getMessage() == "feedback given up: kept here, not in Letta"]
    assert [(r.message_id, r.attempts) for r in given_up] == [(str(message_id), RETRY_ATTEMPTS)]  # type: ignore[attr-defined]
    assert await retry_state(db, message_id) == (RETRY_ATTEMPTS, float("inf"))
    assert await db.fetchval("select rating from public.message_feedback where message_id = $1", message_id) == "down"
