"""The GoTrue double's sign-in routes, which supabase-js calls in the web client: GoTrue's shapes and refusals, users
written the way GoTrue writes them, access tokens the service accepts."""

from __future__ import annotations

import pytest
from litestar.testing import AsyncTestClient

from devstack.doubles.gotrue_double import create_app
from devstack.keys import SigningKey
from tests.integration.support import ISSUER, SERVICE_KEY, app_client

pytestmark = pytest.mark.integration


async def test_sign_up_sign_in_refresh_and_sign_out(database_url: str, signing_key: SigningKey) -> None:
    auth = AsyncTestClient(create_app(database_url, SERVICE_KEY, signing_key, ISSUER))
    async with auth, app_client(database_url, signing_key) as service:
        body = {"email": "Ann@Example.com", "password": "hunter22", "data": {"full_name": "Ann"}}
        signed_up = (await auth.post("/auth/v1/signup", json=body)).json()
        assert signed_up["token_type"] == "bearer" and signed_up["user"]["user_metadata"] == {"full_name": "Ann"}
        again = await auth.post("/auth/v1/signup", json=body)
        assert again.status_code == 422 and again.json()["error_code"] == "user_already_exists"

        wrong = await auth.post("/auth/v1/token?grant_type=password", json={"email": body["email"], "password": "x"})
        assert wrong.status_code == 400 and wrong.json()["error_code"] == "invalid_credentials"
        login = {"email": "ann@example.com", "password": "hunter22"}
        session = (await auth.post("/auth/v1/token?grant_type=password", json=login)).json()
        assert session["user"]["id"] == signed_up["user"]["id"]

        # The access token is one the service accepts, for this user.
        me = await service.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {session['access_token']}"})
        assert me.status_code == 200 and me.json()["user_id"] == session["user"]["id"]
        user = await auth.get("/auth/v1/user", headers={"Authorization": f"Bearer {session['access_token']}"})
        assert user.json()["email"] == "ann@example.com"

        # A refresh token is used once; signing out ends the others.
        refreshed = await auth.post("/auth/v1/token?grant_type=refresh_token", json=session)
        assert refreshed.status_code == 200
        reused = await auth.post("/auth/v1/token?grant_type=refresh_token", json=session)
        assert reused.status_code == 400 and reused.json()["error_code"] == "refresh_token_not_found"
        token = refreshed.json()["access_token"]
        assert (await auth.post("/auth/v1/logout", headers={"Authorization": f"Bearer {token}"})).status_code == 204
        after = await auth.post("/auth/v1/token?grant_type=refresh_token", json=refreshed.json())
        assert after.status_code == 400
