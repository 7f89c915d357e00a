"""Budgets and prices from LiteLLM, cached briefly.

LiteLLM is the source of truth for a user's spend and budget; we ask before each turn (cached a few
seconds, so a burst of turns does not become a burst of management calls) and answer 402 before
anything reaches Letta. A budget past its few seconds but younger than a minute is still answered from
the cache while one refresh runs in the background: the call to LiteLLM stays off the path to the first
token, and the turns' own costs are added to the cached spend meanwhile. LiteLLM itself still refuses an
over-budget call mid-turn. Prices come from ``/model/info`` (cached longer) and turn Letta's token counts
into our own per-message cost record, which also covers LiteLLM's known gaps in spend tracking.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from service.clients.errors import UpstreamError
from service.clients.litellm import LiteLLMClient
from service.errors import DomainError

logger = logging.getLogger("service.billing")

BUDGET_TTL_SECONDS = 5.0
BUDGET_MAX_STALE_SECONDS = 60.0  # older than this, a turn waits for LiteLLM's answer
PRICES_TTL_SECONDS = 600.0


@dataclass(frozen=True, slots=True)
class Budget:
    spend: float
    max_budget: float | None
    budget_duration: str | None
    budget_reset_at: str | None

    @property
    def remaining(self) -> float | None:
        return None if self.max_budget is None else max(0.0, self.max_budget - self.spend)

    @property
    def exceeded(self) -> bool:
        return self.max_budget is not None and self.spend >= self.max_budget


@dataclass(frozen=True, slots=True)
class Prices:
    input_per_token: Decimal
    output_per_token: Decimal

    def cost(self, prompt_tokens: int, completion_tokens: int) -> Decimal:
        return self.input_per_token * prompt_tokens + self.output_per_token * completion_tokens


class Billing:
    def __init__(self, litellm: LiteLLMClient) -> None:
        self.litellm = litellm
        self._budgets: dict[str, tuple[float, Budget | None]] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._prices: tuple[float, dict[str, Prices]] | None = None

    async def budget(self, user_id: str, *, fresh: bool = False) -> Budget | None:
        """The user's LiteLLM budget; None when LiteLLM does not know the user. ``fresh`` always asks LiteLLM."""
        cached = self._budgets.get(user_id)
        if cached and not fresh:
            age = time.monotonic() - cached[0]
            if age < BUDGET_TTL_SECONDS:
                return cached[1]
            if age < BUDGET_MAX_STALE_SECONDS:
                self._refresh_in_background(user_id)
                return cached[1]
        return await self._fetch_budget(user_id)

    def _refresh_in_background(self, user_id: str) -> None:
        if user_id in self._refreshing:
            return
        task = asyncio.get_running_loop().create_task(self._refresh(user_id))
        self._refreshing[user_id] = task
        task.add_done_callback(lambda _: self._refreshing.pop(user_id, None))

    async def _refresh(self, user_id: str) -> None:
        try:
            await self._fetch_budget(user_id)
        except UpstreamError as exc:
            # The cached budget keeps serving until it is too old; then a turn asks LiteLLM itself.
            logger.warning("budget refresh failed", extra={"error": str(exc)})

    async def _fetch_budget(self, user_id: str) -> Budget | None:
        info = await self.litellm.user_info(user_id)
        budget = _budget_from(info) if info else None
        if len(self._budgets) > 10_000:  # bound the cache: entries are worthless a minute after their read
            self._budgets.clear()
        self._budgets[user_id] = (time.monotonic(), budget)
        return budget

    def add_spend(self, user_id: str, cost: float) -> None:
        """Account a turn's cost in the cached budget (LiteLLM stays the source of truth at the next read)."""
        cached = self._budgets.get(user_id)
        if cached and cached[1] is not None:
            budget = cached[1]
            self._budgets[user_id] = (cached[0], replace(budget, spend=budget.spend + cost))

    async def prices(self, model: str) -> Prices | None:
        if self._prices is None or time.monotonic() - self._prices[0] > PRICES_TTL_SECONDS:
            table = {}
            for entry in await self.litellm.model_info():
                info = entry.get("model_info") or {}
                name = entry.get("model_name")
                if not name or info.get("input_cost_per_token") is None:
                    continue
                table[name] = Prices(
                    Decimal(str(info["input_cost_per_token"])), Decimal(str(info.get("output_cost_per_token") or 0))
                )
            self._prices = (time.monotonic(), table)
        return self._prices[1].get(model)


def _budget_from(info: dict[str, Any]) -> Budget:
    user = info.get("user_info") or {}
    max_budget = user.get("max_budget")
    return Budget(
        spend=float(user.get("spend") or 0.0),
        max_budget=float(max_budget) if max_budget is not None else None,
        budget_duration=user.get("budget_duration"),
        budget_reset_at=user.get("budget_reset_at"),
    )


def billing_unavailable(exc: UpstreamError) -> DomainError:
    logger.warning("LiteLLM unavailable", extra={"error": str(exc)})
    return DomainError("billing_unavailable")


async def current_budget(billing: Billing, user_id: str) -> Budget:
    """The user's budget as LiteLLM has it now (``billing_unavailable``, ``billing_not_ready``)."""
    try:
        budget = await billing.budget(user_id, fresh=True)
    except UpstreamError as exc:
        raise billing_unavailable(exc) from exc
    if budget is None:
        raise DomainError("billing_not_ready")
    return budget


async def change_budget(billing: Billing, user_id: str, max_budget: float, budget_duration: str | None) -> Budget:
    """Set a user's LiteLLM budget and return it as LiteLLM now has it."""
    fields: dict[str, Any] = {"max_budget": max_budget}
    if budget_duration:
        fields["budget_duration"] = budget_duration
    try:
        await billing.litellm.update_user(user_id, **fields)
    except UpstreamError as exc:
        if exc.status in (400, 422):
            # LiteLLM refused the values (e.g. a duration it cannot schedule): the caller's mistake, not an outage.
            logger.info("LiteLLM refused a budget change", extra={"user_id": user_id, "error": str(exc)})
            raise DomainError("budget_refused") from exc
        raise billing_unavailable(exc) from exc
    return await current_budget(billing, user_id)


def budget_exceeded(budget: Budget) -> DomainError:
    return DomainError(
        "budget_exceeded",
        f"your budget is used up: spent {budget.spend:.4f} of {budget.max_budget or 0:.4f}",
        spend=budget.spend,
        max_budget=budget.max_budget,
        budget_reset_at=budget.budget_reset_at,
    )


async def ensure_within_budget(billing: Billing, user_id: str) -> None:
    """``budget_exceeded`` when the user's spend has reached their budget (the cached figure, see ``Billing``).
    Billing unreachable: nothing is refused here; LiteLLM itself still enforces the budget on each LLM call."""
    try:
        budget = await billing.budget(user_id)
    except UpstreamError as exc:
        logger.warning("budget check skipped", extra={"error": str(exc)})
        return
    if budget is not None and budget.exceeded:
        raise budget_exceeded(budget)
