"""Stand-in for how Supabase Auth (GoTrue) writes a signup and a deletion into ``auth.users``.

GoTrue cannot run here. It creates a user in one transaction: INSERT with ``role = ''``,
``aud = 'authenticated'``, empty-string token columns and the signup's ``options.data`` as
``raw_user_meta_data``, then UPDATE ``role = 'authenticated'``. Our triggers see exactly that.
"""

from __future__ import annotations

import json
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
    '$2a$10$abcdefghijklmnopqrstuuUl5W6yQ5m3J9rG0vS0k2c7fM5rFqYqS', now(),
    '', '', '', '', $3::jsonb, $4::jsonb, false, now(), now(), false
)
"""


async def sign_up(
    database_url: str, email: str, metadata: dict[str, Any] | None = None, user_id: uuid.UUID | None = None
) -> uuid.UUID:
    user_id = user_id or uuid.uuid4()
    app_metadata = {"provider": "email", "providers": ["email"]}
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(_INSERT, user_id, email, json.dumps(app_metadata), json.dumps(metadata or {}))
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
