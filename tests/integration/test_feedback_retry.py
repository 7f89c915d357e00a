"""The retry of feedback whose send to Letta failed, on the real Postgres: which feedback it picks (unsent for an
interval, with a step or a run to find one in) a page at a time, and how it treats a Letta that does not answer (one
call per pass, then passes skipped for a growing wait). Letta is unreachable here (connection refused); that the
retry delivers is tested on the real stack (tests/e2e/test_feedback_retry.py)."""

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
from service.chat.feedback import FeedbackService
from service.clients.letta import LettaClient
from tests.integration.support import UNREACHABLE, PoolFactory, ready_user
from tests.integration.test_feedback import a_turn

pytestmark = pytest.mark.integration


async def rated(
    db: asyncpg.Connection[Any],
    user_id: uuid.UUID,
    *,
    run: bool = True,
    step: str | None = None,
    sent: bool = False,
    age_seconds: float = 3600,
) -> uuid.UUID:
    """A reply of the user's with feedback, as the service leaves it: sent to Letta or not, changed ``age_seconds``
    ago; its turn ran in Letta (``run``) or not."""
    reply: uuid.UUID = (await a_turn(db, user_id))["assistant"]
    if not run:
        await db.execute("update public.messages set letta_run_id = null where id = $1", reply)
    await db.execute(
        "insert into public.message_feedback (message_id, user_id, rating, letta_step_id, letta_sent_at, updated_at) "
        "values ($1, $2, 'down', $3, case when $4 then now() end, now() - make_interval(secs => $5))",
        reply,
        user_id,
        step,
        sent,
        age_seconds,
    )
    return reply


async def test_the_retry_picks_unsent_feedback_with_a_step_or_a_run_a_page_at_a_time(
    db: asyncpg.Connection[Any], database_url: str, signing_key: SigningKey
) -> None:
    user_id, _ = await ready_user(database_url, signing_key, own_agent=True)
    due = [await rated(db, user_id) for _ in range(3)]
    due.append(await rated(db, user_id, run=False, step="step-00000000-0000-4000-8000-000000000001"))
    await rated(db, user_id, sent=True)  # Letta has it
    await rated(db, user_id, age_seconds=0)  # just changed: its own sender is at it
    await rated(db, user_id, run=False)  # no step, no run: nothing in Letta to send it to
    due.sort()

    first = await db.fetch(store.UNSENT_FEEDBACK, 60.0, None, 3)
    assert [row["message_id"] for row in first] == due[:3]
    rest = await db.fetch(store.UNSENT_FEEDBACK, 60.0, first[-1]["message_id"], 3)
    assert [row["message_id"] for row in rest] == due[3:]
    # Unsent for less than the interval: not yet.
    assert await db.fetch(store.UNSENT_FEEDBACK, 7200.0, None, 10) == []

    # A pass reads the unsent rows only, by their partial index (whatever the table holds besides).
    async with db.transaction():
        await db.execute("set local enable_seqscan = off")
        plan = "\n".join(row[0] for row in await db.fetch("explain " + store.UNSENT_FEEDBACK, 60.0, None, 20))
    assert "message_feedback_unsent_idx" in plan, plan


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
    due = sorted([await rated(db, user_id) for _ in range(3)])
    interval = 0.1
    feedback = FeedbackService(await new_pool(), unreachable_letta, retry_interval_seconds=interval)

    def letta_calls() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage() == "feedback retry: Letta unavailable"]

    with caplog.at_level(logging.WARNING, logger="service.chat"):
        # The first pass stops at its first feedback: one call to Letta, not three; a wait of about an interval.
        assert await feedback.retry_unsent() == 0
        assert [r.message_id for r in letta_calls()] == [str(due[0])]  # type: ignore[attr-defined]
        # At once again: skipped, no call.
        assert await feedback.retry_unsent() == 0
        assert len(letta_calls()) == 1
        # Each failed pass doubles the wait (with jitter: between half and all of it), from the same feedback on.
        for failed, wait in ((1, interval), (2, 2 * interval), (3, 4 * interval)):
            record = letta_calls()[-1]
            assert wait / 2 <= record.retry_in_seconds <= wait + 0.05, (failed, record.retry_in_seconds)  # type: ignore[attr-defined]
            await asyncio.sleep(record.retry_in_seconds + 0.02)  # type: ignore[attr-defined]
            assert await feedback.retry_unsent() == 0
            assert len(letta_calls()) == failed + 1
            assert letta_calls()[-1].message_id == str(due[0])  # type: ignore[attr-defined]
    assert await db.fetchval("select count(*) from public.message_feedback where letta_sent_at is null") == 3
