"""``devstack.create_user --password``: a user made from the command line signs in on the web client (the GoTrue
double's password grant), and a later run changes the password."""

from __future__ import annotations

import uuid

import pytest
from litestar.testing import AsyncTestClient

from devstack.create_user import user_for
from devstack.doubles.gotrue_double import create_app
from devstack.keys import SigningKey
from tests.integration.support import ISSUER, SERVICE_KEY

pytestmark = pytest.mark.integration


async def test_a_password_lets_the_user_sign_in_and_a_later_run_changes_it(
    database_url: str, signing_key: SigningKey
) -> None:
    async with AsyncTestClient(create_app(database_url, SERVICE_KEY, signing_key, ISSUER)) as auth:

        async def sign_in(email: str, password: str) -> int:
            body = {"email": email, "password": password}
            response = await auth.post("/auth/v1/token?grant_type=password", json=body)
            if response.status_code == 200:
                assert response.json()["user"]["email"] == email
            return response.status_code

        # Without a password (the quick start's user), nothing signs in.
        plain = f"{uuid.uuid4().hex[:10]}@example.com"
        user_id, created = await user_for(database_url, plain, {"full_name": "Ann"})
        assert created
        assert await sign_in(plain, "anything") == 400
        # A later run with --password gives the same user one.
        assert await user_for(database_url, plain, {}, password="first secret") == (user_id, False)
        assert await sign_in(plain, "first secret") == 200

        # A new user with a password, then another password: only the newest works.
        email = f"{uuid.uuid4().hex[:10]}@example.com"
        other_id, created = await user_for(database_url, email, {}, password="correct horse")
        assert created and other_id != user_id
        assert await sign_in(email, "correct horse") == 200
        await user_for(database_url, email, {}, password="battery staple")
        assert await sign_in(email, "correct horse") == 400
        assert await sign_in(email, "battery staple") == 200
