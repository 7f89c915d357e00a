"""Local verification of Supabase access tokens.

Supabase signs access tokens with an asymmetric project key (ES256 or RS256, public keys at
``<SUPABASE_URL>/auth/v1/.well-known/jwks.json``) or, on legacy projects, an HS256 secret. We verify
locally instead of asking Supabase per request: supabase-py's ``get_claims()`` goes to the network for
HS256 tokens and does not check ``aud``/``iss``.

The algorithm is never taken on trust from the token: an asymmetric token must name a key of the
matching type in the JWKS, and HS256 is accepted only when a secret is configured. That closes
``alg: none`` and the RS256-public-key-as-HMAC-secret confusion.

A token that passed is remembered, by its exact bytes, for at most a minute and never past its expiry:
the signature check is the costliest step of a request (~0.3 ms for ES256), and a client sends the same
token with every request until it refreshes it. A minute is also about how late a key withdrawn from the
JWKS stops working anyway (the JWKS itself is cached for minutes).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

logger = logging.getLogger("service.auth")

# key type -> the algorithms such a key may verify
_ASYMMETRIC = {"ES256": "EC", "RS256": "RSA"}
MAX_TOKEN_BYTES = 8192
# An unknown kid refreshes the JWKS, but not more often than this: random kids must not become a
# way to make us hammer Supabase.
_MIN_REFRESH_INTERVAL = 30.0
VERIFIED_TTL_SECONDS = 60.0
VERIFIED_MAX_ENTRIES = 4096


class InvalidToken(Exception):
    """The token cannot be trusted; the message says why (safe to show to the caller)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a signed-in user, or the project's service role (admin tooling)."""

    role: str
    claims: dict[str, Any]
    user_id: uuid.UUID | None

    @property
    def is_service_role(self) -> bool:
        return self.role == "service_role"

    @property
    def is_admin(self) -> bool:
        app_metadata = self.claims.get("app_metadata") or {}
        return self.is_service_role or (isinstance(app_metadata, dict) and app_metadata.get("role") == "admin")

    @property
    def email(self) -> str | None:
        value = self.claims.get("email")
        return value if isinstance(value, str) and value else None


class TokenVerifier:
    def __init__(
        self,
        *,
        audience: str,
        issuer: str,
        jwks_url: str | None,
        jwks: dict[str, Any] | None,
        hs256_secret: str | None,
        http: httpx.AsyncClient,
        cache_seconds: int = 600,
        leeway_seconds: int = 10,
    ) -> None:
        self._audience = audience
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._hs256_secret = hs256_secret
        self._http = http
        self._cache_seconds = cache_seconds
        self._leeway = leeway_seconds
        self._static = jwks is not None
        self._keys: dict[str, tuple[str, Any]] = self._parse_jwks(jwks) if jwks else {}
        self._fetched_at = time.monotonic() if jwks else 0.0
        self._lock = asyncio.Lock()
        self._verified: dict[str, tuple[float, Principal]] = {}  # token -> (valid until, wall clock), principal

    @staticmethod
    def _parse_jwks(jwks: dict[str, Any]) -> dict[str, tuple[str, Any]]:
        keys: dict[str, tuple[str, Any]] = {}
        for jwk in jwks.get("keys", []):
            kty, kid, alg = jwk.get("kty"), jwk.get("kid"), jwk.get("alg")
            if not kid or jwk.get("use", "sig") != "sig":
                continue
            if kty == "EC" and jwk.get("crv") == "P-256" and alg in (None, "ES256"):
                keys[kid] = ("ES256", ECAlgorithm.from_jwk(json.dumps(jwk)))
            elif kty == "RSA" and alg in (None, "RS256"):
                keys[kid] = ("RS256", RSAAlgorithm.from_jwk(json.dumps(jwk)))
        return keys

    async def _refresh(self, force: bool) -> None:
        if self._static or not self._jwks_url:
            return
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            if (not force and age < self._cache_seconds) or (force and age < _MIN_REFRESH_INTERVAL):
                return
            try:
                response = await self._http.get(self._jwks_url, timeout=5.0)
                response.raise_for_status()
                self._keys = self._parse_jwks(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                # Keep serving with the keys we have; a token signed by an unknown key still fails.
                logger.warning("JWKS refresh failed", extra={"error": str(exc)})
            self._fetched_at = time.monotonic()

    async def _key_for(self, kid: str | None, alg: str) -> Any:
        if not kid:
            raise InvalidToken("token has no key id")
        await self._refresh(force=False)
        if kid not in self._keys:
            await self._refresh(force=True)
        found = self._keys.get(kid)
        if found is None:
            raise InvalidToken("token is signed by an unknown key")
        key_alg, key = found
        if key_alg != alg:
            raise InvalidToken("token algorithm does not match its key")
        return key

    async def verify(self, token: str) -> Principal:
        remembered = self._verified.get(token)
        if remembered is not None:
            if time.time() < remembered[0]:
                return remembered[1]
            del self._verified[token]
        principal, expires_at = await self._verify(token)
        if len(self._verified) >= VERIFIED_MAX_ENTRIES:
            self._verified.clear()  # bounded; the next requests simply verify again
        self._verified[token] = (min(expires_at, time.time() + VERIFIED_TTL_SECONDS), principal)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        """The principal and the wall-clock time until which the token is accepted."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("token is too large")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("token is malformed") from exc
        alg = header.get("alg")
        key: Any
        if alg in _ASYMMETRIC:
            key = await self._key_for(header.get("kid"), alg)
        elif alg == "HS256" and self._hs256_secret:
            key = self._hs256_secret
        else:
            raise InvalidToken(f"token algorithm {alg!r} is not accepted")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer or None,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "role"] + (["iss"] if self._issuer else [])},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise InvalidToken("token audience is not accepted") from exc
        except jwt.InvalidIssuerError as exc:
            raise InvalidToken("token issuer is not accepted") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("token signature or claims are invalid") from exc
        return self._principal(claims), float(claims["exp"]) + self._leeway

    @staticmethod
    def _principal(claims: dict[str, Any]) -> Principal:
        role = claims.get("role")
        if role == "service_role":
            return Principal(role=role, claims=claims, user_id=None)
        if role != "authenticated":
            raise InvalidToken("token role is not accepted")
        try:
            user_id = uuid.UUID(str(claims.get("sub")))
        except ValueError as exc:
            raise InvalidToken("token subject is not a user id") from exc
        return Principal(role=role, claims=claims, user_id=user_id)
