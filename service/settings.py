"""Settings, read from the environment once at start-up and validated as a whole (pydantic-settings).

Every problem is collected before failing, so an operator fixes a bad deployment in one pass
instead of one variable per restart. Secrets are ``SecretStr``: ``repr`` and logs show ``**********``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict


class SettingsError(Exception):
    """Raised when the environment does not describe a runnable service."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


_CHOICES: dict[str, tuple[str, ...]] = {
    "environment": ("development", "test", "production"),
    "log_level": ("debug", "info", "warning", "error"),
    "database_prepared_statements": ("true", "false"),
    "anonymous_users": ("allow", "refuse"),
    "service_role_is_admin": ("true", "false"),
}

# Standard Webhooks signing keys shorter than this are refused (the spec's keys are 24 to 64 bytes).
_MIN_SIGNING_KEY_BYTES = 24

# What a missing required variable should hold, appended to "<NAME> is required".
_REQUIRED_HINTS = {
    "DATABASE_URL": ": postgresql://user:password@host:5432/postgres",
    "LITELLM_MASTER_KEY": ": the LiteLLM proxy's master key (sk-...)",
    "SUPABASE_URL": " (an http(s) URL)",
    "LETTA_BASE_URL": " (an http(s) URL)",
    "LITELLM_BASE_URL": " (an http(s) URL)",
}


class _EnvironmentSource(EnvSettingsSource):
    """The variables of ``env`` (only those: no ``.env`` file), trimmed; blank ones count as unset."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env  # read by _load_env_vars, which the base __init__ calls
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name: value.strip() for name, value in self._env.items() if value.strip()}


class Settings(BaseSettings):
    """The service's configuration; each field reads the environment variable named in its ``validation_alias``."""

    model_config = SettingsConfigDict(frozen=True, case_sensitive=True)

    environment: str = Field("development", validation_alias="ENVIRONMENT")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    host: str = Field("127.0.0.1", validation_alias="HOST")
    port: int = Field(8000, ge=1, validation_alias="PORT")

    database_url: SecretStr = Field(validation_alias="DATABASE_URL")
    database_pool_min: int = Field(1, ge=0, validation_alias="DATABASE_POOL_MIN")
    database_pool_max: int = Field(10, ge=1, validation_alias="DATABASE_POOL_MAX")
    database_prepared_statements: bool = Field(True, validation_alias="DATABASE_PREPARED_STATEMENTS")

    supabase_url: str = Field(validation_alias="SUPABASE_URL")
    supabase_anon_key: SecretStr | None = Field(None, validation_alias="SUPABASE_ANON_KEY")
    supabase_service_key: SecretStr | None = Field(None, validation_alias="SUPABASE_SERVICE_KEY")
    # Admin access: `Authorization: Bearer <ADMIN_API_KEY>`. The service role (the Supabase service key, a
    # service_role token) is refused unless SERVICE_ROLE_IS_ADMIN, the old rule kept for compatibility.
    admin_api_key: Annotated[SecretStr, Field(min_length=32)] | None = Field(None, validation_alias="ADMIN_API_KEY")
    service_role_is_admin: bool = Field(False, validation_alias="SERVICE_ROLE_IS_ADMIN")
    # Both default to a path under SUPABASE_URL (see _derive_from_supabase_url).
    jwks_url: str = Field(validation_alias="SUPABASE_JWKS_URL")
    jwks_inline: Annotated[dict[str, Any] | None, NoDecode] = Field(None, validation_alias="SUPABASE_JWKS")
    jwt_secret: SecretStr | None = Field(None, validation_alias="SUPABASE_JWT_SECRET")
    jwt_audience: str = Field("authenticated", validation_alias="SUPABASE_JWT_AUDIENCE")
    jwt_issuer: str = Field(validation_alias="SUPABASE_JWT_ISSUER")
    jwks_cache_seconds: int = Field(600, ge=1, validation_alias="SUPABASE_JWKS_CACHE_SECONDS")

    letta_base_url: str = Field(validation_alias="LETTA_BASE_URL")
    letta_api_token: SecretStr | None = Field(None, validation_alias="LETTA_API_TOKEN")
    # Run on a Letta version outside TESTED_LETTA_VERSIONS (service/clients/letta_version.py), with a warning.
    letta_allow_untested_version: bool = Field(False, validation_alias="LETTA_ALLOW_UNTESTED_VERSION")

    litellm_base_url: str = Field(validation_alias="LITELLM_BASE_URL")
    litellm_master_key: SecretStr = Field(validation_alias="LITELLM_MASTER_KEY")

    user_default_budget: float = Field(10.0, ge=0.0, validation_alias="USER_DEFAULT_BUDGET")
    user_budget_duration: str = Field("1mo", validation_alias="USER_BUDGET_DURATION")
    # Supabase's anonymous sign-ins (is_anonymous): served with their own small budget, or refused.
    anonymous_users: str = Field("allow", validation_alias="ANONYMOUS_USERS")
    anonymous_budget: float = Field(0.10, ge=0.0, validation_alias="ANONYMOUS_BUDGET")
    # The API reference page at /schema: unset = on, except in production.
    api_docs: bool | None = Field(None, validation_alias="API_DOCS")
    llm_model: str = Field("gpt-4o-mini", validation_alias="LLM_MODEL")
    # A thread's title after its first reply: written by LLM_MODEL on the user's key (a billed call), or the first
    # message's opening words (no call).
    thread_titles: Literal["llm", "first_message"] = Field("llm", validation_alias="THREAD_TITLES")
    llm_context_window: int = Field(32000, ge=1024, validation_alias="LLM_CONTEXT_WINDOW")
    embedding_model: str = Field("text-embedding-3-small", validation_alias="EMBEDDING_MODEL")
    embedding_dim: int = Field(1536, ge=1, validation_alias="EMBEDDING_DIM")

    webhook_secret: Annotated[SecretStr, Field(min_length=32)] | None = Field(None, validation_alias="WEBHOOK_SECRET")
    standard_webhook_secret: SecretStr | None = Field(None, validation_alias="STANDARD_WEBHOOK_SECRET")
    webhook_tolerance_seconds: int = Field(300, ge=1, validation_alias="WEBHOOK_TOLERANCE_SECONDS")
    provisioning_max_attempts: int = Field(8, ge=1, validation_alias="PROVISIONING_MAX_ATTEMPTS")
    reconcile_interval_seconds: float = Field(30.0, ge=0.1, validation_alias="RECONCILE_INTERVAL_SECONDS")
    # How long a turn's events are kept for resuming its stream (then the history has it).
    turn_resume_seconds: float = Field(3600.0, ge=10.0, validation_alias="TURN_RESUME_SECONDS")
    # LiteLLM writes its spend records in batches (proxy_batch_write_at, 10 s by default): a turn's charges are
    # read this long after it ended, when they have all been written.
    cost_settle_seconds: float = Field(30.0, ge=0.0, validation_alias="COST_SETTLE_SECONDS")
    cost_reconcile_interval_seconds: float = Field(10.0, ge=0.1, validation_alias="COST_RECONCILE_INTERVAL_SECONDS")
    # How often each replica sends Letta the feedback whose send failed (feedback unsent for that long).
    feedback_retry_interval_seconds: float = Field(60.0, ge=0.1, validation_alias="FEEDBACK_RETRY_INTERVAL_SECONDS")

    # Comma-separated, not JSON.
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:3000"], validation_alias="CORS_ALLOW_ORIGINS"
    )
    http_timeout_seconds: float = Field(30.0, ge=0.1, validation_alias="HTTP_TIMEOUT_SECONDS")
    # At most 64 KiB: the request body (256 KiB) and WebSocket frame caps must hold it even JSON-escaped.
    chat_max_message_bytes: int = Field(16 * 1024, ge=1, le=64 * 1024, validation_alias="CHAT_MAX_MESSAGE_BYTES")
    rate_limit_chat_per_minute: int = Field(20, ge=1, validation_alias="RATE_LIMIT_CHAT_PER_MINUTE")
    rate_limit_memory_per_minute: int = Field(30, ge=1, validation_alias="RATE_LIMIT_MEMORY_PER_MINUTE")
    # Message search (GET /api/v1/chat/search): room for search-as-you-type with a debounce.
    rate_limit_search_per_minute: int = Field(60, ge=1, validation_alias="RATE_LIMIT_SEARCH_PER_MINUTE")
    # A search still running after this is cancelled in Postgres (statement_timeout): a query broad enough to rank
    # most of a large history (common words or'ed together) costs at most this much database time, times the rate.
    search_timeout_seconds: float = Field(2.0, ge=0.001, le=30, validation_alias="SEARCH_TIMEOUT_SECONDS")

    # --- The LLM proxy (/api/v1/llm): OpenAI-compatible calls, billed to the user's own LiteLLM key ----------------
    # Comma-separated model names (as LiteLLM knows them) users may call; unset: LLM_MODEL only.
    llm_proxy_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validate_default=True, validation_alias="LLM_PROXY_MODELS"
    )
    # The largest max_tokens / max_completion_tokens a call may ask for (and what a call that names none gets).
    llm_proxy_max_tokens: int = Field(4096, ge=1, validation_alias="LLM_PROXY_MAX_TOKENS")
    llm_proxy_max_messages: int = Field(100, ge=1, validation_alias="LLM_PROXY_MAX_MESSAGES")
    rate_limit_llm_per_minute: int = Field(30, ge=1, validation_alias="RATE_LIMIT_LLM_PER_MINUTE")

    @field_validator("llm_proxy_models", mode="before")
    @classmethod
    def _llm_proxy_models(cls, value: Any, info: ValidationInfo) -> Any:
        models = [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
        return models or [info.data.get("llm_model", "gpt-4o-mini")]

    # --- The auth pass-through (/api/v1/auth/register|login|refresh) and its limits per client ---------------------
    # Off unless enabled (its routes answer 404): frontends should use Supabase Auth directly (supabase-js).
    auth_passthrough_enabled: bool = Field(False, validation_alias="AUTH_PASSTHROUGH_ENABLED")
    # Send each client's IP to Supabase Auth (Sb-Forwarded-For) so its per-IP limits apply per client, not to this
    # service's one address. Supabase honours the header only with a secret key: the calls then use
    # SUPABASE_SERVICE_KEY instead of SUPABASE_ANON_KEY.
    auth_passthrough_forward_ip: bool = Field(False, validation_alias="AUTH_PASSTHROUGH_FORWARD_IP")
    # Comma-separated addresses or CIDR networks of the reverse proxies in front of the service: X-Forwarded-For
    # names the client only when the peer is one of them. Empty: the peer address is the client.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list, validation_alias="TRUSTED_PROXIES")
    # GCRA buckets over one hour: a burst of N, then one every 3600/N s. IPv6 clients count per /64.
    rate_limit_login_per_ip_per_hour: int = Field(60, ge=1, validation_alias="RATE_LIMIT_LOGIN_PER_IP_PER_HOUR")
    rate_limit_login_per_email_per_hour: int = Field(10, ge=1, validation_alias="RATE_LIMIT_LOGIN_PER_EMAIL_PER_HOUR")
    rate_limit_register_per_ip_per_hour: int = Field(10, ge=1, validation_alias="RATE_LIMIT_REGISTER_PER_IP_PER_HOUR")
    rate_limit_register_per_email_per_hour: int = Field(
        5, ge=1, validation_alias="RATE_LIMIT_REGISTER_PER_EMAIL_PER_HOUR"
    )
    rate_limit_refresh_per_ip_per_hour: int = Field(300, ge=1, validation_alias="RATE_LIMIT_REFRESH_PER_IP_PER_HOUR")

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> Any:
        from ipaddress import ip_network  # here: this block is all the pass-through adds to the module

        parts = [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value
        try:
            return [str(ip_network(part, strict=False)) for part in parts]
        except ValueError as exc:
            raise ValueError(f"TRUSTED_PROXIES: {exc}") from None

    @field_validator("auth_passthrough_forward_ip")
    @classmethod
    def _auth_passthrough_key(cls, forward: bool, info: ValidationInfo) -> bool:
        # Reads fields declared before it (see the note above _token_verification); one absent from info.data is
        # set but invalid, and reported on its own.
        data = info.data
        if not data.get("auth_passthrough_enabled"):
            return forward
        if not forward and "supabase_anon_key" in data and data["supabase_anon_key"] is None:
            raise ValueError("AUTH_PASSTHROUGH_ENABLED is on: set SUPABASE_ANON_KEY (the publishable or anon key)")
        key: SecretStr | None = data.get("supabase_service_key")
        if forward and "supabase_service_key" in data and key is None:
            raise ValueError("AUTH_PASSTHROUGH_FORWARD_IP is on: set SUPABASE_SERVICE_KEY (a secret key, sb_secret_)")
        hosted = (urlparse(str(data.get("supabase_url", ""))).hostname or "").endswith(".supabase.co")
        if forward and key is not None and hosted and not key.get_secret_value().startswith("sb_secret_"):
            raise ValueError(
                "AUTH_PASSTHROUGH_FORWARD_IP is on but SUPABASE_SERVICE_KEY is not a secret key (sb_secret_...): "
                "Supabase ignores Sb-Forwarded-For with any other key"
            )
        return forward

    # What one replica accepts from clients (service/web/server.py; the WebSocket caps in service/chat/websocket.py).
    server_max_connections: int = Field(1000, ge=1, validation_alias="SERVER_MAX_CONNECTIONS")
    server_header_timeout_seconds: float = Field(10.0, ge=0.1, validation_alias="SERVER_HEADER_TIMEOUT_SECONDS")
    server_keepalive_seconds: int = Field(5, ge=1, validation_alias="SERVER_KEEPALIVE_SECONDS")
    # Routes that need more (a chat message, 256 KiB) set their own request_max_body_size.
    http_max_body_bytes: int = Field(64 * 1024, ge=1024, validation_alias="HTTP_MAX_BODY_BYTES")
    ws_max_sockets: int = Field(800, ge=1, validation_alias="WS_MAX_SOCKETS")
    ws_max_sockets_per_user: int = Field(10, ge=1, validation_alias="WS_MAX_SOCKETS_PER_USER")

    # --- Metrics and traces (service/observability) ----------------------------------------------------------------
    # GET /metrics answers the admin credential. METRICS_PORT (unset: off) also serves it, without authentication, on
    # METRICS_HOST:METRICS_PORT: for a scraper on a private network.
    metrics_port: int | None = Field(None, ge=1, le=65535, validation_alias="METRICS_PORT")
    metrics_host: str = Field("127.0.0.1", validation_alias="METRICS_HOST")
    # Traces are off unless an OTLP endpoint is set (the standard variables; OTLP over HTTP/protobuf): the base one
    # gets /v1/traces appended, the traces one is used as it is. OTEL_SDK_DISABLED=true keeps them off.
    otel_exporter_otlp_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT")
    otel_exporter_otlp_traces_endpoint: str | None = Field(None, validation_alias="OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    otel_exporter_otlp_protocol: str = Field("http/protobuf", validation_alias="OTEL_EXPORTER_OTLP_PROTOCOL")
    otel_service_name: str = Field("ai-chat-backend", validation_alias="OTEL_SERVICE_NAME")
    otel_sdk_disabled: bool = Field(False, validation_alias="OTEL_SDK_DISABLED")

    @field_validator("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint")
    @classmethod
    def _otlp_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        parsed = urlparse(value or "")
        if value is not None and (parsed.scheme not in ("http", "https") or not parsed.netloc):
            raise ValueError(f"{cls._variable(info)}={value!r} is not an http(s) URL")
        return value

    @field_validator("otel_exporter_otlp_protocol")
    @classmethod
    def _otlp_protocol(cls, value: str) -> str:
        if value != "http/protobuf":
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL={value!r}: only http/protobuf is supported (OTLP over HTTP)")
        return value

    @property
    def otlp_traces_endpoint(self) -> str | None:
        """Where traces are sent, or None: tracing is off."""
        if self.otel_sdk_disabled:
            return None
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        if self.otel_exporter_otlp_endpoint:
            return f"{self.otel_exporter_otlp_endpoint.rstrip('/')}/v1/traces"
        return None

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """``Settings()`` reads ``os.environ`` as ``load_settings()`` does: no ``.env`` file, no secrets directory."""
        return init_settings, _EnvironmentSource(settings_cls, os.environ)

    @classmethod
    def _variable(cls, info: ValidationInfo) -> str:
        """The environment variable of the field being validated."""
        assert info.field_name is not None
        return str(cls.model_fields[info.field_name].validation_alias)

    @model_validator(mode="before")
    @classmethod
    def _derive_from_supabase_url(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        base = str(data.get("SUPABASE_URL", "")).rstrip("/")
        defaults = {
            "SUPABASE_JWKS_URL": f"{base}/auth/v1/.well-known/jwks.json",
            "SUPABASE_JWT_ISSUER": f"{base}/auth/v1",
        }
        return defaults | data

    @field_validator(*_CHOICES, mode="before")
    @classmethod
    def _one_of(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        value = value.lower()
        choices = _CHOICES[str(info.field_name)]
        if value not in choices:
            raise ValueError(f"{cls._variable(info)}={value!r} must be one of {', '.join(choices)}")
        return value

    @field_validator("log_level")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("supabase_url", "jwks_url", "letta_base_url", "litellm_base_url")
    @classmethod
    def _http_url(cls, value: str, info: ValidationInfo) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{cls._variable(info)}={value!r} is not an http(s) URL")
        return value.rstrip("/")

    @field_validator("jwks_inline", mode="before")
    @classmethod
    def _jwks(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            jwks = json.loads(value)
        except ValueError:
            raise ValueError("SUPABASE_JWKS is not valid JSON") from None
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise ValueError('SUPABASE_JWKS must be a JWKS object: {"keys": [...]}')
        return jwks

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    # The two checks below span several fields. They are field validators reading the fields declared
    # before theirs (info.data, which lacks the fields that failed) rather than a model validator, because
    # pydantic runs model "after" validators only once every field is valid: this way their problems are
    # reported together with every other one.

    @field_validator("jwt_secret")
    @classmethod
    def _token_verification(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None and info.data.get("jwks_inline") is None and info.data.get("jwks_url") == "":
            raise ValueError("no way to verify access tokens: set SUPABASE_URL, SUPABASE_JWKS or SUPABASE_JWT_SECRET")
        return value

    @field_validator("standard_webhook_secret")
    @classmethod
    def _webhook_verification(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is not None:
            text = value.get_secret_value()
            try:
                key = base64.b64decode(text.removeprefix("whsec_"), validate=True) if text.startswith("whsec_") else b""
            except (binascii.Error, ValueError):
                key = b""
            if not key:
                raise ValueError("STANDARD_WEBHOOK_SECRET must look like whsec_<base64> (Standard Webhooks secret)")
            if len(key) < _MIN_SIGNING_KEY_BYTES:
                raise ValueError(
                    f"STANDARD_WEBHOOK_SECRET must hold at least {_MIN_SIGNING_KEY_BYTES} bytes after whsec_ "
                    f"(32 base64 characters), got {len(key)}"
                )
        # A WEBHOOK_SECRET that failed its own check is absent from info.data: it is set, just wrong.
        unset = "webhook_secret" in info.data and info.data["webhook_secret"] is None
        if value is None and unset and info.data.get("environment") == "production":
            raise ValueError("set WEBHOOK_SECRET and/or STANDARD_WEBHOOK_SECRET: signup webhooks cannot be verified")
        return value

    @field_validator("standard_webhook_secret")
    @classmethod
    def _one_webhook_mode_in_production(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        both = value is not None and info.data.get("webhook_secret") is not None
        if both and info.data.get("environment") == "production":
            # Not a problem (the Edge Function needs both), but the operator must know which one the service takes.
            logging.getLogger("service.settings").warning(
                "WEBHOOK_SECRET and STANDARD_WEBHOOK_SECRET are both set: in production STANDARD_WEBHOOK_SECRET wins. "
                "/webhooks/auth accepts only Standard Webhooks signatures (from the signup-webhook Edge Function) and "
                "refuses x-webhook-secret, which has no replay window; the service does not use WEBHOOK_SECRET."
            )
        return value

    @field_validator("cors_allow_origins")
    @classmethod
    def _no_wildcard_origin_in_production(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if "*" in value and info.data.get("environment") == "production":
            raise ValueError(
                "CORS_ALLOW_ORIGINS=* is refused in production: list the frontend's origins, comma-separated"
            )
        return value

    @field_validator("admin_api_key")
    @classmethod
    def _admin_key_of_its_own(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        service_key = info.data.get("supabase_service_key")
        if value is not None and service_key is not None and value.get_secret_value() == service_key.get_secret_value():
            raise ValueError("ADMIN_API_KEY must not be the Supabase service key: generate a key of its own")
        return value


def _problem(error: ErrorDetails) -> str:
    """One validation error as a sentence naming the variable; never quotes a secret's value."""
    name = str(error["loc"][0]) if error["loc"] else "settings"
    value, ctx = error["input"], error.get("ctx", {})
    match error["type"]:
        case "missing":
            return f"{name} is required{_REQUIRED_HINTS.get(name, '')}"
        case "int_parsing" | "int_from_float" | "int_type":
            return f"{name}={value!r} is not an integer"
        case "float_parsing" | "float_type":
            return f"{name}={value!r} is not a number"
        case "greater_than_equal":
            return f"{name} must be >= {ctx['ge']}, got {value}"
        case "less_than_equal":
            return f"{name} must be <= {ctx['le']}, got {value}"
        case "too_short" | "string_too_short":
            return f"{name} must be at least {ctx['min_length']} characters"
        case "value_error":  # raised by Settings' validators, as a whole sentence
            return str(ctx["error"])
        case _:
            return f"{name}: {error['msg']}"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default: ``os.environ``); raise ``SettingsError`` listing every problem."""
    source = _EnvironmentSource(Settings, os.environ if env is None else env)
    try:
        # Without the pydantic mypy plugin, mypy sees an __init__ taking the fields, not BaseSettings.__init__.
        return Settings(_build_sources=((source,), {}))  # type: ignore[call-arg]
    except ValidationError as exc:
        # from None: the ValidationError's text quotes input values, secrets included.
        raise SettingsError([_problem(error) for error in exc.errors()]) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
