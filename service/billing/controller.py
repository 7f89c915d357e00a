"""``/api/v1/user/usage`` and ``/api/v1/user/budget``: what a user spent, and their LiteLLM budget.

Every route acts on the caller; the admin-only budget change is the one that names another user.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from service.auth.dependencies import provide_ready_profile
from service.auth.tokens import Principal
from service.billing import store
from service.billing.budgets import Billing, change_budget, current_budget
from service.billing.schemas import BillingFigures, BudgetChange, BudgetView, DailyUsage, UsageReport, UsageTotals
from service.clients.errors import UpstreamError
from service.db import Database
from service.errors import DomainError
from service.users.profiles import ReadyProfile, get_profile
from service.web.examples import BUDGET_EXAMPLE, USAGE_EXAMPLE, USER_ID
from service.web.openapi import NOT_READY, body_example, documented, ok, problem
from service.web.problems import ProblemError

logger = logging.getLogger("service.billing")

MAX_USAGE_DAYS = 366


class BillingController(Controller):
    path = "/api/v1/user"
    tags = ["user"]

    @get(
        "/usage",
        summary="Per-day usage over a date range, with LiteLLM's spend and budget",
        dependencies={"profile": Provide(provide_ready_profile)},
        responses={
            200: ok(UsageReport, "Two days of use", USAGE_EXAMPLE),
            400: problem(400, "from must not be after to"),
            503: NOT_READY,
        },
    )
    async def usage(
        self,
        profile: NamedDependency[ReadyProfile],
        db: NamedDependency[Database],
        billing: NamedDependency[Billing],
        start: Annotated[
            date | None, QueryParameter(name="from", description="first day (UTC), default 29 days ago")
        ] = None,
        end: Annotated[date | None, QueryParameter(name="to", description="last day (UTC), default today")] = None,
    ) -> UsageReport:
        end = end or datetime.now(UTC).date()
        if start is None:
            start = end - timedelta(days=29) if end > date.min + timedelta(days=29) else date.min
        if start > end:
            raise ProblemError(400, "from must not be after to")
        if (end - start).days >= MAX_USAGE_DAYS:
            raise ProblemError(400, f"the range may span at most {MAX_USAGE_DAYS} days")
        days = [DailyUsage(**dict(row)) for row in await store.usage_days(db, profile.id, start, end)]
        try:
            budget = await billing.budget(str(profile.id), fresh=True)
            figures = BillingFigures(available=budget is not None, budget=BudgetView.of(budget) if budget else None)
        except UpstreamError as exc:
            logger.warning("usage without billing figures", extra={"error": str(exc)})
            figures = BillingFigures(available=False)
        return UsageReport(start=start, end=end, days=days, totals=UsageTotals.of(days), billing=figures)

    @get(
        "/budget",
        summary="Your LiteLLM budget: spend, limit, remaining, reset time",
        dependencies={"profile": Provide(provide_ready_profile)},
        responses={
            200: ok(BudgetView, "Budget", BUDGET_EXAMPLE),
            503: documented(DomainError("billing_unavailable")),
        },
    )
    async def budget(self, profile: NamedDependency[ReadyProfile], billing: NamedDependency[Billing]) -> BudgetView:
        return BudgetView.of(await current_budget(billing, str(profile.id)))

    @post(
        "/budget",
        status_code=200,
        summary="Change a user's budget (admins only: ADMIN_API_KEY, or app_metadata.role = admin)",
        responses={
            200: ok(BudgetView, "New budget", {**BUDGET_EXAMPLE, "max_budget": 50.0, "remaining": 49.5787}),
            403: documented(DomainError("admin_only")),
            404: problem(404, "no such user"),
            422: documented(DomainError("budget_refused")),
        },
    )
    async def set_budget(
        self,
        request: Request[Principal, Any, Any],
        data: Annotated[
            BudgetChange,
            body_example("Raise a budget", {"user_id": USER_ID, "max_budget": 50.0, "budget_duration": "1mo"}),
        ],
        db: NamedDependency[Database],
        billing: NamedDependency[Billing],
    ) -> BudgetView:
        if not request.user.is_admin:  # see Principal.is_admin: user_metadata never makes an admin
            raise DomainError("admin_only")
        if await get_profile(db, data.user_id) is None:
            raise ProblemError(404, "no such user")
        budget = await change_budget(billing, str(data.user_id), data.max_budget, data.budget_duration)
        logger.info(
            "budget changed",
            extra={
                "user_id": str(data.user_id),
                "max_budget": data.max_budget,
                "by": str(request.user.user_id or request.user.role),
            },
        )
        return BudgetView.of(budget)
