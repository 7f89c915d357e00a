from __future__ import annotations

import pytest

from service.settings import SettingsError, load_settings

MINIMAL = {
    "DATABASE_URL": "postgresql://postgres:postgres@127.0.0.1:5432/postgres",
    "SUPABASE_URL": "https://project.supabase.co",
    "LETTA_BASE_URL": "http://127.0.0.1:8283",
    "LITELLM_BASE_URL": "http://127.0.0.1:4000",
    "LITELLM_MASTER_KEY": "sk-master",
}


def test_minimal_environment_gives_seed_defaults() -> None:
    settings = load_settings(MINIMAL)
    assert settings.user_default_budget == 10.0
    assert settings.user_budget_duration == "1mo"
    assert settings.jwks_url == "https://project.supabase.co/auth/v1/.well-known/jwks.json"
    assert settings.jwt_issuer == "https://project.supabase.co/auth/v1"
    assert settings.jwt_audience == "authenticated"


def test_every_problem_is_reported_at_once() -> None:
    env = {
        "SUPABASE_URL": "not a url",
        "PORT": "eighty",
        "USER_DEFAULT_BUDGET": "-1",
        "LOG_LEVEL": "loud",
        "SUPABASE_JWKS": '{"nope": 1}',
        "CHAT_MAX_MESSAGE_BYTES": "1000000",
    }
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    text = "\n".join(caught.value.problems)
    for expected in (
        "DATABASE_URL is required",
        "SUPABASE_URL='not a url'",
        "PORT='eighty' is not an integer",
        "USER_DEFAULT_BUDGET must be >= 0",
        "LOG_LEVEL='loud'",
        "LITELLM_MASTER_KEY is required",
        "LETTA_BASE_URL is required",
        "SUPABASE_JWKS must be a JWKS object",
        "CHAT_MAX_MESSAGE_BYTES must be <= 65536",
    ):
        assert expected in text


def test_production_requires_a_webhook_secret() -> None:
    with pytest.raises(SettingsError, match="WEBHOOK_SECRET"):
        load_settings({**MINIMAL, "ENVIRONMENT": "production"})
    assert load_settings({**MINIMAL, "ENVIRONMENT": "production", "WEBHOOK_SECRET": "w" * 32}).is_production


def test_short_webhook_secret_and_malformed_standard_secret_are_refused() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**MINIMAL, "WEBHOOK_SECRET": "short", "STANDARD_WEBHOOK_SECRET": "plain"})
    assert len(caught.value.problems) == 2
