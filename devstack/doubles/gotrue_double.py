"""Test double for Supabase Auth (GoTrue), which cannot run here.

It serves only what the service calls on Supabase Auth, with GoTrue's shapes:
- ``GET /auth/v1/.well-known/jwks.json``: the project's public signing keys (the local stack's ES256 key),
  so the service verifies tokens exactly as against a real project (fetch, cache, refresh on unknown kid);
- ``DELETE /auth/v1/admin/users/{id}``: the admin API's hard delete (service key required), which, like
  GoTrue, deletes the ``auth.users`` row — our cascade and delete trigger then run for real;
- ``GET /auth/v1/health``.
Sign-up itself is simulated where GoTrue writes it, in the database (devstack/gotrue.py).

Run: ``python -m devstack.doubles.gotrue_double --port 54321 --db-url ... --service-key ... --jwks-file ...``
"""

from __future__ import annotations

import argparse
import hmac
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import uvicorn
from litestar import Litestar, Request, Response, delete, get


def _error(status: int, error_code: str, msg: str) -> Response[Any]:
    # GoTrue's error body (internal/api/errors.go: HTTPError).
    return Response({"code": status, "error_code": error_code, "msg": msg}, status_code=status)


def create_app(db_url: str, service_key: str, jwks: dict[str, Any]) -> Litestar:
    @get("/auth/v1/.well-known/jwks.json")
    async def jwks_document() -> dict[str, Any]:
        return jwks

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

    return Litestar(route_handlers=[jwks_document, health, delete_user], logging_config=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=54321)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--service-key", required=True)
    parser.add_argument("--jwks-file", type=Path, required=True)
    args = parser.parse_args()
    app = create_app(args.db_url, args.service_key, json.loads(args.jwks_file.read_text()))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
