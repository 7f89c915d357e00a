"""Access-token verification: what is accepted, and every way a forged token is refused."""

from __future__ import annotations

import base64
import json
import time
import uuid

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pytest_httpx import HTTPXMock

from devstack.keys import SigningKey
from service.auth import tokens as tokens_module
from service.auth.tokens import InvalidToken, TokenVerifier

ISSUER = "https://project.supabase.co/auth/v1"
JWKS_URL = f"{ISSUER}/.well-known/jwks.json"
USER = uuid.UUID("6f1c2d9e-1b7a-4c1e-9a55-0d4b5a3b2c10")


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def verifier(
    http: httpx.AsyncClient,
    *,
    jwks: dict | None = None,
    secret: str | None = None,
    clock: Clock | None = None,
    cache_seconds: int = 600,
) -> TokenVerifier:
    return TokenVerifier(
        audience="authenticated",
        issuer=ISSUER,
        jwks_url=JWKS_URL,
        jwks=jwks,
        hs256_secret=secret,
        http=http,
        cache_seconds=cache_seconds,
        clock=clock or Clock(),
    )


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def test_valid_es256_token_from_inline_jwks(http: httpx.AsyncClient, key: SigningKey) -> None:
    principal = await verifier(http, jwks=key.jwks()).verify(
        key.access_token(USER, issuer=ISSUER, email="ann@example.com")
    )
    assert principal.user_id == USER
    assert principal.role == "authenticated"
    assert principal.email == "ann@example.com"
    assert not principal.is_admin


async def test_a_remembered_principal_keeps_only_what_the_service_reads_and_decodes_the_rest_when_asked(
    http: httpx.AsyncClient, key: SigningKey
) -> None:
    token = key.access_token(USER, issuer=ISSUER, email="ann@example.com", user_metadata={"full_name": "Ann"})
    tokens = verifier(http, jwks=key.jwks())
    principal = await tokens.verify(token)

    assert await tokens.verify(token) is principal  # remembered
    kept = [getattr(principal, field) for field in principal.__slots__]  # type: ignore[attr-defined]
    assert not [value for value in kept if isinstance(value, dict | list)]  # no decoded claims
    assert principal.token is token  # the cache's key, not a copy
    claims = principal.claims
    assert (claims["sub"], claims["user_metadata"]) == (str(USER), {"full_name": "Ann"})
    assert principal.expires_at == claims["exp"]


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"aud": "anon-app"}, "audience"),
        ({"iss": "https://evil.example/auth/v1"}, "issuer"),
        ({"role": "anon"}, "role"),
        ({"sub": "not-a-uuid"}, "subject"),
    ],
)
async def test_claims_are_checked(http: httpx.AsyncClient, key: SigningKey, overrides: dict, reason: str) -> None:
    with pytest.raises(InvalidToken, match=reason):
        await verifier(http, jwks=key.jwks()).verify(key.access_token(USER, issuer=ISSUER, **overrides))


async def test_token_signed_by_another_key_with_the_same_kid_is_rejected(
    http: httpx.AsyncClient, key: SigningKey
) -> None:
    attacker = SigningKey.generate()
    attacker.kid = key.kid
    with pytest.raises(InvalidToken, match="signature"):
        await verifier(http, jwks=key.jwks()).verify(attacker.access_token(USER, issuer=ISSUER))


async def test_tampered_payload_is_rejected(http: httpx.AsyncClient, key: SigningKey) -> None:
    header, _, signature = key.access_token(USER, issuer=ISSUER).split(".")
    forged_claims = {
        "sub": str(uuid.uuid4()),
        "role": "authenticated",
        "aud": "authenticated",
        "iss": ISSUER,
        "exp": int(time.time()) + 60,
        "iat": int(time.time()),
    }
    with pytest.raises(InvalidToken):
        await verifier(http, jwks=key.jwks()).verify(f"{header}.{_b64(forged_claims)}.{signature}")


async def test_alg_none_is_rejected(http: httpx.AsyncClient, key: SigningKey) -> None:
    claims = {
        "sub": str(USER),
        "role": "authenticated",
        "aud": "authenticated",
        "iss": ISSUER,
        "exp": int(time.time()) + 60,
        "iat": int(time.time()),
    }
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
    with pytest.raises(InvalidToken, match="not accepted"):
        await verifier(http, jwks=key.jwks(), secret="x" * 32).verify(token)


async def test_hs256_is_refused_without_a_configured_secret(http: httpx.AsyncClient, key: SigningKey) -> None:
    token = jwt.encode(
        {
            "sub": str(USER),
            "role": "authenticated",
            "aud": "authenticated",
            "iss": ISSUER,
            "exp": int(time.time()) + 60,
            "iat": int(time.time()),
        },
        "s" * 32,
        algorithm="HS256",
    )
    with pytest.raises(InvalidToken, match="not accepted"):
        await verifier(http, jwks=key.jwks()).verify(token)
    principal = await verifier(http, jwks=key.jwks(), secret="s" * 32).verify(token)
    assert principal.user_id == USER


async def test_rsa_public_key_used_as_hmac_secret_is_rejected(http: httpx.AsyncClient) -> None:
    """Algorithm confusion: an attacker signs HS256 with the published RSA public key as the secret."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = {**json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa-1", "alg": "RS256"}
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {
        "sub": str(USER),
        "role": "authenticated",
        "aud": "authenticated",
        "iss": ISSUER,
        "exp": int(time.time()) + 60,
        "iat": int(time.time()),
    }
    header = {"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}
    import hashlib
    import hmac

    signing_input = f"{_b64(header)}.{_b64(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    v = verifier(http, jwks={"keys": [public_jwk]})
    with pytest.raises(InvalidToken):
        await v.verify(token)
    # The same key does verify a genuine RS256 token.
    good = jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    assert (await v.verify(good)).user_id == USER


async def test_es256_header_naming_an_rsa_key_is_rejected(http: httpx.AsyncClient, key: SigningKey) -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_jwk = {**json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": key.kid, "alg": "RS256"}
    with pytest.raises(InvalidToken, match="does not match"):
        await verifier(http, jwks={"keys": [rsa_jwk]}).verify(key.access_token(USER, issuer=ISSUER))


async def test_jwks_is_fetched_once_and_cached(http: httpx.AsyncClient, key: SigningKey, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=JWKS_URL, json=key.jwks())
    v = verifier(http)
    for _ in range(3):
        assert (await v.verify(key.access_token(USER, issuer=ISSUER))).user_id == USER
    assert len(httpx_mock.get_requests()) == 1


async def test_unknown_kid_refreshes_the_jwks(http: httpx.AsyncClient, key: SigningKey, httpx_mock: HTTPXMock) -> None:
    rotated = SigningKey.generate()
    httpx_mock.add_response(url=JWKS_URL, json=key.jwks())
    httpx_mock.add_response(url=JWKS_URL, json={"keys": [key.public_jwk, rotated.public_jwk]})
    clock = Clock()
    v = verifier(http, clock=clock)
    await v.verify(key.access_token(USER, issuer=ISSUER))
    clock.now += tokens_module.MIN_REFRESH_INTERVAL  # the minimum interval between forced refreshes
    assert (await v.verify(rotated.access_token(USER, issuer=ISSUER))).user_id == USER
    assert len(httpx_mock.get_requests()) == 2


async def test_random_kids_do_not_hammer_the_jwks_endpoint(
    http: httpx.AsyncClient, key: SigningKey, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=JWKS_URL, json=key.jwks())
    v = verifier(http)
    for _ in range(5):
        stranger = SigningKey.generate()
        with pytest.raises(InvalidToken, match="unknown key"):
            await v.verify(stranger.access_token(USER, issuer=ISSUER))
    assert len(httpx_mock.get_requests()) == 1


async def test_garbage_and_oversized_tokens_are_rejected(http: httpx.AsyncClient, key: SigningKey) -> None:
    v = verifier(http, jwks=key.jwks())
    with pytest.raises(InvalidToken, match="malformed"):
        await v.verify("not.a.jwt")
    with pytest.raises(InvalidToken, match="too large"):
        await v.verify("a" * 10_000)


async def test_admin_from_app_metadata(http: httpx.AsyncClient, key: SigningKey) -> None:
    principal = await verifier(http, jwks=key.jwks()).verify(
        key.access_token(USER, issuer=ISSUER, app_metadata={"role": "admin"})
    )
    assert principal.is_admin


@pytest.mark.parametrize(
    "claims",
    [
        pytest.param({"user_metadata": {"role": "admin"}}, id="user_metadata-is-the-users-own"),
        pytest.param({"app_metadata": {"roles": ["admin"]}}, id="another-member"),
        pytest.param({"app_metadata": "admin"}, id="app_metadata-not-an-object"),
        pytest.param({"app_metadata": {"role": "Admin"}}, id="exact-value-only"),
    ],
)
async def test_nothing_else_in_a_user_token_makes_an_admin(
    http: httpx.AsyncClient, key: SigningKey, claims: dict
) -> None:
    principal = await verifier(http, jwks=key.jwks()).verify(key.access_token(USER, issuer=ISSUER, **claims))
    assert principal.user_id == USER and not principal.is_admin


async def test_a_service_role_token_is_not_an_admin_by_itself(http: httpx.AsyncClient, key: SigningKey) -> None:
    """The old rule (every service_role token is an admin) is gone: only the HTTP edge may make it one, and only
    where SERVICE_ROLE_IS_ADMIN allows it (see test_admin_auth)."""
    token = key.access_token(USER, issuer=ISSUER, role="service_role", app_metadata={"role": "admin"})
    principal = await verifier(http, jwks=key.jwks()).verify(token)
    assert principal.is_service_role and principal.user_id is None
    assert not principal.is_admin


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"alg": ["ES256"], "kid": "k"}, id="alg-a-list"),  # was a TypeError (unhashable): a 500
        pytest.param({"alg": {"ES256": 1}, "kid": "k"}, id="alg-an-object"),
        pytest.param({"alg": "ES256", "kid": 7}, id="kid-a-number"),
        pytest.param({"alg": "ES256", "kid": ""}, id="kid-empty"),
        pytest.param({"alg": "ES256"}, id="no-kid"),
    ],
)
async def test_hostile_headers_are_invalid_tokens(http: httpx.AsyncClient, key: SigningKey, header: dict) -> None:
    token = f"{_b64(header)}.{_b64({'sub': str(USER), 'role': 'authenticated'})}.c2ln"
    with pytest.raises(InvalidToken):
        await verifier(http, jwks=key.jwks()).verify(token)


async def test_an_expiry_too_large_for_a_float_is_an_invalid_token(http: httpx.AsyncClient) -> None:
    claims = {"sub": str(USER), "role": "authenticated", "aud": "authenticated", "iss": ISSUER, "iat": 0}
    token = jwt.encode({**claims, "exp": 10**400}, "s" * 32, algorithm="HS256")
    with pytest.raises(InvalidToken):
        await verifier(http, jwks={"keys": []}, secret="s" * 32).verify(token)


class CountingDecode:
    """Counts real signature checks (jwt.decode) while letting them run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self._decode = jwt.decode
        monkeypatch.setattr(tokens_module.jwt, "decode", self)

    def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        return self._decode(*args, **kwargs)


async def test_a_verified_token_is_remembered_for_a_minute_at_most(
    http: httpx.AsyncClient, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    decode = CountingDecode(monkeypatch)
    token = key.access_token(USER, issuer=ISSUER, expires_in=3600)
    v = verifier(http, jwks=key.jwks())
    first = await v.verify(token)
    assert await v.verify(token) == first
    assert decode.calls == 1
    # A minute later the token is checked again.
    now = time.time()
    monkeypatch.setattr(tokens_module.time, "time", lambda: now + tokens_module.VERIFIED_TTL_SECONDS + 1)
    assert await v.verify(token) == first
    assert decode.calls == 2


async def test_a_remembered_token_is_never_accepted_past_its_expiry(http: httpx.AsyncClient, key: SigningKey) -> None:
    token = key.access_token(USER, issuer=ISSUER, expires_in=5)
    v = verifier(http, jwks=key.jwks())
    await v.verify(token)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    until, _ = v._verified[token]
    assert until == exp + 10  # the expiry plus the same leeway the signature check allows, not a minute


async def test_refused_tokens_are_not_remembered_and_memory_is_bounded(
    http: httpx.AsyncClient, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens_module, "VERIFIED_MAX_ENTRIES", 2)
    other = SigningKey.generate()
    v = verifier(http, jwks=key.jwks())
    forged = other.access_token(USER, issuer=ISSUER)
    for _ in range(2):
        with pytest.raises(InvalidToken):
            await v.verify(forged)
    assert forged not in v._verified
    for index in range(5):
        await v.verify(key.access_token(USER, issuer=ISSUER, session_id=f"s{index}"))
        assert len(v._verified) <= 2
