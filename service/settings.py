"""Settings, read from the environment once at start-up and validated as a whole (pydantic-settings).

Every problem is collected before failing, so an operator fixes a bad deployment in one pass
instead of one variable per restart. Secrets are ``SecretStr``: ``repr`` and logs show ``**********``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Annotated, Any
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
}

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
    # Both default to a path under SUPABASE_URL (see _derive_from_supabase_url).
    jwks_url: str = Field(validation_alias="SUPABASE_JWKS_URL")
    jwks_inline: Annotated[dict[str, Any] | None, NoDecode] = Field(None, validation_alias="SUPABASE_JWKS")
    jwt_secret: SecretStr | None = Field(None, validation_alias="SUPABASE_JWT_SECRET")
    jwt_audience: str = Field("authenticated", validation_alias="SUPABASE_JWT_AUDIENCE")
    jwt_issuer: str = Field(validation_alias="SUPABASE_JWT_ISSUER")
    jwks_cache_seconds: int = Field(600, ge=1, validation_alias="SUPABASE_JWKS_CACHE_SECONDS")

    letta_base_url: str = Field(validation_alias="LETTA_BASE_URL")
    letta_api_token: SecretStr | None = Field(None, validation_alias="LETTA_API_TOKEN")

    litellm_base_url: str = Field(validation_alias="LITELLM_BASE_URL")
    litellm_master_key: SecretStr = Field(validation_alias="LITELLM_MASTER_KEY")

    user_default_budget: float = Field(10.0, ge=0.0, validation_alias="USER_DEFAULT_BUDGET")
    user_budget_duration: str = Field("1mo", validation_alias="USER_BUDGET_DURATION")
    llm_model: str = Field("gpt-4o-mini", validation_alias="LLM_MODEL")
    llm_context_window: int = Field(32000, ge=1024, validation_alias="LLM_CONTEXT_WINDOW")
    embedding_model: str = Field("text-embedding-3-small", validation_alias="EMBEDDING_MODEL")
    embedding_dim: int = Field(1536, ge=1, validation_alias="EMBEDDING_DIM")

    webhook_secret: Annotated[SecretStr, Field(min_length=32)] | None = Field(None, validation_alias="WEBHOOK_SECRET")
    standard_webhook_secret: SecretStr | None = Field(None, validation_alias="STANDARD_WEBHOOK_SECRET")
    webhook_tolerance_seconds: int = Field(300, ge=1, validation_alias="WEBHOOK_TOLERANCE_SECONDS")
    provisioning_max_attempts: int = Field(8, ge=1, validation_alias="PROVISIONING_MAX_ATTEMPTS")
    reconcile_interval_seconds: float = Field(30.0, ge=0.1, validation_alias="RECONCILE_INTERVAL_SECONDS")
    # LiteLLM writes its spend records in batches (proxy_batch_write_at, 10 s by default): a turn's charges are
    # read this long after it ended, when they have all been written.
    cost_settle_seconds: float = Field(30.0, ge=0.0, validation_alias="COST_SETTLE_SECONDS")
    cost_reconcile_interval_seconds: float = Field(10.0, ge=0.1, validation_alias="COST_RECONCILE_INTERVAL_SECONDS")

    # Comma-separated, not JSON.
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://localhost:3000"], validation_alias="CORS_ALLOW_ORIGINS"
    )
    http_timeout_seconds: float = Field(30.0, ge=0.1, validation_alias="HTTP_TIMEOUT_SECONDS")
    # At most 64 KiB: the request body (256 KiB) and WebSocket frame caps must hold it even JSON-escaped.
    chat_max_message_bytes: int = Field(16 * 1024, ge=1, le=64 * 1024, validation_alias="CHAT_MAX_MESSAGE_BYTES")
    rate_limit_chat_per_minute: int = Field(20, ge=1, validation_alias="RATE_LIMIT_CHAT_PER_MINUTE")
    rate_limit_memory_per_minute: int = Field(30, ge=1, validation_alias="RATE_LIMIT_MEMORY_PER_MINUTE")

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
        if value is not None and not value.get_secret_value().startswith("whsec_"):
            raise ValueError("STANDARD_WEBHOOK_SECRET must look like whsec_<base64> (Standard Webhooks secret)")
        # A WEBHOOK_SECRET that failed its own check is absent from info.data: it is set, just wrong.
        unset = "webhook_secret" in info.data and info.data["webhook_secret"] is None
        if value is None and unset and info.data.get("environment") == "production":
            raise ValueError("set WEBHOOK_SECRET and/or STANDARD_WEBHOOK_SECRET: signup webhooks cannot be verified")
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
