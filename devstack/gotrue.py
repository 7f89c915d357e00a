"""Stand-in for how Supabase Auth (GoTrue) writes a signup and a deletion into ``auth.users``.

GoTrue cannot run here. It creates a user in one transaction: INSERT with ``role = ''``,
``aud = 'authenticated'``, empty-string token columns and the signup's ``options.data`` as
``raw_user_meta_data``, then UPDATE ``role = 'authenticated'``. Our triggers see exactly that.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from typing import Any

import asyncpg

_INSERT = """
insert into auth.users (
    instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
    confirmation_token, recovery_token, email_change_token_new, email_change,
    raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at, is_anonymous
) values (
    '00000000-0000-0000-0000-000000000000', $1, 'authenticated', '', $2,
    $5, now(), '', '', '', '', $3::jsonb, $4::jsonb, false, now(), now(), false
)
"""
# A user signed up without a password (the tests, `create_user`) cannot sign in with one.
_NO_PASSWORD = "$2a$10$abcdefghijklmnopqrstuuUl5W6yQ5m3J9rG0vS0k2c7fM5rFqYqS"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD_LENGTH = 6  # GoTrue's default (GOTRUE_PASSWORD_MIN_LENGTH)


def hash_password(password: str) -> str:
    """GoTrue stores bcrypt; no bcrypt is installed here, so the local stack stores scrypt (stdlib) instead."""
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"$scrypt${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def password_matches(password: str, stored: str | None) -> bool:
    parts = (stored or "").split("$")
    if len(parts) != 4 or parts[1] != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=base64.b64decode(parts[2]), **_SCRYPT)
    return hmac.compare_digest(digest, base64.b64decode(parts[3]))


async def sign_up(
    database_url: str,
    email: str,
    metadata: dict[str, Any] | None = None,
    user_id: uuid.UUID | None = None,
    password: str | None = None,
) -> uuid.UUID:
    user_id = user_id or uuid.uuid4()
    encrypted_password = hash_password(password) if password is not None else _NO_PASSWORD
    app_metadata = {"provider": "email", "providers": ["email"]}
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(
                _INSERT, user_id, email, json.dumps(app_metadata), json.dumps(metadata or {}), encrypted_password
            )
            await conn.execute("update auth.users set role = 'authenticated' where id = $1", user_id)
    finally:
        await conn.close()
    return user_id


async def delete_user(database_url: str, user_id: uuid.UUID) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("delete from auth.users where id = $1", user_id)
    finally:
        await conn.close()
