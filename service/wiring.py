"""The one place services are built, and how handlers receive them: by name and type, through Litestar's
dependency injection (``DEPENDENCIES``). A handler that declares ``chat: ChatService`` gets the process's
``ChatService``; the app's lifespan builds them all at start-up and closes them at shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide

from service.agents.lifecycle import AgentLifecycle
from service.agents.service import AgentService
from service.auth.passthrough.service import AuthPassthrough, bucket_limits
from service.auth.tokens import TokenVerifier
from service.billing.budgets import Billing
from service.billing.reconcile import CostReconciler
from service.chat.feedback import FeedbackService
from service.chat.service import ChatService
from service.clients.http import http_client
from service.clients.letta import LettaClient
from service.clients.letta_version import LettaVersion
from service.clients.litellm import LiteLLMClient
from service.db import Database, create_pool
from service.llm.service import LLMProxy
from service.provisioning.service import Provisioner
from service.rate_limit import CHAT_BUCKET, LLM_BUCKET, MEMORY_BUCKET, SEARCH_BUCKET, PostgresRateLimiter
from service.settings import Settings
from service.threads.service import ThreadService
from service.threads.titles import ThreadTitler
from service.web.state import services_of


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    http: httpx.AsyncClient
    db: Database
    tokens: TokenVerifier
    letta: LettaClient
    litellm: LiteLLMClient
    rate_limiter: PostgresRateLimiter
    billing: Billing
    provisioner: Provisioner
    chat: ChatService
    agents: AgentService
    costs: CostReconciler
    passthrough: AuthPassthrough | None  # None while AUTH_PASSTHROUGH_ENABLED is off
    llm: LLMProxy
    threads: ThreadService
    feedback: FeedbackService


def build_services(settings: Settings, http: httpx.AsyncClient, db: Database) -> Services:
    def secret(value: Any) -> str | None:
        return value.get_secret_value() if value is not None else None

    version = LettaVersion(http, settings.letta_base_url, allow_untested=settings.letta_allow_untested_version)
    letta = LettaClient(http, settings.letta_base_url, secret(settings.letta_api_token), version)
    litellm = LiteLLMClient(http, settings.litellm_base_url, settings.litellm_master_key.get_secret_value())
    tokens = TokenVerifier(
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        jwks_url=settings.jwks_url or None,
        jwks=settings.jwks_inline,
        hs256_secret=secret(settings.jwt_secret),
        http=http,
        cache_seconds=settings.jwks_cache_seconds,
    )
    rate_limiter = PostgresRateLimiter(
        db,
        {
            CHAT_BUCKET: (settings.rate_limit_chat_per_minute, 60),
            MEMORY_BUCKET: (settings.rate_limit_memory_per_minute, 60),
            LLM_BUCKET: (settings.rate_limit_llm_per_minute, 60),
            SEARCH_BUCKET: (settings.rate_limit_search_per_minute, 60),
        },
    )
    lifecycle = AgentLifecycle(db, letta, litellm.openai_base_url, settings)
    provisioner = Provisioner(db, litellm, letta, settings, lifecycle)
    billing = Billing(litellm)
    chat = ChatService(db, letta, billing, settings, rate_limiter, provisioner)
    agents = AgentService(letta, lifecycle, chat, billing)
    costs = CostReconciler(db, litellm, billing, settings)
    passthrough = None
    if settings.auth_passthrough_enabled:
        passthrough = AuthPassthrough.from_settings(settings, PostgresRateLimiter(db, bucket_limits(settings)))
    llm = LLMProxy(db, http, billing, rate_limiter, settings)
    chat.titler = ThreadTitler(db, llm, settings)  # a thread's title is a call on the user's key, like the proxy's
    threads = ThreadService(db, letta)
    feedback = FeedbackService(db, letta, retry_interval_seconds=settings.feedback_retry_interval_seconds)
    return Services(
        settings,
        http,
        db,
        tokens,
        letta,
        litellm,
        rate_limiter,
        billing,
        provisioner,
        chat,
        agents,
        costs,
        passthrough,
        llm,
        threads,
        feedback,
    )


def lifespan(settings: Settings) -> Callable[[Litestar], Any]:
    @asynccontextmanager
    async def run(app: Litestar) -> AsyncIterator[None]:
        # One pooled HTTP client per process: connection reuse to Letta/LiteLLM matters for latency.
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        timeout = httpx.Timeout(settings.http_timeout_seconds, connect=5.0)
        # Its calls are observed (metrics, traces) by upstream: the route templates under each base URL.
        upstreams = {
            "letta": settings.letta_base_url,
            "litellm": settings.litellm_base_url,
            "supabase": settings.supabase_url,
        }
        async with http_client(limits=limits, timeout=timeout, upstreams=upstreams) as http:
            db = await create_pool(settings)
            services = build_services(settings, http, db)
            if services.letta.version is not None:
                try:
                    await services.letta.version.check_at_start()  # an untested Letta version stops the start here
                except BaseException:
                    await db.close()
                    raise
            app.state.services = services
            stop = asyncio.Event()
            loops = [
                asyncio.create_task(services.provisioner.run_reconciler(stop)),
                asyncio.create_task(services.chat.recovery.run(stop)),
                asyncio.create_task(services.chat.journal.run(stop)),
                asyncio.create_task(services.costs.run(stop)),
                asyncio.create_task(services.feedback.run(stop)),
            ]
            try:
                yield
            finally:
                stop.set()
                await asyncio.gather(*loops)
                await services.chat.drain()
                if services.chat.titler is not None:  # titles of the turns just finished: calls on the proxy
                    await services.chat.titler.drain()
                await services.llm.drain()
                await services.feedback.drain()
                await services.provisioner.drain()
                await db.close()

    return run


# Typed providers: what a handler declares (``chat: ChatService``) is what mypy checks it receives.
def _settings(state: State) -> Settings:
    return services_of(state).settings


def _http(state: State) -> httpx.AsyncClient:
    return services_of(state).http


def _db(state: State) -> Database:
    return services_of(state).db


def _tokens(state: State) -> TokenVerifier:
    return services_of(state).tokens


def _letta(state: State) -> LettaClient:
    return services_of(state).letta


def _litellm(state: State) -> LiteLLMClient:
    return services_of(state).litellm


def _billing(state: State) -> Billing:
    return services_of(state).billing


def _provisioner(state: State) -> Provisioner:
    return services_of(state).provisioner


def _chat(state: State) -> ChatService:
    return services_of(state).chat


def _agents(state: State) -> AgentService:
    return services_of(state).agents


def _llm(state: State) -> LLMProxy:
    return services_of(state).llm


def _threads(state: State) -> ThreadService:
    return services_of(state).threads


def _feedback(state: State) -> FeedbackService:
    return services_of(state).feedback


DEPENDENCIES: dict[str, Provide] = {
    name: Provide(provide, sync_to_thread=False)
    for name, provide in {
        "settings": _settings,
        "http": _http,
        "db": _db,
        "tokens": _tokens,
        "letta": _letta,
        "litellm": _litellm,
        "billing": _billing,
        "provisioner": _provisioner,
        "chat": _chat,
        "threads": _threads,
        "feedback": _feedback,
        "agents": _agents,
        "llm": _llm,
    }.items()
}
