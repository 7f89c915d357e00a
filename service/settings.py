"""Settings, read from the environment once at start-up and validated as a whole.

Every problem is collected before failing, so an operator fixes a bad deployment in one pass
instead of one variable per restart.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlparse

import msgspec

T = TypeVar("T")


class SettingsError(Exception):
    """Raised when the environment does not describe a runnable service."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    environment: str
    log_level: str
    host: str
    port: int

    database_url: str
    database_pool_min: int
    database_pool_max: int
    database_prepared_statements: bool

    supabase_url: str
    supabase_anon_key: str | None
    supabase_service_key: str | None
    jwks_url: str
    jwks_inline: dict[str, Any] | None
    jwt_secret: str | None
    jwt_audience: str
    jwt_issuer: str
    jwks_cache_seconds: int

    letta_base_url: str
    letta_api_token: str | None

    litellm_base_url: str
    litellm_master_key: str

    user_default_budget: float
    user_budget_duration: str
    llm_model: str
    llm_context_window: int
    embedding_model: str
    embedding_dim: int

    webhook_secret: str | None
    standard_webhook_secret: str | None
    webhook_tolerance_seconds: int
    provisioning_max_attempts: int
    reconcile_interval_seconds: float

    cors_allow_origins: list[str]
    http_timeout_seconds: float
    chat_max_message_bytes: int
    rate_limit_chat_per_minute: int
    rate_limit_memory_per_minute: int

    @property
    def is_production(self) -> bool:
        return self.environment == "production"


class _Reader:
    """Reads typed values from a mapping and records every problem instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return value.strip() if value is not None and value.strip() else None

    def _convert(self, name: str, default: T, convert: Callable[[str], T], expected: str) -> T:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            return convert(raw)
        except ValueError:
            self.problems.append(f"{name}={raw!r} is not {expected}")
            return default

    def text(self, name: str, default: str | None = None) -> str | None:
        return self._raw(name) or default

    def required(self, name: str, hint: str) -> str:
        value = self._raw(name)
        if value is None:
            self.problems.append(f"{name} is required: {hint}")
            return ""
        return value

    def url(self, name: str, default: str | None = None, *, required: bool = True) -> str:
        value = self._raw(name) or default
        if value is None:
            if required:
                self.problems.append(f"{name} is required (an http(s) URL)")
            return ""
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            self.problems.append(f"{name}={value!r} is not an http(s) URL")
        return value.rstrip("/")

    def integer(self, name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        value = self._convert(name, default, int, "an integer")
        if value < minimum:
            self.problems.append(f"{name} must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            self.problems.append(f"{name} must be <= {maximum}, got {value}")
        return value

    def number(self, name: str, default: float, minimum: float = 0.0) -> float:
        value = self._convert(name, default, float, "a number")
        if value < minimum:
            self.problems.append(f"{name} must be >= {minimum}, got {value}")
        return value

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = (self._raw(name) or default).lower()
        if value not in choices:
            self.problems.append(f"{name}={value!r} must be one of {', '.join(choices)}")
        return value

    def json_object(self, name: str) -> dict[str, Any] | None:
        raw = self._raw(name)
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            self.problems.append(f"{name} is not valid JSON")
            return None
        if not isinstance(value, dict) or not isinstance(value.get("keys"), list):
            self.problems.append(f'{name} must be a JWKS object: {{"keys": [...]}}')
            return None
        return value

    def csv(self, name: str, default: list[str]) -> list[str]:
        raw = self._raw(name)
        return default if raw is None else [part.strip() for part in raw.split(",") if part.strip()]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from ``env`` (default: ``os.environ``); raise ``SettingsError`` listing every problem."""
    r = _Reader(os.environ if env is None else env)
    environment = r.choice("ENVIRONMENT", "development", ("development", "test", "production"))
    supabase_url = r.url("SUPABASE_URL")
    jwt_secret = r.text("SUPABASE_JWT_SECRET")
    jwks_inline = r.json_object("SUPABASE_JWKS")
    webhook_secret = r.text("WEBHOOK_SECRET")
    standard_webhook_secret = r.text("STANDARD_WEBHOOK_SECRET")
    if standard_webhook_secret is not None and not standard_webhook_secret.startswith("whsec_"):
        r.problems.append("STANDARD_WEBHOOK_SECRET must look like whsec_<base64> (Standard Webhooks secret)")
    if webhook_secret is not None and len(webhook_secret) < 32:
        r.problems.append("WEBHOOK_SECRET must be at least 32 characters")
    if environment == "production" and webhook_secret is None and standard_webhook_secret is None:
        r.problems.append("set WEBHOOK_SECRET and/or STANDARD_WEBHOOK_SECRET: signup webhooks cannot be verified")

    settings = Settings(
        environment=environment,
        log_level=r.choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
        host=r.text("HOST", "127.0.0.1") or "127.0.0.1",
        port=r.integer("PORT", 8000, minimum=1),
        database_url=r.required("DATABASE_URL", "postgresql://user:password@host:5432/postgres"),
        database_pool_min=r.integer("DATABASE_POOL_MIN", 1, minimum=0),
        database_pool_max=r.integer("DATABASE_POOL_MAX", 10, minimum=1),
        database_prepared_statements=r.choice("DATABASE_PREPARED_STATEMENTS", "true", ("true", "false")) == "true",
        supabase_url=supabase_url,
        supabase_anon_key=r.text("SUPABASE_ANON_KEY"),
        supabase_service_key=r.text("SUPABASE_SERVICE_KEY"),
        jwks_url=r.url("SUPABASE_JWKS_URL", f"{supabase_url}/auth/v1/.well-known/jwks.json", required=False),
        jwks_inline=jwks_inline,
        jwt_secret=jwt_secret,
        jwt_audience=r.text("SUPABASE_JWT_AUDIENCE", "authenticated") or "authenticated",
        jwt_issuer=r.text("SUPABASE_JWT_ISSUER", f"{supabase_url}/auth/v1") or "",
        jwks_cache_seconds=r.integer("SUPABASE_JWKS_CACHE_SECONDS", 600, minimum=1),
        letta_base_url=r.url("LETTA_BASE_URL"),
        letta_api_token=r.text("LETTA_API_TOKEN"),
        litellm_base_url=r.url("LITELLM_BASE_URL"),
        litellm_master_key=r.required("LITELLM_MASTER_KEY", "the LiteLLM proxy's master key (sk-...)"),
        user_default_budget=r.number("USER_DEFAULT_BUDGET", 10.0),
        user_budget_duration=r.text("USER_BUDGET_DURATION", "1mo") or "1mo",
        llm_model=r.text("LLM_MODEL", "gpt-4o-mini") or "gpt-4o-mini",
        llm_context_window=r.integer("LLM_CONTEXT_WINDOW", 32000, minimum=1024),
        embedding_model=r.text("EMBEDDING_MODEL", "text-embedding-3-small") or "text-embedding-3-small",
        embedding_dim=r.integer("EMBEDDING_DIM", 1536, minimum=1),
        webhook_secret=webhook_secret,
        standard_webhook_secret=standard_webhook_secret,
        webhook_tolerance_seconds=r.integer("WEBHOOK_TOLERANCE_SECONDS", 300, minimum=1),
        provisioning_max_attempts=r.integer("PROVISIONING_MAX_ATTEMPTS", 8, minimum=1),
        reconcile_interval_seconds=r.number("RECONCILE_INTERVAL_SECONDS", 30.0, minimum=0.1),
        cors_allow_origins=r.csv("CORS_ALLOW_ORIGINS", ["http://localhost:3000"]),
        http_timeout_seconds=r.number("HTTP_TIMEOUT_SECONDS", 30.0, minimum=0.1),
        # At most 64 KiB: the request body (256 KiB) and WebSocket frame caps must hold it even JSON-escaped.
        chat_max_message_bytes=r.integer("CHAT_MAX_MESSAGE_BYTES", 16 * 1024, minimum=1, maximum=64 * 1024),
        rate_limit_chat_per_minute=r.integer("RATE_LIMIT_CHAT_PER_MINUTE", 20, minimum=1),
        rate_limit_memory_per_minute=r.integer("RATE_LIMIT_MEMORY_PER_MINUTE", 30, minimum=1),
    )
    if jwks_inline is None and jwt_secret is None and not settings.jwks_url:
        r.problems.append("no way to verify access tokens: set SUPABASE_URL, SUPABASE_JWKS or SUPABASE_JWT_SECRET")
    if r.problems:
        raise SettingsError(r.problems)
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once."""
    return load_settings()
