"""Application factory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from service.agent import AgentController
from service.auth.controller import AuthController
from service.auth.middleware import auth_middleware
from service.auth.passthrough import AuthPassthroughController
from service.auth.tokens import TokenVerifier
from service.billing import Billing
from service.chat.controller import ChatController
from service.chat.turns import ChatService
from service.chat.websocket import chat_stream
from service.clients.base import http_client
from service.clients.letta import LettaClient
from service.clients.litellm import LiteLLMClient
from service.db import create_pool
from service.errors import ProblemRequest, exception_handlers
from service.health import HealthController
from service.openapi import complete_schema
from service.provisioning.controller import WebhookController
from service.provisioning.service import Provisioner
from service.rate_limit import CHAT_BUCKET, MEMORY_BUCKET, PostgresRateLimiter
from service.request_context import add_request_id_header, configure_logging, request_id_middleware
from service.settings import Settings, get_settings
from service.users import ExportController, UserController


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # One pooled HTTP client per process: connection reuse to Letta/LiteLLM matters for latency.
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        timeout = httpx.Timeout(settings.http_timeout_seconds, connect=5.0)
        async with http_client(limits=limits, timeout=timeout) as http:
            pool = await create_pool(settings)
            app.state.settings = settings
            app.state.http = http
            app.state.db = pool
            app.state.token_verifier = TokenVerifier(
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                jwks_url=settings.jwks_url or None,
                jwks=settings.jwks_inline,
                hs256_secret=settings.jwt_secret,
                http=http,
                cache_seconds=settings.jwks_cache_seconds,
            )
            app.state.letta = LettaClient(http, settings.letta_base_url, settings.letta_api_token)
            app.state.litellm = LiteLLMClient(http, settings.litellm_base_url, settings.litellm_master_key)
            app.state.rate_limiter = PostgresRateLimiter(
                pool,
                {
                    CHAT_BUCKET: (settings.rate_limit_chat_per_minute, 60),
                    MEMORY_BUCKET: (settings.rate_limit_memory_per_minute, 60),
                },
            )
            provisioner = Provisioner(pool, app.state.litellm, app.state.letta, settings)
            app.state.provisioner = provisioner
            app.state.billing = Billing(app.state.litellm)
            chat = ChatService(pool, app.state.letta, app.state.billing, settings, app.state.rate_limiter, provisioner)
            app.state.chat = chat
            stop = asyncio.Event()
            reconciler = asyncio.create_task(provisioner.run_reconciler(stop))
            try:
                yield
            finally:
                stop.set()
                await reconciler
                await chat.drain()
                await provisioner.drain()
                await pool.close()

    app = Litestar(
        route_handlers=[
            HealthController,
            AuthController,
            AuthPassthroughController,
            WebhookController,
            ChatController,
            ExportController,
            chat_stream,
            AgentController,
            UserController,
        ],
        lifespan=[lifespan],
        middleware=[request_id_middleware, auth_middleware],
        exception_handlers=exception_handlers,
        request_class=ProblemRequest,
        before_send=[add_request_id_header],
        cors_config=CORSConfig(
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Accept", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        ),
        openapi_config=OpenAPIConfig(
            title="ai-chat-backend",
            version="0.1.0",
            description="Personal Letta agents with LiteLLM billing, on Supabase.",
            path="/schema",
            render_plugins=[ScalarRenderPlugin()],
            components=Components(
                security_schemes={
                    "SupabaseAccessToken": SecurityScheme(
                        type="http",
                        scheme="bearer",
                        bearer_format="JWT",
                        description="The Supabase Auth access token of the signed-in user.",
                    )
                }
            ),
            security=[{"SupabaseAccessToken": []}],
        ),
        debug=False,
        # Logging is ours (one JSON line per record, see request_context); Litestar must not reconfigure it.
        logging_config=None,
    )
    complete_schema(app.openapi_schema)  # built once here; /schema serves this object
    return app
