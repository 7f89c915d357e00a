"""What the app factory adds for metrics and traces: the middleware, the routes, and a lifespan (the metrics port,
the traces flushed at shutdown)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar
from litestar.types import ControllerRouterHandler, Middleware

from service.observability import tracing
from service.observability.controller import MetricsController, serve_metrics_port
from service.observability.metrics import metrics_middleware
from service.settings import Settings
from service.web.state import services_of

ROUTES: list[ControllerRouterHandler] = [MetricsController]


def instrument(settings: Settings) -> list[Middleware]:
    """Start tracing if it is configured; the middleware to put first (outermost) in the app's list."""
    tracing.configure(settings)
    return [*tracing.server_middleware(), metrics_middleware]


def lifespan(settings: Settings) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """Before the services' lifespan (``service.wiring.lifespan``), so that it ends after theirs: the metrics port
    while the app runs; at shutdown, once the last turns are stored, the traces still buffered are sent."""

    @asynccontextmanager
    async def run(app: Litestar) -> AsyncIterator[None]:
        port = await serve_metrics_port(settings, lambda: services_of(app.state).db) if settings.metrics_port else None
        try:
            yield
        finally:
            if port is not None:
                await port.cleanup()
            tracing.stop_configured()

    return run
