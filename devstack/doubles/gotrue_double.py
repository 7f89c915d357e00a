"""Test double for Supabase Auth (GoTrue), which cannot run here.

It serves only what the service calls on Supabase Auth, with GoTrue's shapes:
- ``GET /auth/v1/.well-known/jwks.json``: the project's public signing keys (the local stack's ES256 key),
  so the service verifies tokens exactly as against a real project (fetch, cache, refresh on unknown kid);
- ``DELETE /auth/v1/admin/users/{id}``: the admin API's hard delete (service key required), which, like
  GoTrue, deletes the ``auth.users`` row — our cascade and delete trigger then run for real;
- ``GET /auth/v1/health``;
- what supabase-js calls to sign a local user in (the reference web client, examples/web), so a browser signs in
  locally with the same code as against a real project: ``POST /auth/v1/signup`` (email confirmation off, so it
  answers with a session), ``POST /auth/v1/token?grant_type=password|refresh_token``, ``GET /auth/v1/user`` and
  ``POST /auth/v1/logout``, with GoTrue's session and user shapes and access tokens signed with the local key.
  Refresh tokens live in this process only (a restart signs everyone out). Passwords are checked (hashed with
  scrypt here, see devstack/gotrue.py). Browsers may call it from any origin, as they may call Supabase Auth.
Sign-ups are written where GoTrue writes them, in the database (devstack/gotrue.py).

It runs behind the API gateway double, with the PostgREST double, on one origin: devstack/doubles/api_gateway.py.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
import uuid
from typing import Any

import asyncpg
import jwt
from litestar import Litestar, Request, Response, delete, get, post
from litestar.config.cors import CORSConfig
from litestar.params import FromQuery, JSONBody

from devstack.gotrue import MIN_PASSWORD_LENGTH, password_matches, sign_up
from devstack.keys import SigningKey

ACCESS_TOKEN_SECONDS = 3600
_USER_COLUMNS = (
    "id, aud, role, email, email_confirmed_at, last_sign_in_at, raw_app_meta_data, raw_user_meta_data, "
    "created_at, updated_at, is_anonymous"
)


def _error(status: int, error_code: str, msg: str) -> Response[Any]:
    # GoTrue's error body (internal/api/errors.go: HTTPError).
    return Response({"code": status, "error_code": error_code, "msg": msg}, status_code=status)


def _user(row: Any) -> dict[str, Any]:
    """GoTrue's user object (models/user.go), as supabase-js reads it."""
    iso = {name: row[name].isoformat() if row[name] else None for name in ("email_confirmed_at", "created_at")}
    return {
        "id": str(row["id"]),
        "aud": row["aud"],
        "role": row["role"],
        "email": row["email"],
        "email_confirmed_at": iso["email_confirmed_at"],
        "phone": "",
        "confirmed_at": iso["email_confirmed_at"],
        "last_sign_in_at": row["last_sign_in_at"].isoformat() if row["last_sign_in_at"] else None,
        "app_metadata": json.loads(row["raw_app_meta_data"] or "{}"),
        "user_metadata": json.loads(row["raw_user_meta_data"] or "{}"),
        "identities": [],
        "created_at": iso["created_at"],
        "updated_at": row["updated_at"].isoformat(),
        "is_anonymous": row["is_anonymous"],
    }


def create_app(db_url: str, service_key: str, signing_key: SigningKey, issuer: str) -> Litestar:
    refresh_tokens: dict[str, uuid.UUID] = {}  # refresh token -> user id

    async def fetch_user(where: str, arg: Any) -> Any:
        conn = await asyncpg.connect(db_url)
        try:
            return await conn.fetchrow(f"select {_USER_COLUMNS}, encrypted_password from auth.users where {where}", arg)
        finally:
            await conn.close()

    async def session(row: Any) -> dict[str, Any]:
        """GoTrue's session (AccessTokenResponse): a signed access token, a new refresh token, and the user."""
        conn = await asyncpg.connect(db_url)
        try:
            row = await conn.fetchrow(
                f"update auth.users set last_sign_in_at = now() where id = $1 returning {_USER_COLUMNS}", row["id"]
            )
        finally:
            await conn.close()
        user = _user(row)
        refresh = secrets.token_urlsafe(24)
        refresh_tokens[refresh] = row["id"]
        access = signing_key.access_token(
            row["id"],
            issuer=issuer,
            email=row["email"],
            app_metadata=user["app_metadata"],
            user_metadata=user["user_metadata"],
            expires_in=ACCESS_TOKEN_SECONDS,
        )
        expires_at = int(time.time()) + ACCESS_TOKEN_SECONDS
        return {
            "access_token": access,
            "token_type": "bearer",
            "expires_in": ACCESS_TOKEN_SECONDS,
            "expires_at": expires_at,
            "refresh_token": refresh,
            "user": user,
        }

    @get("/auth/v1/.well-known/jwks.json")
    async def jwks_document() -> dict[str, Any]:
        return signing_key.jwks()

    @post("/auth/v1/signup", status_code=200)
    async def signup(data: JSONBody[dict[str, Any]]) -> Response[Any]:
        # GoTrue stores addresses in lower case.
        email, password = str(data.get("email") or "").strip().lower(), str(data.get("password") or "")
        if "@" not in email:
            return _error(400, "validation_failed", "Unable to validate email address: invalid format")
        if len(password) < MIN_PASSWORD_LENGTH:
            return _error(422, "weak_password", "Password should be at least 6 characters.")
        if await fetch_user("lower(email) = lower($1)", email) is not None:
            return _error(422, "user_already_exists", "User already registered")
        user_id = await sign_up(db_url, email, data.get("data") or {}, password=password)
        return Response(await session(await fetch_user("id = $1", user_id)))

    @post("/auth/v1/token", status_code=200)
    async def token(grant_type: FromQuery[str], data: JSONBody[dict[str, Any]]) -> Response[Any]:
        if grant_type == "password":
            row = await fetch_user("lower(email) = lower($1)", str(data.get("email") or ""))
            if row is None or not password_matches(str(data.get("password") or ""), row["encrypted_password"]):
                return _error(400, "invalid_credentials", "Invalid login credentials")
            return Response(await session(row))
        if grant_type == "refresh_token":
            user_id = refresh_tokens.pop(str(data.get("refresh_token") or ""), None)
            row = await fetch_user("id = $1", user_id) if user_id else None
            if row is None:
                return _error(400, "refresh_token_not_found", "Invalid Refresh Token: Refresh Token Not Found")
            return Response(await session(row))
        return _error(400, "unsupported_grant_type", "unsupported_grant_type")

    def bearer_user(request: Request[Any, Any, Any]) -> uuid.UUID | None:
        raw = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        try:
            claims = jwt.decode(
                raw, signing_key.private_key.public_key(), algorithms=["ES256"], audience="authenticated"
            )
            return uuid.UUID(claims["sub"])
        except (jwt.PyJWTError, KeyError, ValueError):
            return None

    @get("/auth/v1/user")
    async def current_user(request: Request[Any, Any, Any]) -> Response[Any]:
        user_id = bearer_user(request)
        row = await fetch_user("id = $1", user_id) if user_id else None
        if row is None:
            return _error(403, "bad_jwt", "invalid JWT: unable to parse or verify signature")
        return Response(_user(row))

    @post("/auth/v1/logout", status_code=204)
    async def logout(request: Request[Any, Any, Any]) -> None:
        user_id = bearer_user(request)
        for refresh in [token for token, owner in refresh_tokens.items() if owner == user_id]:
            del refresh_tokens[refresh]

    @get("/auth/v1/health")
    async def health() -> dict[str, str]:
        return {"version": "gotrue-double", "name": "GoTrue", "description": "test double of Supabase Auth"}

    @delete("/auth/v1/admin/users/{user_id:str}", status_code=200)
    async def delete_user(request: Request[Any, Any, Any], user_id: str) -> Response[Any]:
        supplied = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not supplied or not hmac.compare_digest(supplied.encode(), service_key.encode()):
            return _error(401, "no_authorization", "This endpoint requires a valid service role key")
        try:
            uid = uuid.UUID(user_id)
        except ValueError:
            return _error(400, "validation_failed", "user_id must be an UUID")
        conn = await asyncpg.connect(db_url)
        try:
            deleted = await conn.fetchval("delete from auth.users where id = $1 returning id", uid)
        finally:
            await conn.close()
        if deleted is None:
            return _error(404, "user_not_found", "User not found")
        return Response({}, status_code=200)

    return Litestar(
        route_handlers=[jwks_document, health, delete_user, signup, token, current_user, logout],
        cors_config=CORSConfig(allow_origins=["*"], allow_headers=["*"]),
        logging_config=None,
    )
