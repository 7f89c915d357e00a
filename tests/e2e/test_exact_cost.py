"""Money on the real stack: what we record for a user equals what LiteLLM charged the user's key, with Letta
summarizing a full context window, and for cancelled, broken and unpriced turns."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from devstack.doubles.scripted_model import is_summary_request
from devstack.sse import aiter_json_events
from tests.e2e.conftest import StackClient, User

pytestmark = pytest.mark.e2e

# messages.cost and usage_metrics.total_cost keep 8 decimals: each charge may round by half of the last one.
EXACT = Decimal("0.00000001")


async def charged(client: StackClient, user: User) -> Decimal:
    """What LiteLLM charged the user (their one key), as LiteLLM reports it."""
    info = await client.litellm_user(user.id)
    assert info is not None
    return Decimal(str(info["user_info"]["spend"]))


async def wait_reconciled(client: StackClient, user: User, timeout: float = 60.0) -> None:
    """Every turn of the user stored and its cost final (LiteLLM's records settled and read)."""
    await client.wait_for(
        "select count(*) filter (where cost_final = false or status = 'pending') = 0 "
        "and count(*) filter (where cost_final) > 0 from public.messages where user_id = $1",
        user.id,
        timeout=timeout,
    )
    # ... and the calls on the user's key outside turns (a thread's title) settled too.
    await client.wait_for(
        "select not exists (select 1 from public.llm_calls where user_id = $1 and not cost_final)",
        user.id,
        timeout=timeout,
    )


async def recorded(client: StackClient, user: User) -> dict[str, Decimal]:
    """The user's cost as each of our records has it."""
    # Turns (messages) and the other calls on the user's key (llm_calls: thread titles, the LLM proxy).
    messages = await client.db.fetchval(
        "select coalesce((select sum(cost) from public.messages where user_id = $1), 0) + "
        "coalesce((select sum(cost) from public.llm_calls where user_id = $1), 0)",
        user.id,
    )
    days = await client.db.fetchval("select sum(total_cost) from public.usage_metrics where user_id = $1", user.id)
    usage = await client.http.get(f"{client.stack.config.service_url}/api/v1/user/usage", headers=user.headers)
    assert usage.status_code == 200, usage.text
    return {
        "messages + llm_calls": messages or Decimal(0),
        "usage_metrics": days or Decimal(0),
        "/user/usage": Decimal(str(usage.json()["totals"]["total_cost"])),
    }


async def assert_recorded_equals_charged(client: StackClient, user: User, calls: int) -> None:
    expected = await charged(client, user)
    assert expected > 0
    for record, value in (await recorded(client, user)).items():
        assert abs(value - expected) <= EXACT * calls, (record, value, expected)


async def user_with_context_window(client: StackClient, window: int) -> User:
    """A user whose agent was created with ``window`` tokens of context (the service restarted around it)."""
    stack = client.stack
    await asyncio.to_thread(stack.restart_service, LLM_CONTEXT_WINDOW=str(window))
    try:
        return await client.sign_up("Sue")
    finally:
        stack.config.service_env.pop("LLM_CONTEXT_WINDOW")
        await asyncio.to_thread(stack.restart_service)


async def calls_on_key(client: StackClient, user: User) -> list[dict[str, Any]]:
    key = await client.db.fetchval("select litellm_key from private.litellm_keys where user_id = $1", user.id)
    return [r for r in await client.upstream_requests() if r["api_key"] == key and r["path"].endswith("completions")]


async def test_recorded_cost_equals_litellm_charge_while_letta_summarizes(client: StackClient) -> None:
    user = await user_with_context_window(client, 3000)
    estimates = Decimal(0)
    for part in range(8):
        reply = await client.chat(user, f"[[long 120]] part {part}")
        assert reply.status_code == 200, reply.text
        estimates += Decimal(str(reply.json()["cost"] or 0))
    calls = await calls_on_key(client, user)
    summaries = [c for c in calls if is_summary_request(c["body"].get("messages") or [])]
    assert summaries, "Letta never summarized: the window did not fill"
    # What Letta's run usage (our estimate) left out: the summarization calls LiteLLM charged for.
    assert estimates < await charged(client, user)

    await wait_reconciled(client, user)
    await assert_recorded_equals_charged(client, user, len(calls))

    # The budget check sees the whole spend, summarization included: at the budget, nothing more starts.
    spend = await charged(client, user)
    admin = {"Authorization": f"Bearer {client.stack.config.admin_api_key}"}
    changed = await client.http.post(
        f"{client.stack.config.service_url}/api/v1/user/budget",
        headers=admin,
        json={"user_id": str(user.id), "max_budget": float(spend)},
    )
    assert changed.status_code == 200, changed.text
    refused = await client.chat(user, "one more?")
    assert refused.status_code == 402 and refused.json()["code"] == "budget_exceeded", refused.text
    search = await client.http.get(
        f"{client.stack.config.service_url}/api/v1/agent/memory", headers=user.headers, params={"q": "cat"}
    )
    assert search.status_code == 402, search.text


async def test_cancelled_broken_and_unpriced_turns_record_what_litellm_charged(client: StackClient) -> None:
    user = await client.sign_up("Tom")
    base = client.stack.config.service_url

    # Cancelled after the first token: Letta counts nothing of it, LiteLLM charged the call.
    async with client.http.stream(
        "POST",
        f"{base}/api/v1/chat/message",
        headers={**user.headers, "Accept": "text/event-stream"},
        json={"content": "[[slow]] a story"},
        timeout=60,
    ) as response:
        async for name, _ in aiter_json_events(response):
            if name == "delta":
                cancel = await client.http.post(f"{base}/api/v1/chat/cancel", headers=user.headers)
                assert cancel.status_code == 202

    # Broken: the upstream stream drops mid-reply.
    await client.litellm("POST", "/_double/faults", json={"route": "/v1/chat/completions", "drop_after_chunks": 3})
    broken = await client.chat(user, "[[long 40]] this one breaks")
    assert broken.status_code in (502, 503), broken.text

    # Unpriced: a fresh replica whose price lookup fails stores the turn with no cost, for now.
    await asyncio.to_thread(client.stack.restart_service)
    await client.litellm("POST", "/_double/faults", json={"route": "/model/info", "count": 3, "status": 500})
    unpriced = await client.chat(user, "hello")
    assert unpriced.status_code == 200 and unpriced.json()["cost"] is None, unpriced.text
    await client.litellm("DELETE", "/_double/faults")

    turns = await client.db.fetch(
        "select turn_id, status, cost, cost_final from public.messages where user_id = $1 and cost_final is not null",
        user.id,
    )
    assert {t["status"] for t in turns} >= {"cancelled", "failed", "complete"}, turns
    await wait_reconciled(client, user)
    final = await client.db.fetch("select status, cost from public.messages where user_id = $1 and cost_final", user.id)
    assert all(row["cost"] is not None for row in final), final  # the missing price was filled in
    await assert_recorded_equals_charged(client, user, len(await calls_on_key(client, user)))
