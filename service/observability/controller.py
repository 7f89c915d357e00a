"""``GET /metrics``: Prometheus's text format, for the admin credential only; and, with ``METRICS_PORT`` set, the
same on a port of its own without authentication, for a scraper on a private network."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST

from service.auth.tokens import Principal
from service.db import Database
from service.errors import DomainError
from service.observability.collector import scrape
from service.settings import Settings

logger = logging.getLogger("service.metrics")


class MetricsController(Controller):
    path = "/metrics"
    include_in_schema = False  # for operators (README, "Metrics"), not for the API's clients

    @get("/")
    async def metrics(
        self, request: Request[Principal, Any, Any], db: NamedDependency[Database], settings: NamedDependency[Settings]
    ) -> Response[bytes]:
        if not request.user.is_admin:  # see Principal.is_admin: ADMIN_API_KEY, or a user whose app_metadata says so
            raise DomainError("admin_only")
        return Response(await scrape(db, settings), media_type=CONTENT_TYPE_LATEST)


async def serve_metrics_port(settings: Settings, database: Callable[[], Database]) -> web.AppRunner:
    """Serve ``GET /metrics`` on ``METRICS_HOST:METRICS_PORT`` (no authentication: keep that port private) in this
    event loop, until the returned runner is cleaned up. ``database`` gives the pool (503 until there is one)."""

    async def metrics(_: web.Request) -> web.Response:
        try:
            db = database()
        except AttributeError:  # the services are not built yet (start-up) or any more (shutdown)
            return web.Response(status=503, text="starting or stopping")
        return web.Response(body=await scrape(db, settings), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    logger.info(
        "metrics served on their own port", extra={"host": settings.metrics_host, "port": settings.metrics_port}
    )
    return runner
