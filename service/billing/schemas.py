"""What ``/api/v1/user/usage`` and ``/api/v1/user/budget`` take and answer with."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Annotated

import msgspec

from service.billing.budgets import Budget


class BudgetView(msgspec.Struct, kw_only=True):
    spend: float
    max_budget: float | None
    remaining: float | None
    budget_duration: str | None
    budget_reset_at: str | None

    @classmethod
    def of(cls, budget: Budget) -> BudgetView:
        return cls(
            spend=budget.spend,
            max_budget=budget.max_budget,
            remaining=budget.remaining,
            budget_duration=budget.budget_duration,
            budget_reset_at=budget.budget_reset_at,
        )


class BillingFigures(msgspec.Struct, kw_only=True):
    """LiteLLM's view; ``available`` is false when LiteLLM could not be asked (our totals still stand)."""

    available: bool
    budget: BudgetView | None = None


class DailyUsage(msgspec.Struct, kw_only=True):
    date: date
    total_messages: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    total_cost: Decimal


class UsageTotals(msgspec.Struct, kw_only=True):
    total_messages: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    total_cost: Decimal

    @classmethod
    def of(cls, days: list[DailyUsage]) -> UsageTotals:
        return cls(
            total_messages=sum(d.total_messages for d in days),
            prompt_tokens=sum(d.prompt_tokens for d in days),
            completion_tokens=sum(d.completion_tokens for d in days),
            total_tokens=sum(d.total_tokens for d in days),
            total_cost=sum((d.total_cost for d in days), Decimal(0)),
        )


class UsageReport(msgspec.Struct, kw_only=True):
    start: date
    end: date
    days: list[DailyUsage]
    totals: UsageTotals
    billing: BillingFigures


class BudgetChange(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    user_id: uuid.UUID
    max_budget: Annotated[float, msgspec.Meta(ge=0, le=1_000_000)]
    # ASCII digits ([0-9], not \d), no zero: what LiteLLM's reset schedule understands.
    budget_duration: Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,2}(s|m|h|d|w|mo)$")] | None = None
