"""Admin access and the service role over HTTP, and a JWKS that cannot be fetched (503, never 500).

Admins: ``Authorization: Bearer <ADMIN_API_KEY>`` or a user whose token says ``app_metadata.role = "admin"``.
The Supabase service key and ``service_role`` tokens are refused (403 ``service_role_refused``) unless
``SERVICE_ROLE_IS_ADMIN=true``, where they are admins as before. The admin route is ``POST /api/v1/user/budget``:
a user id that does not exist answers 404 once the caller passed the admin check, 403 ``admin_only`` before."""

from __future__ import annotations

import uuid

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from devstack.gotrue import sign_up
from devstack.keys import SigningKey
from tests.integration.support import ISSUER, SERVICE_KEY, UNREACHABLE, app_client, assert_problem

pytestmark = pytest.mark.integration

ADMIN_KEY = "test-admin-api-key-0123456789abcdef"
BUDGET = "/api/v1/user/budget"


@pytest.fixture
def service_env() -> dict[str, str]:
    return {"ADMIN_API_KEY": ADMIN_KEY}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def change(user_id: uuid.UUID | None = None) -> dict[str, object]:
    return {"user_id": str(user_id or uuid.uuid4()), "max_budget": 25.0}


async def test_the_admin_api_key_passes_the_admin_check_and_has_no_user_routes(
    client: AsyncTestClient[Litestar],
) -> None:
    assert_problem(await client.post(BUDGET, headers=bearer(ADMIN_KEY), json=change()), 404)
    me = await client.get("/api/v1/auth/me", headers=bearer(ADMIN_KEY))
    assert me.status_code == 200 and me.json()["role"] == "admin" and me.json()["user_id"] is None
    for path in ("/api/v1/user/profile", "/api/v1/chat/history", "/api/v1/agent/status"):
        assert assert_problem(await client.get(path, headers=bearer(ADMIN_KEY)), 403)["code"] == "not_a_user"


async def test_users_are_admins_by_app_metadata_never_by_user_metadata(
    client: AsyncTestClient[Litestar], database_url: str, signing_key: SigningKey
) -> None:
    user_id = await sign_up(database_url, "adm@example.com")
    as_admin = signing_key.access_token(user_id, issuer=ISSUER, app_metadata={"provider": "email", "role": "admin"})
    assert_problem(await client.post(BUDGET, headers=bearer(as_admin), json=change()), 404)
    for token in (
        signing_key.access_token(user_id, issuer=ISSUER),
        signing_key.access_token(user_id, issuer=ISSUER, user_metadata={"role": "admin"}),
    ):
        body = assert_problem(await client.post(BUDGET, headers=bearer(token), json=change(user_id)), 403)
        assert body["code"] == "admin_only" and "ADMIN_API_KEY" in body["detail"]


async def test_the_service_role_is_refused_by_default(
    client: AsyncTestClient[Litestar], signing_key: SigningKey
) -> None:
    service_token = signing_key.access_token(uuid.uuid4(), issuer=ISSUER, role="service_role")
    for token in (SERVICE_KEY, service_token):
        for method, path in (("POST", BUDGET), ("GET", "/api/v1/auth/me"), ("GET", "/api/v1/chat/history")):
            response = await client.request(method, path, headers=bearer(token), json=change())
            assert assert_problem(response, 403)["code"] == "service_role_refused", (method, path)


async def test_service_role_is_admin_keeps_the_old_rule_for_compatibility(
    database_url: str, signing_key: SigningKey
) -> None:
    service_token = signing_key.access_token(uuid.uuid4(), issuer=ISSUER, role="service_role")
    async with app_client(database_url, signing_key, SERVICE_ROLE_IS_ADMIN="true") as client:
        for token in (SERVICE_KEY, service_token):
            assert_problem(await client.post(BUDGET, headers=bearer(token), json=change()), 404)
            # Still nothing on user routes.
            body = assert_problem(await client.get("/api/v1/chat/history", headers=bearer(token)), 403)
            assert body["code"] == "not_a_user"
        # No ADMIN_API_KEY here: a would-be key is just a malformed token.
        assert_problem(await client.post(BUDGET, headers=bearer(ADMIN_KEY), json=change()), 401)


async def test_an_unreachable_jwks_is_a_503_with_retry_after_never_a_500(database_url: str) -> None:
    key = SigningKey.generate()
    async with app_client(database_url, None, SUPABASE_URL=UNREACHABLE) as client:
        token = key.access_token(uuid.uuid4(), issuer=f"{UNREACHABLE}/auth/v1")
        response = await client.get("/api/v1/auth/me", headers=bearer(token))
        body = assert_problem(response, 503)
        assert body["code"] == "jwks_unavailable"
        assert int(response.headers["retry-after"]) >= 1 and body["retry_after"] >= 1
        # A token the service can reject without keys is still a 401.
        assert_problem(await client.get("/api/v1/auth/me", headers=bearer("garbage")), 401)
