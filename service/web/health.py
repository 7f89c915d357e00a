"""Liveness and readiness.

``/health/live`` answers while the process can serve (container HEALTHCHECK); ``/health/ready``
reports each dependency with its latency and answers 503 when any is down, so a load balancer stops
routing chat to a replica that cannot reach Letta, LiteLLM or the database. Letta also counts as down
when it runs a version this service was not tested with (``service.clients.letta_version``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency

from service.auth.middleware import parse_bearer, same_secret
from service.clients.letta import LettaClient
from service.clients.litellm import LiteLLMClient
from service.db import Database
from service.settings import Settings
from service.web.openapi import ok
from service.web.problems import sentence


async def _database(pool: Database) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(pool.fetchval("select 1"), timeout=3.0)
        result: dict[str, Any] = {"ok": True}
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return {"database": result}


def _public(check: dict[str, Any]) -> dict[str, Any]:
    """What anyone may see of a check: up or down, and a refusal's code with its sentence (they name no host)."""
    return {name: value for name, value in check.items() if name in ("ok", "code", "detail")}


def _is_admin_key(authorization: str | None, settings: Settings) -> bool:
    token, key = parse_bearer(authorization), settings.admin_api_key
    return token is not None and key is not None and same_secret(token, key.get_secret_value())


class HealthController(Controller):
    path = "/health"
    tags = ["health"]
    security = [{}]  # probes carry no token

    @get(
        "/live",
        summary="Liveness: the process is serving",
        responses={200: ok(dict[str, str], "Alive", {"status": "ok"})},
    )
    async def live(self) -> dict[str, str]:
        return {"status": "ok"}

    @get(
        "/ready",
        summary="Readiness: database, Letta and LiteLLM each up or down (latency and errors with the admin key)",
        description=(
            "Public: whether each dependency answers. With `Authorization: Bearer <ADMIN_API_KEY>` also each "
            "check's latency and, for a dependency that is down, its error (which can name internal hosts), and "
            "Letta's version. A Letta running a version this service was not tested with is down with the code "
            "`letta_version_untested` (public)."
        ),
        responses={
            200: ok(
                dict[str, Any],
                "Ready",
                {
                    "status": "ok",
                    "checks": {
                        "database": {"ok": True, "latency_ms": 0.6},
                        "letta": {"ok": True, "latency_ms": 2.9, "version": "0.16.8"},
                        "litellm": {"ok": True, "latency_ms": 1.4},
                    },
                },
            ),
            503: ok(
                dict[str, Any],
                "Letta down",
                {
                    "status": "unavailable",
                    "checks": {
                        "database": {"ok": True, "latency_ms": 0.6},
                        "letta": {
                            "ok": False,
                            "latency_ms": 1.1,
                            "error": "ConnectError: All connection attempts failed",
                        },
                        "litellm": {"ok": True, "latency_ms": 1.4},
                    },
                },
                "A dependency is down",
            ),
        },
    )
    async def ready(
        self,
        request: Request[Any, Any, Any],
        db: NamedDependency[Database],
        letta: NamedDependency[LettaClient],
        litellm: NamedDependency[LiteLLMClient],
        settings: NamedDependency[Settings],
    ) -> Response[dict[str, Any]]:
        checks: dict[str, Any] = {}
        for part in await asyncio.gather(_database(db), letta.health(), litellm.health()):
            checks.update(part)
        for check in checks.values():
            if "code" in check:
                check["detail"] = sentence(check["code"])
        ok = all(check["ok"] for check in checks.values())
        if not _is_admin_key(request.headers.get("authorization"), settings):
            checks = {name: _public(check) for name, check in checks.items()}
        return Response({"status": "ok" if ok else "unavailable", "checks": checks}, status_code=200 if ok else 503)
