"""Test double for Supabase's API gateway: one origin (``SUPABASE_URL``) in front of the GoTrue and PostgREST doubles,
routed by path as the gateway routes a project's API: ``/auth/v1/...`` to Auth (the GoTrue double serves those paths
whole) and ``/rest/v1/...`` to the Data API without the prefix (PostgREST serves ``/<table>`` and
``/rpc/<function>``). supabase-js builds both from the one URL.

On ``/rest/v1`` it does what the gateway does with API keys, which supabase-js sends in ``apikey`` with every
request: none is a 401 (``No API key found in request``), an unknown one too (``Invalid API key``), both in the
gateway's body. With the publishable key and no user token (no ``Authorization``, or the key itself in it, which
supabase-js sends while signed out) the request reaches PostgREST without a token, so it runs as ``anon``; a user's
access token is passed on for PostgREST to verify. CORS preflights (browsers send no key with them) get PostgREST's
CORS answer, and the gateway's own refusals carry CORS headers so a browser can read them. ``/auth/v1`` is passed
on untouched (no key checked there).

Run: ``python -m devstack.doubles.api_gateway --port 54321 --db-url ... --service-key ... --signing-key ...
--issuer ... --publishable-key ...``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import uvicorn

from devstack.doubles import gotrue_double, postgrest_double
from devstack.doubles.postgrest_double import Receive, Scope, Send
from devstack.keys import SigningKey

REST_PREFIX = "/rest/v1"


class Gateway:
    def __init__(self, auth: Any, rest: postgrest_double.PostgrestDouble, publishable_keys: list[str]) -> None:
        self.auth, self.rest, self.publishable_keys = auth, rest, set(publishable_keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            try:
                await self.auth(scope, receive, send)
            finally:
                await self.rest.close()
            return
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == REST_PREFIX or path.startswith(REST_PREFIX + "/")):
            await self.auth(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rest_scope = {**scope, "path": path.removeprefix(REST_PREFIX) or "/", "root_path": REST_PREFIX}
        if scope["method"] == "OPTIONS":
            await self.rest(rest_scope, receive, send)
            return
        key = headers.get("apikey")
        if not key:
            await self.refuse(
                send, headers, "No API key found in request", "No `apikey` request header or url param was found."
            )
            return
        if key not in self.publishable_keys:
            await self.refuse(
                send, headers, "Invalid API key", "Double check your Supabase `anon` or `service_role` API key."
            )
            return
        if postgrest_double.bearer_token(headers) in (None, key):
            raw = [(k, v) for k, v in scope["headers"] if k.lower() != b"authorization"]
            rest_scope["headers"] = raw
        await self.rest(rest_scope, receive, send)

    @staticmethod
    async def refuse(send: Send, headers: dict[str, str], message: str, hint: str) -> None:
        body = json.dumps({"message": message, "hint": hint}).encode()
        cors = postgrest_double.cors_headers(headers)
        await postgrest_double.respond(send, 401, body, [("Content-Type", "application/json"), *cors])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=54321)
    parser.add_argument("--db-url", required=True, help="the database, as a superuser (GoTrue's writes)")
    parser.add_argument("--service-key", required=True)
    parser.add_argument("--signing-key", type=Path, required=True, help="the local stack's ES256 key (PEM)")
    parser.add_argument("--issuer", required=True, help="the access tokens' iss: <SUPABASE_URL>/auth/v1")
    parser.add_argument("--publishable-key", action="append", required=True, help="an accepted apikey (repeatable)")
    parser.add_argument("--jwt-secret", help="a legacy HS256 secret PostgREST also accepts tokens signed with")
    args = parser.parse_args()
    signing_key = SigningKey.load_or_create(args.signing_key)
    auth = gotrue_double.create_app(args.db_url, args.service_key, signing_key, args.issuer)
    rest_url = postgrest_double.authenticator_url(args.db_url)
    rest = postgrest_double.create_app(rest_url, signing_key.jwks(), args.jwt_secret)
    gateway = Gateway(auth, rest, args.publishable_key)
    uvicorn.run(gateway, host=args.host, port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
