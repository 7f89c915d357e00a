"""``/api/v1/auth/register|login|refresh``: a thin, stateless pass-through to Supabase Auth (GoTrue).

For clients that cannot (or should not) embed supabase-js. Off unless ``AUTH_PASSTHROUGH_ENABLED``: then every
route answers 404 ``auth_passthrough_disabled`` (a body that does not validate is still a 400: it is read before
the route looks at its configuration). When on, each request is first counted against the limits per client IP
and per email (``service.py``: 429 ``rate_limited`` with ``Retry-After`` once spent), then forwarded to GoTrue
with the project's key (and, with ``AUTH_PASSTHROUGH_FORWARD_IP``, the client's IP in ``Sb-Forwarded-For``), and
its answer returned as GoTrue sent it. A ``captcha_token`` in a register or login body goes to GoTrue as
``gotrue_meta_security.captcha_token``, where it verifies it.

Nothing is kept between requests: every request gets its own ``AsyncGoTrueClient`` (sharing only the pooled
``httpx.AsyncClient``) with ``persist_session=False`` and ``auto_refresh_token=False``, so no session outlives the
request and no background refresh timer starts.

Behaviour:

* ``POST /register`` → ``200 {"user": {...}, "session": {...} | null}``. ``session`` is ``null`` when the
  project requires email confirmation. Always 200, never 201: GoTrue answers a repeated sign-up of a
  confirmed address with the same 200 and an obfuscated user (anti-enumeration), so "created" would be a lie.
* ``POST /login`` and ``POST /refresh`` → ``200`` with GoTrue's token response as is (``access_token``,
  ``token_type``, ``expires_in``, ``expires_at``, ``refresh_token``, ``user``, plus ``weak_password`` or
  provider tokens when GoTrue sends them).
* GoTrue 4xx → the same status as problem details: ``detail`` = GoTrue's message, ``code`` = its error code
  (``null`` if it gave none; the OAuth ``error`` of old-style bodies otherwise), ``reasons`` for
  ``weak_password``, ``Retry-After`` passed on for 429.
* Network failure, timeout or GoTrue/gateway 5xx → 503 "Supabase Auth is unreachable". A 401/404 without a
  GoTrue error code is the API gateway rejecting *our* key or URL, not the caller → 503 too.
* A 2xx body we cannot read, or an unexpected status → 502.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from http import HTTPStatus
from typing import Annotated, Any, TypeVar

import httpx
import msgspec
from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from pydantic import ValidationError as PydanticValidationError
from supabase_auth.errors import AuthError, AuthRetryableError, AuthUnknownError, AuthWeakPasswordError
from supabase_auth.types import SignInWithEmailAndPasswordCredentials, SignUpWithEmailAndPasswordCredentialsOptions

from service.auth.passthrough.client_ip import Client
from service.auth.passthrough.docs import COMMON_ERRORS, DISABLED, UNREACHABLE, problem_spec
from service.auth.passthrough.schemas import (
    AuthSession,
    LoginRequest,
    RefreshRequest,
    RegisterRequest,
    RegisterResponse,
)
from service.auth.passthrough.service import AuthPassthrough
from service.errors import DomainError
from service.web.examples import AUTH_SESSION_EXAMPLE, AUTH_UNCONFIRMED_USER_EXAMPLE, AUTH_USER_EXAMPLE
from service.web.openapi import body_example, ok
from service.web.problems import ProblemError
from service.web.state import services_of

logger = logging.getLogger("service.auth.passthrough")

T = TypeVar("T")


def auth_passthrough(state: State) -> AuthPassthrough:
    """The pass-through's dependency: its configuration and limits (``service.wiring``), or 404 while it is off."""
    passthrough = services_of(state).passthrough
    if passthrough is None:
        raise DomainError(DISABLED)
    return passthrough


def client_of(request: Request[Any, Any, Any], passthrough: AuthPassthrough) -> Client:
    peer = request.client.host if request.client is not None else None
    return passthrough.client(peer, request.headers.getall("x-forwarded-for", []))


def _upstream_response(exc: AuthError) -> httpx.Response | None:
    # supabase_auth raises its errors `from` the httpx.HTTPStatusError, which still holds the response.
    cause = exc.__cause__
    return cause.response if isinstance(cause, httpx.HTTPStatusError) else None


def _json_object(response: httpx.Response | None) -> dict[str, Any]:
    if response is None:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _first_str(body: dict[str, Any], *keys: str) -> str | None:
    return next((body[k] for k in keys if isinstance(body.get(k), str) and body[k]), None)


def _is_client_error(status: int) -> bool:
    # A status HTTPStatus does not know has no title for the problem: treat it as unexpected.
    try:
        HTTPStatus(status)
    except ValueError:
        return False
    return 400 <= status < 500


def _problem_from_auth_error(operation: str, exc: AuthError, key_variable: str) -> ProblemError:
    upstream = _upstream_response(exc)
    if isinstance(exc, AuthRetryableError) or (upstream is not None and upstream.status_code >= 500):
        logger.warning(
            "supabase auth unreachable",
            extra={
                "operation": operation,
                "upstream_status": upstream.status_code if upstream is not None else None,
                "error": exc.message[:200],
            },
        )
        return ProblemError(503, UNREACHABLE)

    # The upstream body is the fallback when the library could not make sense of it (it then raises
    # AuthUnknownError, e.g. for a `weak_password` error without `reasons`). GoTrue's three error shapes:
    # {"code": "<error code>", "message"} (API version 2024-01-01, which supabase_auth requests),
    # {"code": <status>, "error_code", "msg"} (older) and OAuth's {"error", "error_description"}.
    body = _json_object(upstream)
    status = upstream.status_code if upstream is not None else getattr(exc, "status", None)
    if not isinstance(status, int) or not _is_client_error(status):
        logger.error("supabase auth unexpected error", extra={"operation": operation, "upstream_status": status})
        return ProblemError(502, f"Supabase Auth answered the {operation} with an unexpected error")

    code: str | None = exc.code or _first_str(body, "error_code", "code", "error")
    if code is None and status in (401, 404):
        # GoTrue labels its own 401/404s; a bare one comes from the gateway: wrong SUPABASE_URL or key.
        logger.error("supabase auth rejected this service", extra={"operation": operation, "upstream_status": status})
        return ProblemError(
            503, f"Supabase Auth rejected this service (HTTP {status}): check SUPABASE_URL and {key_variable}"
        )

    detail = exc.message
    if isinstance(exc, AuthUnknownError) or not detail:
        detail = _first_str(body, "msg", "message", "error_description", "error") or HTTPStatus(status).phrase
    logger.info("supabase auth refused", extra={"operation": operation, "upstream_status": status, "code": code})
    extra: dict[str, Any] = {"code": code}
    reasons: Any = exc.reasons if isinstance(exc, AuthWeakPasswordError) else None
    if reasons is None and isinstance(weak := body.get("weak_password"), dict):
        reasons = weak.get("reasons")
    if isinstance(reasons, list) and reasons:
        extra["reasons"] = [str(r) for r in reasons]
    headers: dict[str, str] = {}
    retry_after = upstream.headers.get("retry-after") if upstream is not None else None
    if status == 429 and retry_after:
        headers["Retry-After"] = retry_after
    return ProblemError(status, detail, headers=headers or None, **extra)


async def call(operation: str, pending: Awaitable[T], key_variable: str = "SUPABASE_ANON_KEY") -> T:
    """Await a supabase_auth call, turning its failures into problem details (``key_variable``: the setting that
    holds the key it was made with, named when Supabase's gateway rejects it)."""
    try:
        return await pending
    except AuthError as exc:
        raise _problem_from_auth_error(operation, exc, key_variable) from exc
    except PydanticValidationError as exc:
        # A 2xx body the library could not parse as a session or a user.
        logger.error("supabase auth response unreadable", extra={"operation": operation})
        raise ProblemError(502, f"Supabase Auth answered the {operation} with an unreadable response") from exc


def decode(operation: str, raw: bytes, type_: type[T]) -> T:
    try:
        return msgspec.json.decode(raw, type=type_)
    except msgspec.DecodeError as exc:
        logger.error("supabase auth response unreadable", extra={"operation": operation})
        raise ProblemError(502, f"Supabase Auth answered the {operation} with an unreadable response") from exc


def session_of(operation: str, raw: bytes, expires_at: int | None) -> AuthSession:
    session = decode(operation, raw, AuthSession)
    if session.expires_at is None:
        # Older GoTrue omits it; the library derives it from expires_in, as supabase-js does.
        session.expires_at = expires_at
    return session


class AuthPassthroughController(Controller):
    path = "/api/v1/auth"
    tags = ["auth"]
    # Public: the middleware lets these paths through (PUBLIC_PATHS); [{}] overrides the global bearer requirement.
    security = [{}]
    dependencies = {"passthrough": Provide(auth_passthrough, sync_to_thread=False)}

    @post(
        "/register",
        status_code=200,
        summary="Sign up with email and password (Supabase Auth)",
        description=(
            "Forwards to Supabase Auth's `POST /auth/v1/signup`. `session` is `null` when the project requires "
            "email confirmation (the user must confirm before logging in). Always 200: Supabase answers a repeated "
            "sign-up of a confirmed address the same way, with an obfuscated user."
        ),
        responses={
            200: ResponseSpec(
                data_container=RegisterResponse,
                description="The new user, with a session unless email confirmation is required",
                generate_examples=False,
                examples=[
                    Example(
                        summary="Email confirmation required",
                        value={"user": AUTH_UNCONFIRMED_USER_EXAMPLE, "session": None},
                    ),
                    Example(
                        summary="Auto-confirmed", value={"user": AUTH_USER_EXAMPLE, "session": AUTH_SESSION_EXAMPLE}
                    ),
                ],
            ),
            400: problem_spec(
                "Invalid request body, an email Supabase rejects, or a captcha token it refused (captcha_failed)",
                400,
                "email_address_invalid",
                'Email address "ada@example" is invalid',
            ),
            422: problem_spec(
                "User exists, weak password or sign-ups disabled", 422, "user_already_exists", "User already registered"
            ),
            **COMMON_ERRORS,
        },
    )
    async def register(
        self,
        data: Annotated[
            RegisterRequest,
            body_example(
                "With metadata",
                {"email": "ada@example.com", "password": "correct horse battery staple", "data": {"full_name": "Ada"}},
            ),
        ],
        request: Request[Any, Any, Any],
        passthrough: NamedDependency[AuthPassthrough],
        http: NamedDependency[httpx.AsyncClient],
    ) -> RegisterResponse:
        client = client_of(request, passthrough)
        await passthrough.admit("register", client, data.email)
        gotrue = passthrough.gotrue(http, client)
        options: SignUpWithEmailAndPasswordCredentialsOptions = {"data": data.data or {}}
        if data.captcha_token is not None:
            options["captcha_token"] = data.captcha_token  # sent as gotrue_meta_security.captcha_token
        result = await call(
            "sign-up",
            gotrue.sign_up({"email": data.email, "password": data.password, "options": options}),
            passthrough.key_variable,
        )
        if result.session is None:
            # Email confirmation on: GoTrue's body is the user itself.
            return RegisterResponse(user=decode("sign-up", gotrue.raw_body, dict[str, Any]), session=None)
        session = session_of("sign-up", gotrue.raw_body, result.session.expires_at)
        return RegisterResponse(user=session.user, session=session)

    @post(
        "/login",
        status_code=200,
        summary="Log in with email and password (Supabase Auth)",
        description="Forwards to Supabase Auth's `POST /auth/v1/token?grant_type=password`; returns its session.",
        responses={
            200: ok(AuthSession, "Session", AUTH_SESSION_EXAMPLE, "Supabase's session"),
            400: problem_spec(
                "Wrong email or password, email not confirmed, or a captcha token Supabase refused (captcha_failed)",
                400,
                "invalid_credentials",
                "Invalid login credentials",
            ),
            **COMMON_ERRORS,
        },
    )
    async def login(
        self,
        data: Annotated[
            LoginRequest,
            body_example(
                "Email and password", {"email": "ada@example.com", "password": "correct horse battery staple"}
            ),
        ],
        request: Request[Any, Any, Any],
        passthrough: NamedDependency[AuthPassthrough],
        http: NamedDependency[httpx.AsyncClient],
    ) -> AuthSession:
        client = client_of(request, passthrough)
        await passthrough.admit("login", client, data.email)
        gotrue = passthrough.gotrue(http, client)
        credentials: SignInWithEmailAndPasswordCredentials = {"email": data.email, "password": data.password}
        if data.captcha_token is not None:
            credentials["options"] = {"captcha_token": data.captcha_token}  # gotrue_meta_security.captcha_token
        result = await call("login", gotrue.sign_in_with_password(credentials), passthrough.key_variable)
        if result.session is None:  # GoTrue always returns a session for a password grant
            raise ProblemError(502, "Supabase Auth answered the login without a session")
        return session_of("login", gotrue.raw_body, result.session.expires_at)

    @post(
        "/refresh",
        status_code=200,
        summary="Exchange a refresh token for a new session (Supabase Auth)",
        description=(
            "Forwards to Supabase Auth's `POST /auth/v1/token?grant_type=refresh_token`. Refresh tokens are "
            "single-use: keep the new one."
        ),
        responses={
            200: ok(AuthSession, "Session", AUTH_SESSION_EXAMPLE, "Supabase's new session"),
            400: problem_spec(
                "Unknown, revoked or already used refresh token",
                400,
                "refresh_token_not_found",
                "Invalid Refresh Token: Refresh Token Not Found",
            ),
            **COMMON_ERRORS,
        },
    )
    async def refresh(
        self,
        data: Annotated[RefreshRequest, body_example("Refresh token", {"refresh_token": "v2ns4xb6jzqa"})],
        request: Request[Any, Any, Any],
        passthrough: NamedDependency[AuthPassthrough],
        http: NamedDependency[httpx.AsyncClient],
    ) -> AuthSession:
        client = client_of(request, passthrough)
        await passthrough.admit("refresh", client)
        gotrue = passthrough.gotrue(http, client)
        result = await call("refresh", gotrue.refresh_session(data.refresh_token), passthrough.key_variable)
        if result.session is None:  # refresh_session raises rather than return no session
            raise ProblemError(502, "Supabase Auth answered the refresh without a session")
        return session_of("refresh", gotrue.raw_body, result.session.expires_at)
