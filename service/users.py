"""``/api/v1/user``: profile, usage, budget, account deletion; and the chat export.

Every route acts on the caller (``principal.user_id``); the only route that names another user is the
admin-only budget change.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import FromQuery, QueryParameter
from litestar.response import Stream

from service.auth.tokens import Principal
from service.billing import Billing, Budget
from service.chat.schemas import HISTORY_COLUMNS, StoredMessage
from service.clients.base import UpstreamError
from service.errors import ProblemError
from service.openapi import MESSAGE_EXAMPLE, NOT_READY, PROFILE_EXAMPLE, USER_ID, body_example, ok, problem
from service.profiles import Profile, get_profile
from service.provisioning.deps import ActiveProfile, AnyProfile, provide_active_profile, provide_profile, require_user
from service.provisioning.service import Provisioner
from service.supabase_admin import delete_auth_user

logger = logging.getLogger("service.users")

MAX_USAGE_DAYS = 366
EXPORT_BATCH = 500


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


class AccountDeleted(msgspec.Struct):
    deleted: bool
    cleanup_complete: bool


def _billing_down(exc: UpstreamError) -> ProblemError:
    logger.warning("LiteLLM unavailable", extra={"error": str(exc)})
    return ProblemError(
        503, "billing (LiteLLM) is unreachable right now", title="Billing Unavailable", headers={"Retry-After": "10"}
    )


class UserController(Controller):
    path = "/api/v1/user"
    tags = ["user"]

    @get(
        "/profile",
        dependencies={"profile": Provide(provide_profile)},
        summary="Your profile (works before your agent is ready)",
        responses={
            200: ok(Profile, "Profile", PROFILE_EXAMPLE),
            404: problem(404, "no profile yet: it is being created"),
        },
    )
    async def profile(self, profile: AnyProfile) -> Profile:
        return profile

    @get(
        "/usage",
        summary="Per-day usage over a date range, with LiteLLM's spend and budget",
        dependencies={"profile": Provide(provide_active_profile)},
        responses={
            200: ok(
                UsageReport,
                "Two days of use",
                {
                    "start": "2026-11-20",
                    "end": "2026-11-21",
                    "days": [
                        {
                            "date": "2026-11-21",
                            "total_messages": 6,
                            "prompt_tokens": 2436,
                            "completion_tokens": 42,
                            "total_tokens": 2478,
                            "total_cost": "0.00039060",
                        }
                    ],
                    "totals": {
                        "total_messages": 6,
                        "prompt_tokens": 2436,
                        "completion_tokens": 42,
                        "total_tokens": 2478,
                        "total_cost": "0.00039060",
                    },
                    "billing": {
                        "available": True,
                        "budget": {
                            "spend": 0.4213,
                            "max_budget": 10.0,
                            "remaining": 9.5787,
                            "budget_duration": "1mo",
                            "budget_reset_at": "2026-12-01T00:00:00Z",
                        },
                    },
                },
            ),
            400: problem(400, "from must not be after to"),
            503: NOT_READY,
        },
    )
    async def usage(
        self,
        profile: ActiveProfile,
        state: State,
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
        rows = await state.db.fetch(
            "select date, total_messages, prompt_tokens, completion_tokens, total_tokens, total_cost "
            "from public.usage_metrics where user_id = $1 and date between $2 and $3 order by date",
            profile.id,
            start,
            end,
        )
        days = [DailyUsage(**dict(row)) for row in rows]
        totals = UsageTotals(
            total_messages=sum(d.total_messages for d in days),
            prompt_tokens=sum(d.prompt_tokens for d in days),
            completion_tokens=sum(d.completion_tokens for d in days),
            total_tokens=sum(d.total_tokens for d in days),
            total_cost=sum((d.total_cost for d in days), Decimal(0)),
        )
        billing: Billing = state.billing
        try:
            budget = await billing.budget(str(profile.id), fresh=True)
            figures = BillingFigures(available=budget is not None, budget=BudgetView.of(budget) if budget else None)
        except UpstreamError as exc:
            logger.warning("usage without billing figures", extra={"error": str(exc)})
            figures = BillingFigures(available=False)
        return UsageReport(start=start, end=end, days=days, totals=totals, billing=figures)

    @get(
        "/budget",
        summary="Your LiteLLM budget: spend, limit, remaining, reset time",
        dependencies={"profile": Provide(provide_active_profile)},
        responses={
            200: ok(
                BudgetView,
                "Budget",
                {
                    "spend": 0.4213,
                    "max_budget": 10.0,
                    "remaining": 9.5787,
                    "budget_duration": "1mo",
                    "budget_reset_at": "2026-12-01T00:00:00Z",
                },
            ),
            503: problem(503, "billing (LiteLLM) is unreachable right now"),
        },
    )
    async def budget(self, profile: ActiveProfile, state: State) -> BudgetView:
        billing: Billing = state.billing
        try:
            budget = await billing.budget(str(profile.id), fresh=True)
        except UpstreamError as exc:
            raise _billing_down(exc) from exc
        if budget is None:
            raise ProblemError(503, "your billing account is still being set up", headers={"Retry-After": "5"})
        return BudgetView.of(budget)

    @post(
        "/budget",
        status_code=200,
        summary="Change a user's budget (admins and the service role only)",
        responses={
            200: ok(
                BudgetView,
                "New budget",
                {
                    "spend": 0.4213,
                    "max_budget": 50.0,
                    "remaining": 49.5787,
                    "budget_duration": "1mo",
                    "budget_reset_at": "2026-12-01T00:00:00Z",
                },
            ),
            403: problem(403, "only an admin or the service role can change budgets"),
            404: problem(404, "no such user"),
        },
    )
    async def set_budget(
        self,
        request: Request[Principal, Any, Any],
        data: Annotated[
            BudgetChange,
            body_example("Raise a budget", {"user_id": USER_ID, "max_budget": 50.0, "budget_duration": "1mo"}),
        ],
        state: State,
    ) -> BudgetView:
        if not request.user.is_admin:
            raise ProblemError(403, "only an admin or the service role can change budgets")
        if await get_profile(state.db, data.user_id) is None:
            raise ProblemError(404, "no such user")
        fields: dict[str, Any] = {"max_budget": data.max_budget}
        if data.budget_duration:
            fields["budget_duration"] = data.budget_duration
        billing: Billing = state.billing
        try:
            await state.litellm.update_user(str(data.user_id), **fields)
            budget = await billing.budget(str(data.user_id), fresh=True)
        except UpstreamError as exc:
            if exc.status in (400, 422):
                # LiteLLM refused the values (e.g. a duration it cannot schedule): the caller's mistake, not an outage.
                raise ProblemError(422, f"LiteLLM refused the change: {exc}"[:500]) from exc
            raise _billing_down(exc) from exc
        logger.info(
            "budget changed",
            extra={
                "user_id": str(data.user_id),
                "max_budget": data.max_budget,
                "by": str(request.user.user_id or "service_role"),
            },
        )
        assert budget is not None
        return BudgetView.of(budget)

    @delete(
        "/",
        status_code=200,
        summary="Delete your account: agent, billing user, history and login",
        responses={
            200: ok(AccountDeleted, "Deleted", {"deleted": True, "cleanup_complete": True}),
            503: problem(503, "could not delete your login right now; nothing was deleted, retry shortly"),
        },
    )
    async def delete_account(self, request: Request[Principal, Any, Any], state: State) -> AccountDeleted:
        user_id = require_user(request.user)
        settings = state.settings
        if not settings.supabase_service_key:
            raise ProblemError(503, "account deletion is not configured: set SUPABASE_SERVICE_KEY")
        try:
            # GoTrue deletes auth.users; the cascade removes our rows and the delete trigger queues the
            # external clean-up durably, so a crash from here on loses nothing. Already gone = success.
            await delete_auth_user(state.http, settings.supabase_url, settings.supabase_service_key, user_id)
        except UpstreamError as exc:
            logger.warning("auth user deletion failed", extra={"user_id": str(user_id), "error": str(exc)})
            raise ProblemError(
                503,
                "could not delete your login right now; nothing was deleted, retry shortly",
                headers={"Retry-After": "10"},
            ) from exc
        provisioner: Provisioner = state.provisioner
        complete = await provisioner.deprovision(user_id)
        logger.info("account deleted", extra={"user_id": str(user_id), "cleanup_complete": complete})
        return AccountDeleted(deleted=True, cleanup_complete=complete)


async def _history_batches(db: Any, user_id: uuid.UUID) -> AsyncIterator[list[StoredMessage]]:
    """All the user's messages oldest first, in keyset batches: no long transaction, bounded memory."""
    cursor: tuple[datetime, uuid.UUID] | None = None
    while True:
        condition, args = ("and (created_at, id) > ($3, $4)", [*cursor]) if cursor else ("", [])
        rows = await db.fetch(
            f"select {HISTORY_COLUMNS} from public.messages where user_id = $1 {condition} "  # noqa: S608
            "order by created_at, id limit $2",
            user_id,
            EXPORT_BATCH,
            *args,
        )
        if not rows:
            return
        batch = [StoredMessage(**dict(row)) for row in rows]
        yield batch
        cursor = (batch[-1].created_at, batch[-1].id)


async def export_json(db: Any, user_id: uuid.UUID) -> AsyncIterator[bytes]:
    header = {"user_id": str(user_id), "exported_at": datetime.now(UTC).isoformat()}
    yield msgspec.json.encode(header)[:-1] + b', "messages": ['
    first = True
    async for batch in _history_batches(db, user_id):
        for message in batch:
            yield (b"" if first else b",") + msgspec.json.encode(message)
            first = False
    yield b"]}"


async def export_markdown(db: Any, user_id: uuid.UUID) -> AsyncIterator[bytes]:
    yield f"# Chat export\n\nExported {datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n".encode()
    async for batch in _history_batches(db, user_id):
        lines = []
        for m in batch:
            who = "You" if m.role == "user" else "Assistant"
            note = "" if m.status == "complete" else f" _({m.status})_"
            lines.append(f"\n### {who} · {m.created_at:%Y-%m-%d %H:%M:%S}{note}\n\n{m.content}\n")
        yield "".join(lines).encode()


class ExportController(Controller):
    path = "/api/v1/chat"
    tags = ["chat"]

    @get(
        "/export",
        summary="Your whole chat history as a streamed download (JSON or Markdown)",
        dependencies={"profile": Provide(provide_active_profile)},
        responses={
            200: ok(
                dict[str, Any],
                "JSON export (format=json); Markdown with format=markdown",
                {"user_id": USER_ID, "exported_at": "2026-11-21T10:20:00Z", "messages": [MESSAGE_EXAMPLE]},
            )
        },
    )
    async def export(
        self, profile: ActiveProfile, state: State, format: FromQuery[Literal["json", "markdown"]] = "json"
    ) -> Response[Any]:
        stamp = datetime.now(UTC).strftime("%Y%m%d")
        if format == "markdown":
            body, media, ext = export_markdown(state.db, profile.id), "text/markdown", "md"  # Litestar adds the charset
        else:
            body, media, ext = export_json(state.db, profile.id), "application/json", "json"
        return Stream(
            body, media_type=media, headers={"Content-Disposition": f'attachment; filename="chat-export-{stamp}.{ext}"'}
        )
