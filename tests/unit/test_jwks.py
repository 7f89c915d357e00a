"""A hostile or broken JWKS endpoint: bad keys are skipped, fetches are rationed, and a request fails closed
with 401 (the token cannot be verified) or 503 ``jwks_unavailable`` (no keys were ever obtained) — never a 500,
never one fetch per request."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from pytest_httpx import HTTPXMock

from devstack.keys import SigningKey
from service.auth import tokens as tokens_module
from service.auth.tokens import InvalidToken, TokenVerifier
from service.errors import DomainError
from service.web.problems import ProblemError

ISSUER = "https://project.supabase.co/auth/v1"
JWKS_URL = f"{ISSUER}/.well-known/jwks.json"
USER = uuid.UUID("6f1c2d9e-1b7a-4c1e-9a55-0d4b5a3b2c10")


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def fetching(http: httpx.AsyncClient, clock: Clock, cache_seconds: int = 600) -> TokenVerifier:
    return TokenVerifier(
        audience="authenticated",
        issuer=ISSUER,
        jwks_url=JWKS_URL,
        jwks=None,
        hs256_secret=None,
        http=http,
        cache_seconds=cache_seconds,
        clock=clock,
    )


def fetches(httpx_mock: HTTPXMock) -> int:
    return len(httpx_mock.get_requests(url=JWKS_URL))


async def unavailable(v: TokenVerifier, token: str) -> DomainError:
    with pytest.raises(DomainError) as raised:
        await v.verify(token)
    assert raised.value.code == "jwks_unavailable"
    return raised.value


def rsa_jwk(kid: str) -> dict[str, Any]:
    public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    return {**json.loads(RSAAlgorithm.to_jwk(public)), "kid": kid, "alg": "RS256", "use": "sig"}


@pytest.mark.parametrize(
    "document",
    [
        pytest.param([{"kty": "EC"}], id="not-an-object"),
        pytest.param("keys", id="a-string"),
        pytest.param({"keys": {"kid": "k"}}, id="keys-not-a-list"),
        pytest.param({"keys": None}, id="keys-null"),
        pytest.param({}, id="no-keys"),
    ],
)
async def test_a_document_that_is_not_a_jwks_is_a_503_and_is_not_refetched_per_request(
    http: httpx.AsyncClient, key: SigningKey, clock: Clock, httpx_mock: HTTPXMock, document: Any
) -> None:
    httpx_mock.add_response(url=JWKS_URL, json=document, is_reusable=True)
    v = fetching(http, clock)
    token = key.access_token(USER, issuer=ISSUER)
    error = await unavailable(v, token)
    assert error.retry_after == 1  # the first backoff step
    for _ in range(20):
        await unavailable(v, token)
    assert fetches(httpx_mock) == 1
    # The problem a client gets: 503 with Retry-After, never a 500.
    problem = ProblemError.of(error)
    assert problem.status_code == 503 and problem.headers == {"Retry-After": "1"}


async def test_one_bad_key_among_good_ones_is_skipped_and_logged(
    http: httpx.AsyncClient, key: SigningKey, clock: Clock, httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture
) -> None:
    rsa_good = rsa_jwk("rsa-good")
    bad_point = {**key.public_jwk, "kid": "bad-point", "x": key.public_jwk["y"]}  # not on the curve
    document = {
        "keys": [
            bad_point,
            "not-a-key",
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},  # a symmetric key never belongs in a JWKS
            {**rsa_jwk("private"), "d": "AQAB"},  # private key material: refused, not used
            {**key.public_jwk, "kid": "enc", "use": "enc"},
            {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "rsa-bad", "n": "!!!", "e": "AQAB"},
            {**key.public_jwk, "kid": None},
            key.public_jwk,
            rsa_good,
        ]
    }
    httpx_mock.add_response(url=JWKS_URL, json=document)
    v = fetching(http, clock)
    with caplog.at_level(logging.WARNING, logger="service.auth"):
        assert (await v.verify(key.access_token(USER, issuer=ISSUER))).user_id == USER
    skipped = {record.kid: record.reason for record in caplog.records if record.msg == "JWKS key skipped"}  # type: ignore[attr-defined]
    assert set(skipped) == {"bad-point", None, "hmac", "private", "enc", "p384", "rsa-bad"}
    assert "unusable ES256 key" in skipped["bad-point"]
    assert "private" in skipped["private"] and "enc" in skipped["enc"]
    # The good RSA key works too; a token naming a skipped key is a 401, without another fetch.
    assert set(v._keys) == {key.kid, "rsa-good"}
    forged = SigningKey.generate()
    forged.kid = "bad-point"
    with pytest.raises(InvalidToken, match="unknown key"):
        await v.verify(forged.access_token(USER, issuer=ISSUER))
    assert fetches(httpx_mock) == 1


async def test_a_jwks_whose_keys_are_all_bad_keeps_the_keys_we_had(
    http: httpx.AsyncClient, key: SigningKey, clock: Clock, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=JWKS_URL, json=key.jwks())
    httpx_mock.add_response(url=JWKS_URL, json={"keys": [{"kty": "EC", "kid": "broken"}]})
    v = fetching(http, clock)
    token = key.access_token(USER, issuer=ISSUER)
    await v.verify(token)
    clock.now += tokens_module.MIN_REFRESH_INTERVAL
    with pytest.raises(InvalidToken, match="unknown key"):  # an unknown kid forces a refresh: it fails
        await v.verify(SigningKey.generate().access_token(USER, issuer=ISSUER))
    assert fetches(httpx_mock) == 2
    assert set(v._keys) == {key.kid}
    v._verified.clear()
    assert (await v.verify(token)).user_id == USER


async def test_an_empty_jwks_is_a_jwks_and_an_unknown_kid_a_401(
    http: httpx.AsyncClient, key: SigningKey, clock: Clock, httpx_mock: HTTPXMock
) -> None:
    """A legacy (HS256) project publishes ``{"keys": []}``: that is an answer, not an outage."""
    httpx_mock.add_response(url=JWKS_URL, json={"keys": []})
    with pytest.raises(InvalidToken, match="unknown key"):
        await fetching(http, clock).verify(key.access_token(USER, issuer=ISSUER))


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(httpx.ConnectError("refused"), id="unreachable"),
        pytest.param(httpx.ReadTimeout("slow"), id="timeout"),
        pytest.param(httpx.Response(503, text="upstream down"), id="503"),
        pytest.param(httpx.Response(500, json={"error": "boom"}), id="500"),
        pytest.param(httpx.Response(200, text="<html>captive portal</html>"), id="not-json"),
        pytest.param(httpx.Response(302, headers={"location": "https://elsewhere.example"}), id="redirect"),
    ],
)
async def test_a_failing_endpoint_with_nothing_cached_is_a_503_with_exponential_backoff(
    http: httpx.AsyncClient, key: SigningKey, clock: Clock, httpx_mock: HTTPXMock, failure: Any
) -> None:
    if isinstance(failure, httpx.Response):
        httpx_mock.add_response(
            url=JWKS_URL,
            status_code=failure.status_code,
            headers=dict(failure.headers),
            content=failure.content,
            is_reusable=True,
        )
    else:
        httpx_mock.add_exception(failure, url=JWKS_URL, is_reusable=True)
    v = fetching(http, clock)
    token = key.access_token(USER, issuer=ISSUER)
    # Each failure doubles the wait; requests in between fetch nothing and are told how long to wait.
    for attempt, wait in enumerate([1, 2, 4, 8, 16, 32, 60, 60], start=1):
        assert (await unavailable(v, token)).retry_after == wait
        for _ in range(5):
            await unavailable(v, token)
        assert fetches(httpx_mock) == attempt
        clock.now += wait - 0.5
        assert (await unavailable(v, token)).retry_after == 1  # rounded up, never 0
        assert fetches(httpx_mock) == attempt
        clock.now += 0.5


async def test_the_endpoint_coming_back_ends_the_outage(
    http: httpx.AsyncClient, key: SigningKey, clock: Clock, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=JWKS_URL, status_code=502)
    httpx_mock.add_response(url=JWKS_URL, json=key.jwks())
    v = fetching(http, clock)
    token = key.access_token(USER, issuer=ISSUER)
    await unavailable(v, token)
    clock.now += 1
    assert (await v.verify(token)).user_id == USER
    assert v._failures == 0 and fetches(httpx_mock) == 2


async def test_a_failing_endpoint_with_keys_cached_keeps_verifying_and_refreshes_behind_the_requests(
    http: httpx.AsyncClient, key: SigningKey, clock: Clock, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=JWKS_URL, json=key.jwks())
    httpx_mock.add_exception(httpx.ConnectError("refused"), url=JWKS_URL, is_reusable=True)
    v = fetching(http, clock, cache_seconds=60)
    await v.verify(key.access_token(USER, issuer=ISSUER))
    clock.now += 61  # the cache is stale
    for index in range(10):
        # Fresh tokens (not remembered): every one needs the key, and none waits for the failing fetch.
        assert (await v.verify(key.access_token(USER, issuer=ISSUER, session_id=f"s{index}"))).user_id == USER
        await asyncio.sleep(0)
    assert v._background is None or await asyncio.wait_for(v._background, 1) is None
    assert fetches(httpx_mock) == 2  # the first fetch and one refresh; the next waits for its backoff
    assert v._failures == 1
    # An unknown kid during the outage is a 401 (we do have keys), still without a fetch per request.
    for _ in range(10):
        with pytest.raises(InvalidToken, match="unknown key"):
            await v.verify(SigningKey.generate().access_token(USER, issuer=ISSUER))
    assert fetches(httpx_mock) == 2


async def test_an_unknown_kid_storm_makes_at_most_one_fetch_per_interval(
    http: httpx.AsyncClient, key: SigningKey, clock: Clock, httpx_mock: HTTPXMock
) -> None:
    httpx_mock.add_response(url=JWKS_URL, json=key.jwks(), is_reusable=True)
    v = fetching(http, clock)
    strangers = [SigningKey.generate() for _ in range(5)]

    async def storm() -> None:
        tokens = [strangers[i % 5].access_token(USER, issuer=ISSUER, session_id=str(i)) for i in range(50)]
        results = await asyncio.gather(*(v.verify(t) for t in tokens), return_exceptions=True)
        assert all(isinstance(r, InvalidToken) and "unknown key" in str(r) for r in results), results

    await storm()  # 50 concurrent requests from a cold cache: one fetch
    assert fetches(httpx_mock) == 1
    for interval in range(1, 4):
        clock.now += tokens_module.MIN_REFRESH_INTERVAL - 1
        await storm()
        assert fetches(httpx_mock) == interval  # not yet
        clock.now += 1
        await storm()
        assert fetches(httpx_mock) == interval + 1  # one per interval, however many requests
    # The good key keeps working throughout.
    assert (await v.verify(key.access_token(USER, issuer=ISSUER))).user_id == USER
