"""The Supabase Auth pass-through (register/login/refresh) and the admin user deletion, against a mocked GoTrue.

GoTrue's bodies below are the documented ones: the token response (``AccessTokenResponse``), the bare user
that ``/signup`` returns while email confirmation is pending, and its three error shapes — the API version
2024-01-01 one (``{"code": "<error code>", "message"}``, which supabase_auth asks for), the older
``{"code": <status>, "error_code", "msg"}`` and OAuth's ``{"error", "error_description"}``.

The limits per client IP and per email are counted here by an in-memory limiter with the same interface as the
Postgres one (tests/integration/test_rate_limit.py runs the real one); the peer address of a request is what its
``X-Test-Peer`` header says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from pytest_httpx import HTTPXMock

from service.auth.passthrough.controller import UNREACHABLE, AuthPassthroughController
from service.auth.passthrough.gotrue import RequestScopedGoTrue
from service.auth.passthrough.service import (
    LOGIN_PER_EMAIL,
    LOGIN_PER_IP,
    REFRESH_PER_IP,
    REGISTER_PER_EMAIL,
    REGISTER_PER_IP,
    AuthPassthrough,
    bucket_limits,
)
from service.clients.errors import UpstreamError
from service.clients.supabase_admin import delete_auth_user
from service.rate_limit import RateDecision
from service.settings import SettingsError, load_settings
from service.web.problems import PROBLEM_JSON, exception_handlers
from service.wiring import DEPENDENCIES
from tests.asgi import PeerFromHeader

SUPABASE_URL = "https://project.supabase.co"
AUTH = f"{SUPABASE_URL}/auth/v1"
ANON_KEY = "anon-key-0123456789abcdef"
SERVICE_KEY = "service-key-0123456789abcdef"
ENV = {
    "DATABASE_URL": "postgresql://postgres:postgres@127.0.0.1:5432/postgres",
    "SUPABASE_URL": SUPABASE_URL,
    "LETTA_BASE_URL": "http://letta.invalid:8283",
    "LITELLM_BASE_URL": "http://litellm.invalid:4000",
    "LITELLM_MASTER_KEY": "sk-master-test",
    "SUPABASE_ANON_KEY": ANON_KEY,
    "SUPABASE_SERVICE_KEY": SERVICE_KEY,
    "AUTH_PASSTHROUGH_ENABLED": "true",
}
SECRET_KEY = "sb_secret_0123456789abcdefghijklmnop"
# Forwarding the client's IP: the calls are made with the secret key.
FORWARD_ENV = {**ENV, "AUTH_PASSTHROUGH_FORWARD_IP": "true", "SUPABASE_SERVICE_KEY": SECRET_KEY}

EMAIL = "ada@example.com"
PASSWORD = "correct horse battery staple"
ACCESS_TOKEN = "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIiwidHlwIjoiSldUIn0.eyJzdWIiOiI4ZjBjIn0.c2lnbmF0dXJlLXNlY3JldA"
REFRESH_TOKEN = "v2ns4xb6jzqa"
NEW_REFRESH_TOKEN = "k3ld8spq0wnr"
USER_ID = "8f0c6d8e-2b5c-4a52-9a53-1f0b8b1e2c3d"
API_VERSION = {"X-Supabase-Api-Version": "2024-01-01"}

IDENTITY = {
    "identity_id": "0b6c4f3e-96c2-4c4e-8f0e-5d3a2b1c0d9e",
    "id": USER_ID,
    "user_id": USER_ID,
    "identity_data": {"email": EMAIL, "email_verified": False, "phone_verified": False, "sub": USER_ID},
    "provider": "email",
    "last_sign_in_at": "2025-01-15T10:30:00.012345Z",
    "created_at": "2025-01-15T10:30:00.012345Z",
    "updated_at": "2025-01-15T10:30:00.012345Z",
    # Not in supabase_auth's UserIdentity model: must survive the pass-through anyway.
    "email": EMAIL,
}
USER = {
    "id": USER_ID,
    "aud": "authenticated",
    "role": "authenticated",
    "email": EMAIL,
    "email_confirmed_at": "2025-01-15T10:31:00.5Z",
    "phone": "",
    "confirmed_at": "2025-01-15T10:31:00.5Z",
    "last_sign_in_at": "2025-01-15T10:32:00.234567Z",
    "app_metadata": {"provider": "email", "providers": ["email"]},
    "user_metadata": {"email": EMAIL, "email_verified": True, "full_name": "Ada Lovelace", "sub": USER_ID},
    "identities": [IDENTITY],
    "created_at": "2025-01-15T10:30:00.012345Z",
    "updated_at": "2025-01-15T10:32:00.234567Z",
    "is_anonymous": False,
}
# /signup with email confirmation on: the user itself, unconfirmed, and no session.
UNCONFIRMED_USER = {
    "id": USER_ID,
    "aud": "authenticated",
    "role": "authenticated",
    "email": EMAIL,
    "phone": "",
    "confirmation_sent_at": "2025-01-15T10:30:00.345678Z",
    "app_metadata": {"provider": "email", "providers": ["email"]},
    "user_metadata": {"email": EMAIL, "email_verified": False, "full_name": "Ada Lovelace", "sub": USER_ID},
    "identities": [IDENTITY],
    "created_at": "2025-01-15T10:30:00.012345Z",
    "updated_at": "2025-01-15T10:30:00.456789Z",
    "is_anonymous": False,
}
TOKEN_RESPONSE = {
    "access_token": ACCESS_TOKEN,
    "token_type": "bearer",
    "expires_in": 3600,
    "expires_at": 1736940600,
    "refresh_token": REFRESH_TOKEN,
    "user": USER,
}
REFRESHED = {**TOKEN_RESPONSE, "refresh_token": NEW_REFRESH_TOKEN}
META_SECURITY = {"gotrue_meta_security": {"captcha_token": None}}


class MemoryLimiter:
    """``PostgresRateLimiter.hit_key`` in memory: a bucket of (limit, window) admits ``limit`` hits per key; a
    refused one is told to wait one emission interval. Every hit is recorded as (bucket, key)."""

    def __init__(self, limits: dict[str, tuple[int, int]]) -> None:
        self.limits = limits
        self.hits: list[tuple[str, str]] = []

    async def hit_key(self, key: str, bucket: str) -> RateDecision:
        limit, window = self.limits[bucket]
        self.hits.append((bucket, key))
        used = self.hits.count((bucket, key))
        allowed = used <= limit
        return RateDecision(allowed, bucket, limit, window, max(0, limit - used), 0 if allowed else window // limit)


def build_app(env: dict[str, str] | None = None, limiter: MemoryLimiter | None = None) -> Litestar:
    settings = load_settings(env or ENV)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=5.0) as http:
            # The two services the pass-through uses, where the wiring's providers look for them, and its limits
            # over an in-memory limiter instead of the database.
            passthrough = None
            if settings.auth_passthrough_enabled:
                passthrough = AuthPassthrough.from_settings(settings, limiter or MemoryLimiter(bucket_limits(settings)))
            app.state.services = SimpleNamespace(settings=settings, http=http, passthrough=passthrough)
            yield

    return Litestar(
        route_handlers=[AuthPassthroughController],
        dependencies=DEPENDENCIES,
        exception_handlers=exception_handlers,
        middleware=[PeerFromHeader()],
        lifespan=[lifespan],
        logging_config=None,
    )


@pytest.fixture
async def client() -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=build_app()) as test_client:
        yield test_client


def sent(httpx_mock: HTTPXMock) -> httpx.Request:
    requests = httpx_mock.get_requests()
    assert len(requests) == 1, requests
    return requests[0]


def assert_problem(response: httpx.Response, status: int, detail: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"] == "about:blank"
    if detail is not None:
        assert body["detail"] == detail
    return body


# --- happy paths: the exact request we send and Supabase's answer as it was --------------------------------


async def test_register_with_email_confirmation_returns_the_user_and_no_session(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(method="POST", url=f"{AUTH}/signup", json=UNCONFIRMED_USER, headers=API_VERSION)

    response = await client.post(
        "/api/v1/auth/register", json={"email": EMAIL, "password": PASSWORD, "data": {"full_name": "Ada Lovelace"}}
    )

    assert response.status_code == 200
    assert response.json() == {"user": UNCONFIRMED_USER, "session": None}
    request = sent(httpx_mock)
    assert request.method == "POST"
    assert str(request.url) == f"{AUTH}/signup"
    assert request.headers["apikey"] == ANON_KEY
    assert "authorization" not in request.headers  # the anon key goes in apikey only; no user token exists yet
    assert request.headers["x-supabase-api-version"] == "2024-01-01"
    assert json.loads(request.content) == {
        "email": EMAIL,
        "password": PASSWORD,
        "data": {"full_name": "Ada Lovelace"},
        **META_SECURITY,
    }


async def test_register_with_autoconfirm_returns_the_session(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(method="POST", url=f"{AUTH}/signup", json=TOKEN_RESPONSE)

    response = await client.post("/api/v1/auth/register", json={"email": EMAIL, "password": PASSWORD})

    assert response.status_code == 200
    assert response.json() == {"user": USER, "session": TOKEN_RESPONSE}
    assert json.loads(sent(httpx_mock).content) == {"email": EMAIL, "password": PASSWORD, "data": {}, **META_SECURITY}


async def test_login_returns_supabases_session_verbatim(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", json=TOKEN_RESPONSE)

    response = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})

    assert response.status_code == 200
    assert response.json() == TOKEN_RESPONSE
    request = sent(httpx_mock)
    assert request.method == "POST"
    assert str(request.url) == f"{AUTH}/token?grant_type=password"
    assert request.headers["apikey"] == ANON_KEY
    assert json.loads(request.content) == {"email": EMAIL, "password": PASSWORD, "data": {}, **META_SECURITY}


async def test_login_passes_on_weak_password_and_derives_a_missing_expires_at(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock
) -> None:
    # GoTrue adds weak_password when the password no longer meets the policy; old GoTrue omits expires_at.
    body = {k: v for k, v in TOKEN_RESPONSE.items() if k != "expires_at"} | {"weak_password": {"reasons": ["length"]}}
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", json=body)

    response = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})

    assert response.status_code == 200
    session = response.json()
    assert session["weak_password"] == {"reasons": ["length"]}
    assert isinstance(session["expires_at"], int) and session["expires_at"] > 1_700_000_000


async def test_refresh_sends_the_refresh_token_grant(client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=refresh_token", json=REFRESHED)

    response = await client.post("/api/v1/auth/refresh", json={"refresh_token": REFRESH_TOKEN})

    assert response.status_code == 200
    assert response.json() == REFRESHED
    request = sent(httpx_mock)
    assert str(request.url) == f"{AUTH}/token?grant_type=refresh_token"
    assert request.headers["apikey"] == ANON_KEY
    assert json.loads(request.content) == {"refresh_token": REFRESH_TOKEN}


async def test_requests_are_stateless(client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock) -> None:
    # A login must leave nothing behind that a later request (of anyone) could use.
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", json=TOKEN_RESPONSE)
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=refresh_token", json=REFRESHED)

    assert (await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})).status_code == 200
    other = "other-refresh-token"
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": other})).status_code == 200

    _login, refresh = httpx_mock.get_requests()
    assert json.loads(refresh.content) == {"refresh_token": other}
    assert "authorization" not in refresh.headers


async def test_the_gotrue_client_keeps_no_session_and_schedules_no_refresh(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", json=TOKEN_RESPONSE)
    async with httpx.AsyncClient() as http:
        tasks_before = len(asyncio.all_tasks())
        gotrue = RequestScopedGoTrue(AUTH, ANON_KEY, http)
        await gotrue.sign_in_with_password({"email": EMAIL, "password": PASSWORD})
        assert gotrue._refresh_token_timer is None
        assert len(asyncio.all_tasks()) == tasks_before
        # Nothing reached the (per-instance) storage, and a fresh client knows nothing.
        assert await gotrue._storage.get_item(gotrue._storage_key) is None
        assert await RequestScopedGoTrue(AUTH, ANON_KEY, http).get_session() is None
        assert not http.is_closed  # the shared pool must survive the request


# --- Supabase's errors as problem details -----------------------------------------------------------------

LOGIN = ("/api/v1/auth/login", f"{AUTH}/token?grant_type=password", {"email": EMAIL, "password": PASSWORD})
REGISTER = ("/api/v1/auth/register", f"{AUTH}/signup", {"email": EMAIL, "password": PASSWORD})
REFRESH = ("/api/v1/auth/refresh", f"{AUTH}/token?grant_type=refresh_token", {"refresh_token": REFRESH_TOKEN})


@pytest.mark.parametrize(
    ("call", "status", "body", "headers", "code", "detail"),
    [
        pytest.param(
            LOGIN,
            400,
            {"code": "invalid_credentials", "message": "Invalid login credentials"},
            API_VERSION,
            "invalid_credentials",
            "Invalid login credentials",
            id="invalid_credentials-2024",
        ),
        pytest.param(
            LOGIN,
            400,
            {"code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials"},
            {},
            "invalid_credentials",
            "Invalid login credentials",
            id="invalid_credentials-older",
        ),
        pytest.param(
            LOGIN,
            400,
            {"code": "email_not_confirmed", "message": "Email not confirmed"},
            API_VERSION,
            "email_not_confirmed",
            "Email not confirmed",
            id="email_not_confirmed",
        ),
        pytest.param(
            REGISTER,
            422,
            {"code": "user_already_exists", "message": "User already registered"},
            API_VERSION,
            "user_already_exists",
            "User already registered",
            id="user_already_exists",
        ),
        pytest.param(
            REGISTER,
            422,
            {"code": "signup_disabled", "message": "Signups not allowed for this instance"},
            API_VERSION,
            "signup_disabled",
            "Signups not allowed for this instance",
            id="signup_disabled",
        ),
        pytest.param(
            REFRESH,
            400,
            {"code": "refresh_token_not_found", "message": "Invalid Refresh Token: Refresh Token Not Found"},
            API_VERSION,
            "refresh_token_not_found",
            "Invalid Refresh Token: Refresh Token Not Found",
            id="refresh_token_not_found",
        ),
        pytest.param(
            REFRESH,
            400,
            {"code": 400, "error_code": "refresh_token_already_used", "msg": "Invalid Refresh Token: Already Used"},
            {},
            "refresh_token_already_used",
            "Invalid Refresh Token: Already Used",
            id="refresh_token_already_used-older",
        ),
        pytest.param(
            REFRESH,
            400,
            {"error": "invalid_grant", "error_description": "Invalid Refresh Token: Refresh Token Not Found"},
            {},
            "invalid_grant",
            "Invalid Refresh Token: Refresh Token Not Found",
            id="oauth-invalid_grant",
        ),
    ],
)
async def test_supabase_errors_keep_status_message_and_code(
    client: AsyncTestClient[Litestar],
    httpx_mock: HTTPXMock,
    call: tuple[str, str, dict[str, Any]],
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    code: str,
    detail: str,
) -> None:
    path, upstream, payload = call
    httpx_mock.add_response(method="POST", url=upstream, status_code=status, json=body, headers=headers)

    response = await client.post(path, json=payload)

    problem = assert_problem(response, status, detail)
    assert problem["code"] == code
    assert problem["instance"] == path
    assert "reasons" not in problem


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        pytest.param(
            {
                "code": 422,
                "error_code": "weak_password",
                "msg": "Password should be at least 6 characters.",
                "weak_password": {"reasons": ["length"]},
            },
            {},
            id="older",
        ),
        pytest.param(
            {
                "code": "weak_password",
                "message": "Password should be at least 6 characters.",
                "weak_password": {"reasons": ["length"]},
            },
            API_VERSION,
            id="2024",
        ),
    ],
)
async def test_weak_password_carries_the_reasons(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock, body: dict[str, Any], headers: dict[str, str]
) -> None:
    httpx_mock.add_response(method="POST", url=f"{AUTH}/signup", status_code=422, json=body, headers=headers)

    response = await client.post("/api/v1/auth/register", json={"email": EMAIL, "password": "abc"})

    problem = assert_problem(response, 422, "Password should be at least 6 characters.")
    assert problem["code"] == "weak_password"
    assert problem["reasons"] == ["length"]


async def test_weak_password_without_reasons_still_maps(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock
) -> None:
    # Some GoTrue releases send no weak_password payload; supabase_auth then fails to parse it (AuthUnknownError).
    body = {"code": "weak_password", "message": "Password should be at least 6 characters."}
    httpx_mock.add_response(method="POST", url=f"{AUTH}/signup", status_code=422, json=body, headers=API_VERSION)

    response = await client.post("/api/v1/auth/register", json={"email": EMAIL, "password": "abc"})

    problem = assert_problem(response, 422, "Password should be at least 6 characters.")
    assert problem["code"] == "weak_password"
    assert "reasons" not in problem


@pytest.mark.parametrize("retry_after", ["30", None])
async def test_rate_limit_passes_retry_after_on(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock, retry_after: str | None
) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    httpx_mock.add_response(
        method="POST",
        url=f"{AUTH}/token?grant_type=password",
        status_code=429,
        json={"code": 429, "error_code": "over_request_rate_limit", "msg": "Request rate limit reached"},
        headers=headers,
    )

    response = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})

    problem = assert_problem(response, 429, "Request rate limit reached")
    assert problem["title"] == "Too Many Requests"
    assert problem["code"] == "over_request_rate_limit"
    assert response.headers.get("retry-after") == retry_after


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(
            {"status_code": 500, "json": {"code": 500, "error_code": "unexpected_failure", "msg": "Database error"}},
            id="gotrue-500",
        ),
        pytest.param({"status_code": 502, "text": "<html>Bad Gateway</html>"}, id="gateway-502-html"),
        pytest.param({"status_code": 503, "text": ""}, id="503-empty"),
        pytest.param(
            {"status_code": 504, "json": {"code": "request_timeout", "message": "Processing this request timed out"}},
            id="504",
        ),
        pytest.param({"status_code": 500, "text": "upstream connect error"}, id="500-text"),
        pytest.param(httpx.ConnectError("All connection attempts failed"), id="connect-error"),
        pytest.param(httpx.ReadTimeout("timed out"), id="read-timeout"),
    ],
)
async def test_network_failures_and_5xx_are_503(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock, failure: dict[str, Any] | Exception
) -> None:
    if isinstance(failure, Exception):
        httpx_mock.add_exception(failure, method="POST", url=f"{AUTH}/token?grant_type=password")
    else:
        httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", **failure)

    response = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})

    problem = assert_problem(response, 503, UNREACHABLE)
    assert problem["title"] == "Service Unavailable"
    assert "code" not in problem


@pytest.mark.parametrize(
    ("status", "body"),
    [
        # The API gateway, not GoTrue: our key or URL is wrong, which the caller can do nothing about.
        (401, {"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."}),
        (404, {"message": "no Route matched with those values"}),
    ],
)
async def test_gateway_rejections_are_a_configuration_problem(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock, status: int, body: dict[str, Any]
) -> None:
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", status_code=status, json=body)

    response = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})

    problem = assert_problem(response, 503)
    assert "SUPABASE_ANON_KEY" in problem["detail"]


async def test_an_unreadable_success_is_502(client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", json={"unexpected": True})

    response = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})

    assert_problem(response, 502)


# --- configuration and input bounds: refused before any call to Supabase ----------------------------------


@pytest.mark.parametrize("enabled", [None, "false"])
async def test_the_pass_through_is_off_by_default_and_answers_404(httpx_mock: HTTPXMock, enabled: str | None) -> None:
    env = {k: v for k, v in ENV.items() if k not in ("AUTH_PASSTHROUGH_ENABLED", "SUPABASE_ANON_KEY")}
    if enabled is not None:
        env["AUTH_PASSTHROUGH_ENABLED"] = enabled
    async with AsyncTestClient(app=build_app(env)) as client:
        for path, _, payload in (LOGIN, REGISTER, REFRESH):
            problem = assert_problem(await client.post(path, json=payload), 404)
            assert problem["code"] == "auth_passthrough_disabled"
            assert "Supabase Auth directly" in problem["detail"]
    assert httpx_mock.get_requests() == []


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        pytest.param(
            {k: v for k, v in ENV.items() if k != "SUPABASE_ANON_KEY"},
            "AUTH_PASSTHROUGH_ENABLED is on: set SUPABASE_ANON_KEY (the publishable or anon key)",
            id="enabled-without-anon-key",
        ),
        pytest.param(
            {**{k: v for k, v in FORWARD_ENV.items() if k != "SUPABASE_SERVICE_KEY"}},
            "AUTH_PASSTHROUGH_FORWARD_IP is on: set SUPABASE_SERVICE_KEY (a secret key, sb_secret_)",
            id="forwarding-without-a-key",
        ),
        pytest.param(
            {**FORWARD_ENV, "SUPABASE_SERVICE_KEY": "eyJhbGciOiJIUzI1NiJ9.legacy-service-role"},
            "AUTH_PASSTHROUGH_FORWARD_IP is on but SUPABASE_SERVICE_KEY is not a secret key (sb_secret_...): "
            "Supabase ignores Sb-Forwarded-For with any other key",
            id="forwarding-with-a-legacy-key-on-supabase-co",
        ),
        pytest.param(
            {**ENV, "TRUSTED_PROXIES": "10.0.0.0/8, proxy.internal"},
            "TRUSTED_PROXIES: 'proxy.internal' does not appear to be an IPv4 or IPv6 network",
            id="trusted-proxy-not-an-address",
        ),
    ],
)
def test_a_pass_through_that_cannot_work_is_a_settings_problem(env: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    assert caught.value.problems == [problem]
    assert SECRET_KEY not in str(caught.value)


def test_pass_through_settings_and_their_defaults() -> None:
    off = load_settings({k: v for k, v in ENV.items() if k not in ("AUTH_PASSTHROUGH_ENABLED", "SUPABASE_ANON_KEY")})
    assert off.auth_passthrough_enabled is False and off.auth_passthrough_forward_ip is False
    assert off.trusted_proxies == []
    assert bucket_limits(off) == {
        LOGIN_PER_IP: (60, 3600),
        LOGIN_PER_EMAIL: (10, 3600),
        REGISTER_PER_IP: (10, 3600),
        REGISTER_PER_EMAIL: (5, 3600),
        REFRESH_PER_IP: (300, 3600),
    }
    # Forwarding to a self-hosted Supabase Auth (not *.supabase.co) may use whatever key it accepts.
    own = load_settings({**FORWARD_ENV, "SUPABASE_URL": "https://auth.example.org", "SUPABASE_SERVICE_KEY": "jwt"})
    assert own.auth_passthrough_forward_ip is True
    proxies = load_settings({**ENV, "TRUSTED_PROXIES": " 10.0.0.0/8 ,192.0.2.7, 2001:db8::/32,"}).trusted_proxies
    assert proxies == ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        pytest.param("/api/v1/auth/login", {"email": EMAIL, "password": "p" * 73}, id="password-73-bytes"),
        # 37 characters pass a character count but are 74 bytes: bcrypt's limit is in bytes.
        pytest.param("/api/v1/auth/register", {"email": EMAIL, "password": "é" * 37}, id="password-74-utf8-bytes"),
        pytest.param("/api/v1/auth/login", {"email": EMAIL, "password": ""}, id="password-empty"),
        pytest.param("/api/v1/auth/login", {"email": "a" * 309 + "@example.com", "password": PASSWORD}, id="email-321"),
        pytest.param("/api/v1/auth/login", {"email": EMAIL}, id="password-missing"),
        pytest.param("/api/v1/auth/refresh", {"refresh_token": "r" * 2049}, id="refresh-token-2049"),
        pytest.param("/api/v1/auth/refresh", {"refresh_token": ""}, id="refresh-token-empty"),
        pytest.param(
            "/api/v1/auth/register",
            {"email": EMAIL, "password": PASSWORD, "data": {"bio": "x" * 4100}},
            id="metadata-over-4kib",
        ),
        pytest.param(
            "/api/v1/auth/register",
            {"email": EMAIL, "password": PASSWORD, "data": {f"k{i}": i for i in range(33)}},
            id="metadata-33-keys",
        ),
        pytest.param(
            "/api/v1/auth/login", {"email": EMAIL, "password": PASSWORD, "remember_me": True}, id="unknown-field"
        ),
        pytest.param(
            "/api/v1/auth/register",
            {"email": EMAIL, "password": PASSWORD, "options": {"email_redirect_to": "https://evil.example"}},
            id="unknown-field-options",
        ),
        pytest.param(
            "/api/v1/auth/refresh", {"refresh_token": REFRESH_TOKEN, "access_token": ACCESS_TOKEN}, id="unknown-field"
        ),
    ],
)
async def test_invalid_bodies_are_refused_before_calling_supabase(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock, path: str, payload: dict[str, Any]
) -> None:
    response = await client.post(path, json=payload)

    assert_problem(response, 400)
    assert httpx_mock.get_requests() == []
    for secret in ("p" * 73, "é" * 37, PASSWORD, "r" * 2049):
        assert secret not in response.text


async def test_password_of_exactly_72_bytes_is_accepted(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", json=TOKEN_RESPONSE)
    password = "é" * 36  # 72 bytes

    response = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": password})

    assert response.status_code == 200
    assert json.loads(sent(httpx_mock).content)["password"] == password


# --- the client's IP, forwarded to Supabase Auth; captcha tokens -----------------------------------------------


@pytest.mark.parametrize("call", [LOGIN, REGISTER, REFRESH], ids=["login", "register", "refresh"])
async def test_forwarding_sends_the_client_ip_with_the_secret_key(
    httpx_mock: HTTPXMock, call: tuple[str, str, dict[str, Any]]
) -> None:
    path, upstream, payload = call
    httpx_mock.add_response(method="POST", url=upstream, json=TOKEN_RESPONSE)
    async with AsyncTestClient(app=build_app(FORWARD_ENV)) as client:
        response = await client.post(path, json=payload, headers={"X-Test-Peer": "203.0.113.7"})

    assert response.status_code == 200, response.text
    request = sent(httpx_mock)
    # What Supabase Auth honours from a trusted server: Sb-Forwarded-For, on a request made with a secret key.
    assert request.headers["sb-forwarded-for"] == "203.0.113.7"
    assert request.headers["apikey"] == SECRET_KEY
    assert "authorization" not in request.headers
    assert "x-forwarded-for" not in request.headers


async def test_without_forwarding_no_client_ip_is_sent_and_the_anon_key_is_used(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", json=TOKEN_RESPONSE)
    async with AsyncTestClient(app=build_app()) as client:
        response = await client.post(
            "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}, headers={"X-Test-Peer": "203.0.113.7"}
        )
    assert response.status_code == 200
    request = sent(httpx_mock)
    assert "sb-forwarded-for" not in request.headers
    assert request.headers["apikey"] == ANON_KEY


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "trusted", "client_ip"),
    [
        pytest.param("203.0.113.7", "198.51.100.1", "", "203.0.113.7", id="no-trusted-proxy-the-header-is-ignored"),
        pytest.param("203.0.113.7", "198.51.100.1", "10.0.0.0/8", "203.0.113.7", id="peer-not-a-trusted-proxy"),
        pytest.param("10.0.0.5", "198.51.100.1", "10.0.0.0/8", "198.51.100.1", id="from-a-trusted-proxy"),
        pytest.param(
            "10.0.0.5", "1.2.3.4, 198.51.100.1, 10.0.0.9", "10.0.0.0/8", "198.51.100.1", id="spoofed-left-part-skipped"
        ),
        pytest.param("10.0.0.5", None, "10.0.0.0/8", "10.0.0.5", id="trusted-proxy-without-the-header"),
        pytest.param("::ffff:203.0.113.7", None, "", "203.0.113.7", id="ipv4-mapped-peer"),
    ],
)
async def test_the_forwarded_ip_follows_the_trusted_proxy_rule(
    httpx_mock: HTTPXMock, peer: str, forwarded_for: str | None, trusted: str, client_ip: str
) -> None:
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", json=TOKEN_RESPONSE)
    headers = {"X-Test-Peer": peer, **({"X-Forwarded-For": forwarded_for} if forwarded_for else {})}
    async with AsyncTestClient(app=build_app({**FORWARD_ENV, "TRUSTED_PROXIES": trusted})) as client:
        response = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}, headers=headers)
    assert response.status_code == 200, response.text
    assert sent(httpx_mock).headers["sb-forwarded-for"] == client_ip


async def test_a_peer_that_is_not_an_ip_is_not_forwarded(httpx_mock: HTTPXMock) -> None:
    # The test client's own peer is "testclient": nothing Supabase could use, so no header (it would ignore it).
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", json=TOKEN_RESPONSE)
    async with AsyncTestClient(app=build_app(FORWARD_ENV)) as client:
        response = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert response.status_code == 200
    assert "sb-forwarded-for" not in sent(httpx_mock).headers


@pytest.mark.parametrize("call", [LOGIN, REGISTER], ids=["login", "register"])
async def test_a_captcha_token_is_sent_as_gotrue_meta_security(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock, call: tuple[str, str, dict[str, Any]]
) -> None:
    path, upstream, payload = call
    httpx_mock.add_response(method="POST", url=upstream, json=TOKEN_RESPONSE)
    token = "10000000-aaaa-bbbb-cccc-000000000001"

    response = await client.post(path, json={**payload, "captcha_token": token})

    assert response.status_code == 200, response.text
    body = json.loads(sent(httpx_mock).content)
    assert body["gotrue_meta_security"] == {"captcha_token": token}
    assert "captcha_token" not in body  # only where GoTrue reads it


async def test_a_captcha_supabase_refuses_is_its_400(client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="POST",
        url=f"{AUTH}/token?grant_type=password",
        status_code=400,
        json={"code": "captcha_failed", "message": "captcha protection: request disallowed (invalid-input-response)"},
        headers=API_VERSION,
    )
    response = await client.post(
        "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD, "captcha_token": "expired"}
    )
    problem = assert_problem(response, 400, "captcha protection: request disallowed (invalid-input-response)")
    assert problem["code"] == "captcha_failed"


@pytest.mark.parametrize("token", ["", "t" * 4097])
async def test_a_captcha_token_out_of_bounds_is_refused_before_calling_supabase(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock, token: str
) -> None:
    response = await client.post(
        "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD, "captcha_token": token}
    )
    assert_problem(response, 400)
    assert httpx_mock.get_requests() == []


async def test_the_gateway_rejecting_the_secret_key_names_it(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="POST", url=f"{AUTH}/token?grant_type=password", status_code=401, json={"message": "Invalid API key"}
    )
    async with AsyncTestClient(app=build_app(FORWARD_ENV)) as client:
        response = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
    assert "SUPABASE_SERVICE_KEY" in assert_problem(response, 503)["detail"]


# --- limits per client IP and per email ---------------------------------------------------------------------


def limited_app(**limits: str) -> tuple[Litestar, MemoryLimiter]:
    settings_env = {**ENV, **limits}
    limiter = MemoryLimiter(bucket_limits(load_settings(settings_env)))
    return build_app(settings_env, limiter), limiter


async def test_login_is_limited_per_email_with_a_429_problem_and_retry_after(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="POST", url=f"{AUTH}/token?grant_type=password", json=TOKEN_RESPONSE, is_reusable=True
    )
    app, _ = limited_app(RATE_LIMIT_LOGIN_PER_EMAIL_PER_HOUR="2")
    async with AsyncTestClient(app=app) as client:
        statuses = []
        for i in range(2):
            response = await client.post(
                "/api/v1/auth/login",
                json={"email": EMAIL, "password": PASSWORD},
                headers={"X-Test-Peer": f"192.0.2.{i}"},
            )
            statuses.append(response.status_code)
        # Another IP, and the address cased differently: the same mailbox.
        refused = await client.post(
            "/api/v1/auth/login",
            json={"email": " Ada@Example.COM ", "password": PASSWORD},
            headers={"X-Test-Peer": "192.0.2.9"},
        )
        other = await client.post(
            "/api/v1/auth/login",
            json={"email": "bob@example.com", "password": PASSWORD},
            headers={"X-Test-Peer": "192.0.2.9"},
        )

    assert statuses == [200, 200]
    problem = assert_problem(refused, 429)
    assert problem["code"] == "rate_limited"
    assert problem["bucket"] == LOGIN_PER_EMAIL and problem["limit"] == 2 and problem["window_seconds"] == 3600
    assert refused.headers["retry-after"] == "1800" == str(problem["retry_after"])
    assert other.status_code == 200
    assert len(httpx_mock.get_requests()) == 3  # the refused login never reached Supabase


async def test_login_is_limited_per_ip_before_the_email_is_counted(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="POST", url=f"{AUTH}/token?grant_type=password", json=TOKEN_RESPONSE, is_reusable=True
    )
    app, limiter = limited_app(RATE_LIMIT_LOGIN_PER_IP_PER_HOUR="3")
    async with AsyncTestClient(app=app) as client:
        responses = [
            await client.post(
                "/api/v1/auth/login",
                json={"email": f"user{i}@example.com", "password": PASSWORD},
                headers={"X-Test-Peer": "198.51.100.4"},
            )
            for i in range(4)
        ]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert responses[-1].json()["bucket"] == LOGIN_PER_IP
    # The refused request spent nothing of its email's budget.
    assert [bucket for bucket, _ in limiter.hits] == [LOGIN_PER_IP, LOGIN_PER_EMAIL] * 3 + [LOGIN_PER_IP]


async def test_register_and_refresh_have_their_own_buckets(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="POST", url=f"{AUTH}/signup", json=UNCONFIRMED_USER, is_reusable=True)
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", json=TOKEN_RESPONSE)
    httpx_mock.add_response(
        method="POST", url=f"{AUTH}/token?grant_type=refresh_token", json=REFRESHED, is_reusable=True
    )
    app, limiter = limited_app(RATE_LIMIT_REGISTER_PER_EMAIL_PER_HOUR="1", RATE_LIMIT_REFRESH_PER_IP_PER_HOUR="1")
    peer = {"X-Test-Peer": "198.51.100.4"}
    async with AsyncTestClient(app=app) as client:
        first = await client.post("/api/v1/auth/register", json={"email": EMAIL, "password": PASSWORD}, headers=peer)
        again = await client.post("/api/v1/auth/register", json={"email": EMAIL, "password": PASSWORD}, headers=peer)
        refreshed = await client.post("/api/v1/auth/refresh", json={"refresh_token": REFRESH_TOKEN}, headers=peer)
        refused = await client.post("/api/v1/auth/refresh", json={"refresh_token": REFRESH_TOKEN}, headers=peer)
        login = await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}, headers=peer)

    assert (first.status_code, again.status_code) == (200, 429)
    assert again.json()["bucket"] == REGISTER_PER_EMAIL
    assert (refreshed.status_code, refused.status_code) == (200, 429)
    assert refused.json()["bucket"] == REFRESH_PER_IP
    # A login is none of those.
    assert login.status_code == 200
    assert {bucket for bucket, _ in limiter.hits} == {
        REGISTER_PER_IP,
        REGISTER_PER_EMAIL,
        REFRESH_PER_IP,
        LOGIN_PER_IP,
        LOGIN_PER_EMAIL,
    }


async def test_limits_count_digests_never_the_address_or_email(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        method="POST", url=f"{AUTH}/token?grant_type=password", json=TOKEN_RESPONSE, is_reusable=True
    )
    app, limiter = limited_app()
    async with AsyncTestClient(app=app) as client:
        for peer in ("2001:db8:1:2::a", "2001:db8:1:2:ffff::b", "2001:db8:1:3::a"):
            await client.post(
                "/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD}, headers={"X-Test-Peer": peer}
            )
    keys = {bucket: [key for b, key in limiter.hits if b == bucket] for bucket in (LOGIN_PER_IP, LOGIN_PER_EMAIL)}
    assert all(len(key) == 64 and set(key) <= set("0123456789abcdef") for _, key in limiter.hits)
    assert EMAIL not in repr(limiter.hits) and "2001" not in repr(limiter.hits)
    # One email, one key; an IPv6 client counts per /64: the first two share a bucket, the third is another.
    assert len(set(keys[LOGIN_PER_EMAIL])) == 1
    assert keys[LOGIN_PER_IP][0] == keys[LOGIN_PER_IP][1] != keys[LOGIN_PER_IP][2]


# --- logs ---------------------------------------------------------------------------------------------------


async def test_no_password_or_token_reaches_the_logs(
    client: AsyncTestClient[Litestar], httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=password", json=TOKEN_RESPONSE)
    httpx_mock.add_response(
        method="POST",
        url=f"{AUTH}/token?grant_type=password",
        status_code=400,
        json={"code": "invalid_credentials", "message": "Invalid login credentials"},
        headers=API_VERSION,
    )
    httpx_mock.add_response(method="POST", url=f"{AUTH}/token?grant_type=refresh_token", json=REFRESHED)
    httpx_mock.add_exception(httpx.ConnectError("refused"), method="POST", url=f"{AUTH}/signup")

    await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
    await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": PASSWORD})
    await client.post("/api/v1/auth/refresh", json={"refresh_token": REFRESH_TOKEN})
    await client.post("/api/v1/auth/register", json={"email": EMAIL, "password": PASSWORD})
    await client.post("/api/v1/auth/login", json={"email": EMAIL, "password": "x" * 80})

    assert any(r.name == "service.auth.passthrough" for r in caplog.records)  # we did log the failures
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in (PASSWORD, "x" * 80, ACCESS_TOKEN, REFRESH_TOKEN, NEW_REFRESH_TOKEN, ANON_KEY):
        assert secret not in logged


# --- OpenAPI ------------------------------------------------------------------------------------------------


async def test_openapi_documents_the_public_routes(client: AsyncTestClient[Litestar]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()

    for name in ("register", "login", "refresh"):
        operation = schema["paths"][f"/api/v1/auth/{name}"]["post"]
        assert operation["summary"]
        assert operation["tags"] == ["auth"]
        assert operation["security"] == [{}]  # no bearer token needed
        assert {"200", "429", "503"} <= set(operation["responses"])
        assert operation["requestBody"]["content"]["application/json"]["schema"]["examples"]
        assert operation["responses"]["200"]["content"]["application/json"]["examples"]
        assert PROBLEM_JSON in operation["responses"]["503"]["content"]
    login = schema["paths"]["/api/v1/auth/login"]["post"]
    assert login["responses"]["400"]["content"][PROBLEM_JSON]["examples"]
    for name in ("register", "login", "refresh"):
        responses = schema["paths"][f"/api/v1/auth/{name}"]["post"]["responses"]
        assert "auth_passthrough_disabled" in json.dumps(responses["404"])
        too_many = json.dumps(responses["429"])
        assert "rate_limited" in too_many and "over_request_rate_limit" in too_many
    for request in ("LoginRequest", "RegisterRequest"):
        assert schema["components"]["schemas"][request]["properties"]["captcha_token"]
    password = schema["components"]["schemas"]["LoginRequest"]["properties"]["password"]
    assert password["maxLength"] == 72


# --- admin: delete a Supabase Auth user ---------------------------------------------------------------------

ADMIN_USER_URL = f"{AUTH}/admin/users/{USER_ID}"


async def test_delete_auth_user_sends_the_admin_request(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(method="DELETE", url=ADMIN_USER_URL, json={})
    async with httpx.AsyncClient() as http:
        await delete_auth_user(http, SUPABASE_URL, SERVICE_KEY, uuid.UUID(USER_ID))
        assert not http.is_closed

    request = sent(httpx_mock)
    assert request.method == "DELETE"
    assert str(request.url) == ADMIN_USER_URL
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    assert json.loads(request.content) == {"should_soft_delete": False}


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ({"code": 404, "error_code": "user_not_found", "msg": "User not found"}, {}),
        ({"code": "user_not_found", "message": "User not found"}, API_VERSION),
        ({"code": 404, "msg": "User not found"}, {}),  # before error codes existed
    ],
)
async def test_delete_auth_user_of_a_deleted_user_succeeds(
    httpx_mock: HTTPXMock, body: dict[str, Any], headers: dict[str, str]
) -> None:
    httpx_mock.add_response(method="DELETE", url=ADMIN_USER_URL, status_code=404, json=body, headers=headers)
    async with httpx.AsyncClient() as http:
        await delete_auth_user(http, SUPABASE_URL, SERVICE_KEY, USER_ID)


@pytest.mark.parametrize(
    ("failure", "status", "transient"),
    [
        (
            {"status_code": 500, "json": {"code": 500, "error_code": "unexpected_failure", "msg": "Database error"}},
            500,
            True,
        ),
        ({"status_code": 502, "text": "<html>Bad Gateway</html>"}, 502, True),
        (
            {"status_code": 429, "json": {"code": 429, "error_code": "over_request_rate_limit", "msg": "Slow down"}},
            429,
            True,
        ),
        ({"status_code": 403, "json": {"code": "not_admin", "message": "User not allowed"}}, 403, False),
        ({"status_code": 401, "json": {"message": "Invalid API key"}}, 401, False),
        # A 404 that is not GoTrue's "user not found" (wrong URL) must not pass for "already deleted".
        ({"status_code": 404, "json": {"message": "no Route matched with those values"}}, 404, False),
        (httpx.ConnectError("All connection attempts failed"), None, True),
        (httpx.ReadTimeout("timed out"), None, True),
    ],
)
async def test_delete_auth_user_failures_raise_upstream_error(
    httpx_mock: HTTPXMock, failure: dict[str, Any] | Exception, status: int | None, transient: bool
) -> None:
    if isinstance(failure, Exception):
        httpx_mock.add_exception(failure, method="DELETE", url=ADMIN_USER_URL)
    else:
        httpx_mock.add_response(method="DELETE", url=ADMIN_USER_URL, **failure)

    async with httpx.AsyncClient() as http:
        with pytest.raises(UpstreamError) as raised:
            await delete_auth_user(http, SUPABASE_URL, SERVICE_KEY, USER_ID)

    assert raised.value.service == "supabase-auth"
    assert raised.value.status == status
    assert raised.value.transient is transient
    assert USER_ID in str(raised.value)
    assert SERVICE_KEY not in str(raised.value)


async def test_delete_auth_user_rejects_a_non_uuid_without_calling(httpx_mock: HTTPXMock) -> None:
    async with httpx.AsyncClient() as http:
        with pytest.raises(ValueError):
            await delete_auth_user(http, SUPABASE_URL, SERVICE_KEY, "../../admin/users")
    assert httpx_mock.get_requests() == []
