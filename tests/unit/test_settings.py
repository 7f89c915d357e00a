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


def test_secrets_never_show_in_repr_or_str() -> None:
    secrets = {
        "DATABASE_URL": "postgresql://app:db-password-7f3a@db.internal:5432/postgres",
        "SUPABASE_ANON_KEY": "anon-key-9c41",
        "SUPABASE_SERVICE_KEY": "service-key-2b77",
        "SUPABASE_JWT_SECRET": "jwt-secret-5e08",
        "LITELLM_MASTER_KEY": "sk-master-key-61d2",
        "LETTA_API_TOKEN": "letta-token-d4c9",
        "WEBHOOK_SECRET": "webhook-secret-0123456789abcdef0123",
        "STANDARD_WEBHOOK_SECRET": "whsec_c3RhbmRhcmQtd2ViaG9va3Mtc2lnbmluZy1rZXk=",
        "ADMIN_API_KEY": "admin-api-key-8f1e-0123456789abcdef",
    }
    settings = load_settings({**MINIMAL, **secrets})
    assert settings.database_url.get_secret_value() == secrets["DATABASE_URL"]
    assert settings.litellm_master_key.get_secret_value() == secrets["LITELLM_MASTER_KEY"]
    shown = repr(settings) + str(settings)
    for value in [*secrets.values(), "db-password-7f3a"]:
        assert value not in shown


def test_bad_values_of_several_variables_are_listed_in_one_error() -> None:
    env = {
        **MINIMAL,
        "ENVIRONMENT": "staging",
        "PORT": "abc",
        "DATABASE_POOL_MAX": "0",
        "HTTP_TIMEOUT_SECONDS": "soon",
        "DATABASE_PREPARED_STATEMENTS": "maybe",
        "LETTA_BASE_URL": "ftp://letta",
        "SUPABASE_JWKS": "not json",
        "WEBHOOK_SECRET": "too-short-secret",
    }
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert sorted(caught.value.problems) == sorted(
        [
            "ENVIRONMENT='staging' must be one of development, test, production",
            "PORT='abc' is not an integer",
            "DATABASE_POOL_MAX must be >= 1, got 0",
            "HTTP_TIMEOUT_SECONDS='soon' is not a number",
            "DATABASE_PREPARED_STATEMENTS='maybe' must be one of true, false",
            "LETTA_BASE_URL='ftp://letta' is not an http(s) URL",
            "SUPABASE_JWKS is not valid JSON",
            "WEBHOOK_SECRET must be at least 32 characters",
        ]
    )
    assert "too-short-secret" not in str(caught.value)


def test_the_production_webhook_check_is_reported_with_other_problems() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**MINIMAL, "ENVIRONMENT": "production", "PORT": "0"})
    assert caught.value.problems == [
        "PORT must be >= 1, got 0",
        "set WEBHOOK_SECRET and/or STANDARD_WEBHOOK_SECRET: signup webhooks cannot be verified",
    ]


def test_only_the_given_mapping_is_read_and_blank_values_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "not-a-port")
    settings = load_settings({**MINIMAL, "HOST": "   ", "LOG_LEVEL": " Debug ", "SUPABASE_JWKS": ""})
    assert settings.port == 8000
    assert settings.host == "127.0.0.1"
    assert settings.log_level == "DEBUG"
    assert settings.jwks_inline is None


def test_cors_origins_are_comma_separated_and_jwks_is_a_json_object() -> None:
    settings = load_settings(
        {**MINIMAL, "CORS_ALLOW_ORIGINS": " https://a.example , https://b.example,, ", "SUPABASE_JWKS": '{"keys": []}'}
    )
    assert settings.cors_allow_origins == ["https://a.example", "https://b.example"]
    assert settings.jwks_inline == {"keys": []}


SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes: the Standard Webhooks spec's example


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("c2VjcmV0LXRoYXQtaXMtbG9uZy1lbm91Z2gtMTIz", "must look like whsec_<base64>"),  # no prefix
        ("whsec_", "must look like whsec_<base64>"),
        ("whsec_not base64!!", "must look like whsec_<base64>"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "must look like whsec_<base64>"),  # bad padding
        ("whsec_c2hvcnQ=", "at least 24 bytes after whsec_ (32 base64 characters), got 5"),
        ("whsec_" + "QUFB" * 7, "at least 24 bytes after whsec_ (32 base64 characters), got 21"),
    ],
)
def test_standard_webhook_secret_must_be_base64_of_at_least_24_bytes(value: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({**MINIMAL, "STANDARD_WEBHOOK_SECRET": value})
    assert len(caught.value.problems) == 1 and problem in caught.value.problems[0]
    assert value not in str(caught.value) or value == "whsec_"
    assert load_settings({**MINIMAL, "STANDARD_WEBHOOK_SECRET": SIGNING_SECRET}).standard_webhook_secret


def test_production_refuses_cors_wildcard_with_every_other_problem() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            {**MINIMAL, "ENVIRONMENT": "production", "CORS_ALLOW_ORIGINS": "https://app.example, *", "PORT": "0"}
        )
    assert caught.value.problems == [
        "PORT must be >= 1, got 0",
        "set WEBHOOK_SECRET and/or STANDARD_WEBHOOK_SECRET: signup webhooks cannot be verified",
        "CORS_ALLOW_ORIGINS=* is refused in production: list the frontend's origins, comma-separated",
    ]
    # Elsewhere a wildcard is a developer's convenience; in production, named origins are fine.
    assert load_settings({**MINIMAL, "CORS_ALLOW_ORIGINS": "*"}).cors_allow_origins == ["*"]
    production = {**MINIMAL, "ENVIRONMENT": "production", "STANDARD_WEBHOOK_SECRET": SIGNING_SECRET}
    assert load_settings({**production, "CORS_ALLOW_ORIGINS": "https://app.example"}).is_production


def test_admin_api_key_is_optional_long_and_not_the_service_key() -> None:
    settings = load_settings(MINIMAL)
    assert settings.admin_api_key is None and settings.service_role_is_admin is False
    key = "k" * 32
    assert load_settings({**MINIMAL, "ADMIN_API_KEY": key}).admin_api_key.get_secret_value() == key  # type: ignore[union-attr]
    with pytest.raises(SettingsError) as caught:
        load_settings({**MINIMAL, "ADMIN_API_KEY": "k" * 31, "SERVICE_ROLE_IS_ADMIN": "perhaps"})
    assert sorted(caught.value.problems) == [
        "ADMIN_API_KEY must be at least 32 characters",
        "SERVICE_ROLE_IS_ADMIN='perhaps' must be one of true, false",
    ]
    with pytest.raises(SettingsError) as caught:
        load_settings({**MINIMAL, "ADMIN_API_KEY": key, "SUPABASE_SERVICE_KEY": key})
    assert caught.value.problems == ["ADMIN_API_KEY must not be the Supabase service key: generate a key of its own"]
    assert key not in str(caught.value)
    assert load_settings({**MINIMAL, "SERVICE_ROLE_IS_ADMIN": "TRUE"}).service_role_is_admin is True


def test_both_webhook_secrets_in_production_say_which_one_wins(caplog: pytest.LogCaptureFixture) -> None:
    both = {**MINIMAL, "WEBHOOK_SECRET": "w" * 32, "STANDARD_WEBHOOK_SECRET": SIGNING_SECRET}
    with caplog.at_level("WARNING", logger="service.settings"):
        load_settings(both)
        assert not caplog.records  # development: both ways in, nothing to say
        load_settings({**both, "ENVIRONMENT": "production"})
    [record] = caplog.records
    assert "in production STANDARD_WEBHOOK_SECRET wins" in record.getMessage()
    assert "refuses x-webhook-secret" in record.getMessage()
