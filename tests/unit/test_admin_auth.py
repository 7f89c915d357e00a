"""Who is an admin (service/auth/middleware.py ``authenticate_token``, ``Principal.is_admin``).

The rule: ``Authorization: Bearer <ADMIN_API_KEY>``, or a user whose verified token says
``app_metadata.role = "admin"``. The service role (the Supabase service key, a ``service_role`` token) is an
admin only when ``SERVICE_ROLE_IS_ADMIN`` allows it; otherwise the HTTP edge refuses it (tests/integration/
test_admin_access.py)."""

from __future__ import annotations

import uuid

import httpx
import pytest
from litestar.exceptions import NotAuthorizedException

from devstack.keys import SigningKey
from service.auth.middleware import authenticate_token, same_secret
from service.auth.tokens import Principal, TokenVerifier

ISSUER = "https://project.supabase.co/auth/v1"
USER = uuid.UUID("6f1c2d9e-1b7a-4c1e-9a55-0d4b5a3b2c10")
ADMIN_KEY = "admin-api-key-0123456789abcdef-0123"
SERVICE_KEY = "service-role-key-0123456789abcdef"


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def verifier(http: httpx.AsyncClient, key: SigningKey) -> TokenVerifier:
    return TokenVerifier(
        audience="authenticated", issuer=ISSUER, jwks_url=None, jwks=key.jwks(), hs256_secret=None, http=http
    )


async def resolve(verifier: TokenVerifier, token: str, *, service_role_is_admin: bool = False) -> Principal:
    return await authenticate_token(
        token, verifier, SERVICE_KEY, admin_key=ADMIN_KEY, service_role_is_admin=service_role_is_admin
    )


async def test_the_admin_api_key_is_an_admin_without_a_user(verifier: TokenVerifier) -> None:
    principal = await resolve(verifier, ADMIN_KEY)
    assert principal.is_admin and principal.role == "admin" and principal.user_id is None
    assert not principal.is_service_role


@pytest.mark.parametrize(
    "near_miss",
    [ADMIN_KEY[:-1], ADMIN_KEY + "x", ADMIN_KEY.upper(), f" {ADMIN_KEY}", ""],
)
async def test_anything_but_the_exact_admin_key_must_verify_as_a_token(verifier: TokenVerifier, near_miss: str) -> None:
    with pytest.raises(NotAuthorizedException):
        await resolve(verifier, near_miss)


async def test_without_an_admin_key_configured_nothing_is_the_admin_key(verifier: TokenVerifier) -> None:
    with pytest.raises(NotAuthorizedException):
        await authenticate_token(ADMIN_KEY, verifier, None, admin_key=None)
    with pytest.raises(NotAuthorizedException):
        await authenticate_token("", verifier, None, admin_key="")


@pytest.mark.parametrize("allowed", [False, True])
async def test_the_service_key_is_the_service_role_an_admin_only_where_allowed(
    verifier: TokenVerifier, allowed: bool
) -> None:
    principal = await resolve(verifier, SERVICE_KEY, service_role_is_admin=allowed)
    assert principal.is_service_role and principal.user_id is None
    assert principal.is_admin is allowed


@pytest.mark.parametrize("allowed", [False, True])
async def test_a_service_role_token_is_an_admin_only_where_allowed(
    verifier: TokenVerifier, key: SigningKey, allowed: bool
) -> None:
    token = key.access_token(USER, issuer=ISSUER, role="service_role")
    principal = await resolve(verifier, token, service_role_is_admin=allowed)
    assert principal.is_service_role and principal.user_id is None
    assert principal.is_admin is allowed


async def test_users_are_admins_by_app_metadata_only(verifier: TokenVerifier, key: SigningKey) -> None:
    admin = await resolve(verifier, key.access_token(USER, issuer=ISSUER, app_metadata={"role": "admin"}))
    assert admin.is_admin and admin.user_id == USER
    # user_metadata is the user's to write (supabase.auth.updateUser): it never makes an admin.
    self_made = key.access_token(USER, issuer=ISSUER, user_metadata={"role": "admin"})
    assert not (await resolve(verifier, self_made)).is_admin
    # Nor does the compatibility setting turn users into admins.
    plain = key.access_token(USER, issuer=ISSUER)
    assert not (await resolve(verifier, plain, service_role_is_admin=True)).is_admin


def test_a_principal_built_by_hand_is_not_an_admin_unless_it_says_so() -> None:
    assert not Principal(role="service_role", user_id=None).is_admin
    assert not Principal(role="admin", user_id=None).is_admin
    assert not Principal(role="authenticated", user_id=None, app_metadata_admin=True).is_admin
    assert Principal.admin_key().is_admin


def test_same_secret_compares_whatever_the_lengths() -> None:
    assert same_secret(ADMIN_KEY, ADMIN_KEY)
    assert not same_secret(ADMIN_KEY, ADMIN_KEY + "0")
    assert not same_secret("", ADMIN_KEY)
    assert not same_secret("é", "e")
