"""Local verification of Supabase access tokens.

Supabase signs access tokens with an asymmetric project key (ES256 or RS256, public keys at
``<SUPABASE_URL>/auth/v1/.well-known/jwks.json``) or, on legacy projects, an HS256 secret. We verify
locally instead of asking Supabase per request: supabase-py's ``get_claims()`` goes to the network for
HS256 tokens and does not check ``aud``/``iss``.

The algorithm is never taken on trust from the token: an asymmetric token must name a key of the
matching type in the JWKS, and HS256 is accepted only when a secret is configured. That closes
``alg: none`` and the RS256-public-key-as-HMAC-secret confusion.

The JWKS is fetched, not trusted either: a key that cannot be used (unknown type, bad numbers, no ``kid``)
is skipped and logged, the others are kept; a document that is not a JWKS, an error status or an unreachable
endpoint keeps the keys we had. Fetches are rationed whatever the tokens say: the cache is refreshed when it
is older than ``cache_seconds`` (behind the requests, which go on with the keys they have), an unknown ``kid``
refreshes it at most every ``MIN_REFRESH_INTERVAL`` seconds, and after a failed fetch the next one waits
``BACKOFF_FIRST`` seconds, doubling up to ``BACKOFF_MAX``. So a storm of forged kids or an outage of the JWKS
endpoint costs at most one fetch per interval, never one per request. A token that cannot be verified is a
401 (``InvalidToken``); only when no JWKS was ever obtained and the endpoint fails is it a 503
(``jwks_unavailable``, with the seconds until the next fetch).

A token that passed is remembered, by its exact bytes, for at most a minute and never past its expiry:
the signature check is the costliest step of a request (~0.3 ms for ES256), and a client sends the same
token with every request until it refreshes it. A minute is also about how late a key withdrawn from the
JWKS stops working anyway (the JWKS itself is cached for minutes).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt

from service.auth.jwks import JwksError, parse_jwks
from service.errors import DomainError

logger = logging.getLogger("service.auth")

# key type -> the algorithms such a key may verify
_ASYMMETRIC = {"ES256": "EC", "RS256": "RSA"}
MAX_TOKEN_BYTES = 8192
# An unknown kid refreshes the JWKS, but not more often than this: random kids must not become a
# way to make us hammer Supabase.
MIN_REFRESH_INTERVAL = 30.0
# After a failed fetch: wait this long, doubling with each further failure, up to BACKOFF_MAX.
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
JWKS_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 256 * 1024
VERIFIED_TTL_SECONDS = 60.0
VERIFIED_MAX_ENTRIES = 4096

USER_ROLE = "authenticated"
SERVICE_ROLE = "service_role"
ADMIN_KEY_ROLE = "admin"


class InvalidToken(Exception):
    """The token cannot be trusted; the message says why (safe to show to the caller)."""


def jwks_unavailable(retry_after: float) -> DomainError:
    """No JWKS was ever obtained and fetching it fails: nobody can be verified until it answers."""
    return DomainError("jwks_unavailable", retry_after=max(1, math.ceil(retry_after)))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a signed-in user, the holder of ``ADMIN_API_KEY`` (role ``admin``), or the project's
    service role (a ``service_role`` token or the Supabase service key), which the HTTP edge refuses unless
    ``SERVICE_ROLE_IS_ADMIN`` is set.

    ``admin_credential`` is set only by the edge that authenticated an admin credential (``ADMIN_API_KEY``, or
    the service role where the setting allows it); a verified token never sets it.

    A verified token's principal keeps the few claims the service reads, not all of them: it is remembered for
    every signed-in user (``TokenVerifier.verify``), and decoded claims weigh ~3 KiB.
    """

    role: str
    user_id: uuid.UUID | None
    admin_credential: bool = False
    app_metadata_admin: bool = False  # the token's ``app_metadata.role`` is "admin" (see ``is_admin``)
    email: str | None = None
    expires_at: float = math.inf  # the token's ``exp`` (wall clock); a key does not expire
    token: str | None = field(default=None, repr=False)  # the verified token, where ``claims`` reads the rest from

    @classmethod
    def admin_key(cls) -> Principal:
        """The caller that presented ``ADMIN_API_KEY``."""
        return cls(role=ADMIN_KEY_ROLE, user_id=None, admin_credential=True)

    @classmethod
    def service_role(cls, *, admin: bool = False) -> Principal:
        """The caller that presented the Supabase service key."""
        return cls(role=SERVICE_ROLE, user_id=None, admin_credential=admin)

    @property
    def claims(self) -> dict[str, Any]:
        """All the claims of the verified token, decoded from it again (its signature was checked when it was
        verified); a key's principal has only its role."""
        if self.token is None:
            return {"role": self.role}
        claims: dict[str, Any] = jwt.decode(self.token, options={"verify_signature": False})
        return claims

    @property
    def is_service_role(self) -> bool:
        return self.role == SERVICE_ROLE

    @property
    def is_admin(self) -> bool:
        """An admin credential, or a signed-in user whose verified token says ``app_metadata.role = "admin"``.

        ``app_metadata`` is written only by the server (the Supabase Auth admin API); ``user_metadata`` is the
        user's own to edit and never counts.
        """
        if self.admin_credential:
            return True
        return self.role == USER_ROLE and self.user_id is not None and self.app_metadata_admin


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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._audience = audience
        self._issuer = issuer
        self._jwks_url = jwks_url
        self._hs256_secret = hs256_secret
        self._http = http
        self._cache_seconds = cache_seconds
        self._leeway = leeway_seconds
        self._clock = clock
        # Fetched only when no JWKS is given inline and there is a URL to fetch it from.
        self._remote = jwks is None and bool(jwks_url)
        self._keys: dict[str, tuple[str, Any]] = parse_jwks(jwks) if jwks is not None else {}
        self._fetched_at: float | None = None if self._remote else clock()  # the last good fetch
        self._attempted_at: float | None = None  # the last fetch, good or not
        self._failures = 0  # fetches failed in a row
        self._retry_at = 0.0  # no fetch before this (backoff after a failure)
        self._lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None  # a refresh of a stale cache, behind the requests
        self._verified: dict[str, tuple[float, Principal]] = {}  # token -> (valid until, wall clock), principal

    def _may_fetch(self, now: float, *, unknown_kid: bool) -> bool:
        if not self._remote or now < self._retry_at:
            return False
        if self._fetched_at is None or now - self._fetched_at >= self._cache_seconds:
            return True  # nothing cached yet, or the cache is stale
        return unknown_kid and (self._attempted_at is None or now - self._attempted_at >= MIN_REFRESH_INTERVAL)

    async def _refresh(self, *, unknown_kid: bool) -> None:
        if not self._may_fetch(self._clock(), unknown_kid=unknown_kid):
            return
        async with self._lock:
            # Whoever held the lock may have just fetched: decide again.
            if not self._may_fetch(self._clock(), unknown_kid=unknown_kid):
                return
            assert self._jwks_url is not None
            try:
                keys = await self._fetch(self._jwks_url)
            except Exception as exc:  # whatever went wrong, the keys we have are kept and the endpoint rested
                now = self._clock()
                self._failures += 1
                delay = min(BACKOFF_FIRST * 2 ** (self._failures - 1), BACKOFF_MAX)
                self._attempted_at, self._retry_at = now, now + delay
                logger.warning(
                    "JWKS fetch failed",
                    extra={
                        "error": f"{type(exc).__name__}: {exc}",
                        "failures": self._failures,
                        "retry_in_seconds": delay,
                        "cached_keys": len(self._keys),
                    },
                )
                return
            now = self._clock()
            self._keys, self._fetched_at, self._attempted_at = keys, now, now
            self._failures, self._retry_at = 0, 0.0

    async def _refresh_behind(self) -> None:
        try:
            await self._refresh(unknown_kid=False)
        finally:
            self._background = None

    async def _fetch(self, url: str) -> dict[str, tuple[str, Any]]:
        response = await self._http.get(url, timeout=JWKS_TIMEOUT_SECONDS)
        response.raise_for_status()
        if len(response.content) > MAX_JWKS_BYTES:
            raise JwksError(f"JWKS response is larger than {MAX_JWKS_BYTES} bytes")
        return parse_jwks(response.json())

    async def _key_for(self, kid: Any, alg: str) -> Any:
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token has no key id")
        if kid in self._keys:
            # A known key with a stale cache: refreshed behind the request, which goes on with the key it has
            # (a slow or failing endpoint must not stall every request while it times out).
            if self._background is None and self._may_fetch(self._clock(), unknown_kid=False):
                self._background = asyncio.create_task(self._refresh_behind())
        else:
            await self._refresh(unknown_kid=True)  # nothing else to go on: wait for it (coalesced, rationed)
        found = self._keys.get(kid)
        if found is None:
            if self._remote and self._fetched_at is None:
                # Not the token's fault: we never had the keys to check it with.
                raise jwks_unavailable(self._retry_at - self._clock())
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
        if not isinstance(alg, str):
            raise InvalidToken("token algorithm is not accepted")
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
        except (jwt.PyJWTError, OverflowError) as exc:
            raise InvalidToken("token signature or claims are invalid") from exc
        try:
            expires = float(claims["exp"])
        except (OverflowError, TypeError, ValueError) as exc:
            raise InvalidToken("token expiry is not a time") from exc
        return self._principal(token, claims, expires), expires + self._leeway

    @staticmethod
    def _principal(token: str, claims: dict[str, Any], expires: float) -> Principal:
        role = claims.get("role")
        if role == SERVICE_ROLE:  # never an admin by itself
            return Principal(role=SERVICE_ROLE, user_id=None, expires_at=expires, token=token)
        if role != USER_ROLE:
            raise InvalidToken("token role is not accepted")
        try:
            user_id = uuid.UUID(str(claims.get("sub")))
        except ValueError as exc:
            raise InvalidToken("token subject is not a user id") from exc
        app_metadata, email = claims.get("app_metadata"), claims.get("email")
        return Principal(
            role=USER_ROLE,
            user_id=user_id,
            app_metadata_admin=isinstance(app_metadata, dict) and app_metadata.get("role") == "admin",
            email=email if isinstance(email, str) and email else None,
            expires_at=expires,
            token=token,  # the cache's key: the same string, not a copy
        )
