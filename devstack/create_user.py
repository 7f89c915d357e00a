"""Create a local user the way Supabase Auth does (or reuse one), wait until their agent is ready, and print an
access token for them.

    .venv/bin/python -m devstack.create_user --email ann@example.com --name Ann [--password 'correct horse']

Needs a running `make dev` stack. The token is signed with the stack's local ES256 key, whose JWKS the service
trusts, and carries GoTrue's claims. An address that already exists is the same user again (like signing in): its
token is printed. By default the command returns once the agent is `active`, so the README's quick start works when
pasted as one block (`--no-wait` prints at once). With ``--password`` the user can also sign in on the web client
(the GoTrue double checks it); it sets an existing user's password too, as GoTrue's admin API can.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

import asyncpg

from devstack.gotrue import MIN_PASSWORD_LENGTH, hash_password, sign_up
from devstack.keys import SigningKey
from devstack.stack import DEVSTACK


async def user_for(
    database_url: str, email: str, metadata: dict[str, Any], password: str | None = None
) -> tuple[uuid.UUID, bool]:
    """The user with this address, signed up if new: (id, created). A ``password`` becomes theirs, new or not."""
    conn = await asyncpg.connect(database_url)
    try:
        existing = await conn.fetchval("select id from auth.users where lower(email) = lower($1)", email)
        if existing is not None and password is not None:
            await conn.execute(
                "update auth.users set encrypted_password = $2, updated_at = now() where id = $1",
                existing,
                hash_password(password),
            )
    finally:
        await conn.close()
    if existing is not None:
        return existing, False
    return await sign_up(database_url, email, metadata, password=password), True


async def wait_active(database_url: str, user_id: uuid.UUID, seconds: float) -> str:
    """The agent's status once it is `active` (or failed, or ``seconds`` have passed)."""
    deadline = time.monotonic() + seconds
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            status = await conn.fetchval("select agent_status from public.user_profiles where id = $1", user_id)
            if status in ("active", "failed") or time.monotonic() > deadline:
                return str(status)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--email", required=True)
    parser.add_argument("--name", help="stored as full_name in the signup metadata")
    parser.add_argument("--password", help="to sign in on the web client too")
    parser.add_argument("--stack", default="dev", help="which local stack (default: dev)")
    parser.add_argument("--expires-in", type=int, default=3600)
    parser.add_argument("--no-wait", action="store_true", help="print the token without waiting for the agent")
    parser.add_argument("--timeout", type=float, default=60.0, help="how long to wait for the agent (seconds)")
    args = parser.parse_args()
    if args.password is not None and len(args.password) < MIN_PASSWORD_LENGTH:
        sys.exit(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    state_dir = DEVSTACK / "run" / args.stack
    stack_file = state_dir / "stack.json"
    if not stack_file.exists():
        sys.exit(f"no running '{args.stack}' stack ({stack_file} is missing): start it with `make dev`")
    info = json.loads(stack_file.read_text())
    metadata = {"full_name": args.name} if args.name else {}
    user_id, created = asyncio.run(user_for(info["database_url"], args.email, metadata, args.password))
    print(f"{'created' if created else 'reusing'} user {user_id} <{args.email}>", file=sys.stderr)
    if not args.no_wait:
        status = asyncio.run(wait_active(info["database_url"], user_id, args.timeout))
        if status != "active":
            sys.exit(f"the agent of {user_id} is '{status}' after {args.timeout:.0f} s: see the service's log")
        print("agent active", file=sys.stderr)
    key = SigningKey.load_or_create(state_dir / "auth-signing-key.pem")
    token = key.access_token(
        user_id, issuer=info["issuer"], email=args.email, user_metadata=metadata, expires_in=args.expires_in
    )
    print(token)


if __name__ == "__main__":
    main()
