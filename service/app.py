"""Application factory."""

from __future__ import annotations

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from service.agents.admin_controller import AgentAdminController
from service.agents.controller import AgentController
from service.auth.controller import AuthController
from service.auth.middleware import auth_middleware
from service.auth.passthrough.controller import AuthPassthroughController
from service.billing.controller import BillingController
from service.chat.controller import ChatController
from service.chat.feedback_controller import FeedbackController
from service.chat.search_controller import ChatSearchController
from service.chat.ui_controller import ChatUIController
from service.chat.websocket import chat_stream
from service.llm.controller import LLMController
from service.observability import setup as observability
from service.provisioning.controller import WebhookController
from service.settings import Settings, get_settings
from service.threads.controller import ThreadController
from service.users.controller import UserController
from service.web.docs import docs_plugins
from service.web.health import HealthController
from service.web.openapi import complete_schema
from service.web.problems import ProblemRequest, cors_refusal_as_problem, exception_handlers
from service.web.request_context import add_request_id_header, configure_logging, request_id_middleware
from service.wiring import DEPENDENCIES, lifespan


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()
    configure_logging(settings.log_level)

    app = Litestar(
        route_handlers=[
            HealthController,
            AuthController,
            AuthPassthroughController,
            WebhookController,
            ChatController,
            ChatUIController,
            ChatSearchController,
            FeedbackController,
            ThreadController,
            chat_stream,
            AgentController,
            AgentAdminController,
            UserController,
            BillingController,
            LLMController,
            *observability.ROUTES,
        ],
        dependencies=DEPENDENCIES,
        # Observability's first: it ends last, after the services' (the traces of their last turns flushed).
        lifespan=[observability.lifespan(settings), lifespan(settings)],
        middleware=[*observability.instrument(settings), request_id_middleware, auth_middleware],
        exception_handlers=exception_handlers,
        request_class=ProblemRequest,
        # The CORS refusal's problem mints the request id that the header hook then echoes.
        before_send=[cors_refusal_as_problem, add_request_id_header],
        cors_config=CORSConfig(
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Accept",
                "X-Request-ID",
                # What OpenAI's JavaScript SDK sends from a browser (the LLM proxy, /api/v1/llm).
                *(f"X-Stainless-{name}" for name in ("Lang", "Package-Version", "OS", "Arch", "Runtime")),
                *(f"X-Stainless-{name}" for name in ("Runtime-Version", "Retry-Count", "Timeout", "Helper-Method")),
            ],
            expose_headers=["X-Request-ID", "Retry-After"],
            max_age=600,
        ),
        openapi_config=OpenAPIConfig(
            title="ai-chat-backend",
            version="0.1.0",
            description="Personal Letta agents with LiteLLM billing, on Supabase.",
            path="/schema",
            render_plugins=docs_plugins(settings),
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
        # Every body is refused past this (413) unless its route sets its own request_max_body_size (a chat
        # message: 256 KiB; the webhook: 64 KiB): Litestar's default is 10 MB, read into memory.
        request_max_body_size=settings.http_max_body_bytes,
        debug=False,
        # Logging is ours (one JSON line per record, see request_context); Litestar must not reconfigure it.
        logging_config=None,
    )
    complete_schema(app.openapi_schema)  # built once here; /schema serves this object
    return app
