"""Rate limits that hold across every service replica: per user, and per anonymous subject (an IP, an email).

The state lives in Postgres (``private.rate_limit_hit``, migration ``20261121000300_rate_limits``):
one GCRA timestamp per (user, bucket), judged by ``private.gcra_step`` (migration
``20261130001000_gcra_helper``) while the hit holds that row's lock, so any number of replicas and
connections share one exact budget. A bucket configured as ``(L, W)`` admits a burst of at most L
hits and, after that, at most L per W seconds on average; a refused hit learns exactly when the
next one will be admitted (``Retry-After``).

Callers who are not signed in (the auth pass-through) are counted the same way by ``hit_key``
(``private.rate_limit_hit_key``, migration ``20261130000100_client_rate_limits``), under a
``subject_key``: an HMAC of the IP or email, never the value itself. That table deletes its expired
rows as it goes, so it holds about the subjects seen within their window.

Fail-open: if the database cannot answer (unreachable, pool exhausted past ``timeout_seconds``,
migration missing), the hit is ADMITTED and a warning is logged (at most every 30 s). A rate limit
protects cost and fairness; it must never be the reason signed-in users are locked out.

The service role (``Principal.user_id is None``) is exempt: it is our own tooling, not a user.

Usage::

    @get("/api/v1/agent/memory", guards=[rate_limit(MEMORY_BUCKET)])  # raises DomainError("rate_limited")

    decision = await check_rate_limit(limiter, principal, MEMORY_BUCKET)  # the decision, without raising

    decision = await limiter.hit_key(subject_key(secret, "ip", "203.0.113.7"), "auth.login.ip")  # anonymous

Chat turns (SSE, JSON and WebSocket) record their hit inside the one statement that starts a turn
(``service.chat.store``), with ``limit_of`` and ``decision`` from here: that hit is on the path to the first
token, and it is not fail-open (a turn needs the database anyway).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Guard

from service.auth.tokens import Principal
from service.db import Database
from service.errors import DomainError
from service.observability.metrics import observe_refusal
from service.web.state import services_of

logger = logging.getLogger("service.rate_limit")

CHAT_BUCKET = "chat"
MEMORY_BUCKET = "memory"
LLM_BUCKET = "llm"  # the LLM proxy (/api/v1/llm): hit in the statement that records the call (service.llm.store)
SEARCH_BUCKET = "search"  # message search (GET /api/v1/chat/search): a query may rank thousands of messages

_HIT_SQL = "select allowed, remaining, retry_after_seconds from private.rate_limit_hit($1, $2, $3, $4)"
_HIT_KEY_SQL = "select allowed, remaining, retry_after_seconds from private.rate_limit_hit_key($1, $2, $3, $4)"
# Errors that mean "the limiter cannot answer", not "the caller did something wrong": fail open on them.
_UNAVAILABLE: tuple[type[BaseException], ...] = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)
_WARN_EVERY_SECONDS = 30.0
# The same pattern the table's check constraint enforces.
_BUCKET_NAME = re.compile(r"^[a-z0-9_.:-]{1,64}$")
# What private.rate_limit_key_counters accepts as a key: a SHA-256 digest in hex (see subject_key).
_SUBJECT_KEY = re.compile(r"^[0-9a-f]{64}$")


def subject_key(secret: bytes, kind: str, value: str) -> str:
    """The key ``hit_key`` counts an anonymous subject under: HMAC-SHA256(secret, kind + value) in hex.

    Never the value itself: the table holds no IP or email address, and without ``secret`` its keys cannot be
    checked against a list of guessed addresses. ``kind`` ("ip", "email") keeps two kinds of subject apart.
    """
    return hmac.new(secret, f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The outcome of one hit. ``enforced`` is False when no limit was applied (limiter down or absent).

    ``remaining`` (hits still admissible right now) is advisory: under contention a hit that queued on
    the row lock is judged by its earlier clock and may report one fewer. ``allowed`` is exact.
    """

    allowed: bool
    bucket: str
    limit: int
    window_seconds: int
    remaining: int
    retry_after_seconds: int
    enforced: bool = True

    def error(self) -> DomainError:
        """The error for a refused hit (a 429 with ``Retry-After`` at the web edge)."""
        return DomainError(
            "rate_limited",
            f"rate limit for {self.bucket!r} reached ({self.limit} per {self.window_seconds} s); "
            f"retry in {self.retry_after_seconds} s",
            retry_after=self.retry_after_seconds,
            bucket=self.bucket,
            limit=self.limit,
            window_seconds=self.window_seconds,
        )


class RateLimiter(Protocol):
    async def hit(self, user_id: uuid.UUID, bucket: str) -> RateDecision: ...


class KeyedRateLimiter(Protocol):
    """Limits for subjects that are not users (a client IP, an email address), by ``subject_key``."""

    async def hit_key(self, key: str, bucket: str) -> RateDecision: ...


class PostgresRateLimiter:
    """GCRA limits in Postgres, exact across replicas; fails open (see the module docstring). Per user
    (``hit``) and per anonymous subject (``hit_key``), with the same buckets and semantics."""

    def __init__(
        self,
        pool: Database,
        limits: Mapping[str, tuple[int, int]],
        *,
        timeout_seconds: float = 2.0,
    ) -> None:
        for bucket, (limit, window) in limits.items():
            # Checked here so a bad setting fails at start-up, not as a 500 on the first request.
            if not _BUCKET_NAME.fullmatch(bucket):
                raise ValueError(f"rate limit bucket {bucket!r} must match {_BUCKET_NAME.pattern}")
            if limit < 1 or window < 1:
                raise ValueError(f"rate limit {bucket!r}: need limit >= 1 and window >= 1 s, got {limit}/{window} s")
        self._pool = pool
        self._limits = dict(limits)
        self._timeout = timeout_seconds
        self._last_warning = float("-inf")

    def limit_of(self, bucket: str) -> tuple[int, int]:
        """``(limit, window_seconds)`` of a configured bucket."""
        try:
            return self._limits[bucket]
        except KeyError:
            # A typo must not silently disable a limit: this is a programming error (a 500).
            raise LookupError(f"no rate limit is configured for bucket {bucket!r}") from None

    def decision(self, bucket: str, row: Mapping[str, Any]) -> RateDecision:
        """The decision in a row of ``private.rate_limit_hit`` (``allowed, remaining, retry_after_seconds``)."""
        limit, window = self.limit_of(bucket)
        if not row["allowed"]:
            observe_refusal(bucket)  # every refusal's decision is made here, whichever statement made the hit
        return RateDecision(
            allowed=row["allowed"],
            bucket=bucket,
            limit=limit,
            window_seconds=window,
            remaining=row["remaining"],
            retry_after_seconds=row["retry_after_seconds"],
        )

    async def hit(self, user_id: uuid.UUID, bucket: str) -> RateDecision:
        try:
            return await self._hit(_HIT_SQL, user_id, bucket)
        except asyncpg.ForeignKeyViolationError:
            # The user was deleted but still holds a valid token; nothing of theirs will work anyway.
            limit, window = self.limit_of(bucket)
            return RateDecision(True, bucket, limit, window, limit, 0, enforced=False)

    async def hit_key(self, key: str, bucket: str) -> RateDecision:
        """One hit for an anonymous subject, ``key`` being its ``subject_key``."""
        if not _SUBJECT_KEY.fullmatch(key):
            # A raw IP or email here is a programming error (a 500), and the table would refuse it anyway.
            raise ValueError("rate limit key must be a subject_key() digest")
        return await self._hit(_HIT_KEY_SQL, key, bucket)

    async def _hit(self, sql: str, subject: uuid.UUID | str, bucket: str) -> RateDecision:
        limit, window = self.limit_of(bucket)
        try:
            # Bounds the wait for a pooled connection too: a saturated pool must not stall every request.
            async with asyncio.timeout(self._timeout):
                row = await self._pool.fetchrow(sql, subject, bucket, limit, window)
        except asyncpg.ForeignKeyViolationError:
            raise
        except _UNAVAILABLE as exc:
            self._warn(bucket, exc)
            return RateDecision(True, bucket, limit, window, limit, 0, enforced=False)
        assert row is not None
        return self.decision(bucket, row)

    def _warn(self, bucket: str, exc: BaseException) -> None:
        # One line per interval, not one per request, while the database is down.
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_SECONDS:
            self._last_warning = now
            logger.warning(
                "rate limiter unavailable, admitting requests unchecked",
                extra={"bucket": bucket, "error": f"{type(exc).__name__}: {exc}"},
            )


def _exempt(bucket: str) -> RateDecision:
    return RateDecision(True, bucket, 0, 0, 0, 0, enforced=False)


async def check_rate_limit(limiter: RateLimiter | None, principal: Principal | None, bucket: str) -> RateDecision:
    """Record a hit for ``principal`` and return the decision without raising.

    Exempt (always allowed, ``enforced=False``): no principal, the service role, or no limiter.
    """
    if limiter is None or principal is None or principal.user_id is None:
        return _exempt(bucket)
    return await limiter.hit(principal.user_id, bucket)


def rate_limit(bucket: str) -> Guard:
    """A guard that counts one hit per request against ``bucket`` and answers 429 when it is spent."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        # scope.get, not connection.user: a public route has no user and is simply not limited here.
        user = connection.scope.get("user")
        principal = user if isinstance(user, Principal) else None
        # Guards get no dependency injection: the limiter comes from the services the app was wired with.
        limiter = services_of(connection.app.state).rate_limiter
        decision = await check_rate_limit(limiter, principal, bucket)
        if not decision.allowed:
            raise decision.error()

    return guard


__all__ = [
    "CHAT_BUCKET",
    "LLM_BUCKET",
    "MEMORY_BUCKET",
    "SEARCH_BUCKET",
    "KeyedRateLimiter",
    "PostgresRateLimiter",
    "RateDecision",
    "RateLimiter",
    "check_rate_limit",
    "rate_limit",
    "subject_key",
]
