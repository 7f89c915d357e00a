"""Create a local user the way Supabase Auth does and print an access token for it.

    .venv/bin/python -m devstack.create_user --email ann@example.com --name Ann

Needs a running `make dev` stack. The token is signed with the stack's local ES256 key, whose JWKS the
service trusts, and carries GoTrue's claims.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from devstack.gotrue import sign_up
from devstack.keys import SigningKey
from devstack.stack import DEVSTACK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--email", required=True)
    parser.add_argument("--name", help="stored as full_name in the signup metadata")
    parser.add_argument("--stack", default="dev", help="which local stack (default: dev)")
    parser.add_argument("--expires-in", type=int, default=3600)
    args = parser.parse_args()
    state_dir = DEVSTACK / "run" / args.stack
    info = json.loads((state_dir / "stack.json").read_text())
    metadata = {"full_name": args.name} if args.name else {}
    user_id = asyncio.run(sign_up(info["database_url"], args.email, metadata))
    key = SigningKey.load_or_create(state_dir / "auth-signing-key.pem")
    token = key.access_token(
        user_id, issuer=info["issuer"], email=args.email, user_metadata=metadata, expires_in=args.expires_in
    )
    print(f"created user {user_id} <{args.email}>", file=sys.stderr)
    print(token)


if __name__ == "__main__":
    main()
