"""What the pass-through needs besides the request: who the client is, the limits per client IP and per email,
and how to call Supabase Auth (which key, and whether to tell it the client's IP).

Limits (GCRA in Postgres, shared by every replica: ``service.rate_limit``), checked before Supabase is called:

===========  ==============================  ===================================
operation    per client IP (IPv6: per /64)   per email address
===========  ==============================  ===================================
login        ``auth.login.ip``               ``auth.login.email``
register     ``auth.register.ip``            ``auth.register.email``
refresh      ``auth.refresh.ip``             (a refresh names no email)
===========  ==============================  ===================================

The IP bucket is hit first, so a client refused for its own address spends nothing of the email's budget. Like
every limiter here they fail open while the database is unreachable. What is stored is ``subject_key``: an HMAC,
never the address or the email.

Forwarding the client's IP: Supabase Auth limits sign-ups, logins and refreshes per IP address, and every request
of ours comes from this service's address: one client could spend everyone's budget. With
``AUTH_PASSTHROUGH_FORWARD_IP`` each request carries ``Sb-Forwarded-For: <client IP>``, which Supabase Auth then
takes as the client's address (for its per-IP limits and wherever it records one), provided the project has "IP
address forwarding" on (hosted: ``security_sb_forwarded_for_enabled``; self-hosted GoTrue:
``GOTRUE_SECURITY_SB_FORWARDED_FOR_ENABLED``) and the request is made with a secret key: the calls then use
``SUPABASE_SERVICE_KEY``. A secret key reaches Supabase Auth as the service role, and GoTrue skips captcha
verification for the service role: in this mode a ``captcha_token`` is passed on but Supabase does not check it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Literal

import httpx

from service.auth.passthrough.client_ip import Client, Network, client_of, networks
from service.auth.passthrough.gotrue import RequestScopedGoTrue
from service.rate_limit import KeyedRateLimiter, subject_key
from service.settings import Settings

logger = logging.getLogger("service.auth.passthrough")

Operation = Literal["login", "register", "refresh"]

LOGIN_PER_IP = "auth.login.ip"
LOGIN_PER_EMAIL = "auth.login.email"
REGISTER_PER_IP = "auth.register.ip"
REGISTER_PER_EMAIL = "auth.register.email"
REFRESH_PER_IP = "auth.refresh.ip"

# (per IP, per email) for each operation.
BUCKETS: dict[Operation, tuple[str, str | None]] = {
    "login": (LOGIN_PER_IP, LOGIN_PER_EMAIL),
    "register": (REGISTER_PER_IP, REGISTER_PER_EMAIL),
    "refresh": (REFRESH_PER_IP, None),
}

WINDOW_SECONDS = 3600


def bucket_limits(settings: Settings) -> dict[str, tuple[int, int]]:
    """The pass-through's buckets as ``PostgresRateLimiter`` takes them: ``{bucket: (limit, window_seconds)}``."""
    return {
        LOGIN_PER_IP: (settings.rate_limit_login_per_ip_per_hour, WINDOW_SECONDS),
        LOGIN_PER_EMAIL: (settings.rate_limit_login_per_email_per_hour, WINDOW_SECONDS),
        REGISTER_PER_IP: (settings.rate_limit_register_per_ip_per_hour, WINDOW_SECONDS),
        REGISTER_PER_EMAIL: (settings.rate_limit_register_per_email_per_hour, WINDOW_SECONDS),
        REFRESH_PER_IP: (settings.rate_limit_refresh_per_ip_per_hour, WINDOW_SECONDS),
    }


def key_secret(settings: Settings) -> bytes:
    """The HMAC key of the stored subject keys. It must be the same in every replica (they count the same keys)
    and secret (so the digests cannot be matched against guessed addresses): derived from LITELLM_MASTER_KEY,
    which is both and always set. Changing it only starts the counters afresh (they hold an hour at most)."""
    master = settings.litellm_master_key.get_secret_value().encode()
    return hashlib.sha256(b"ai-chat-backend/auth-rate-limit-keys\x00" + master).digest()


def normalized_email(email: str) -> str:
    """One bucket per mailbox however the address is cased (Supabase Auth lowercases it too)."""
    return email.strip().lower()


class AuthPassthrough:
    """The pass-through's configuration and limits, built once per process (``from_settings``)."""

    def __init__(
        self,
        *,
        auth_url: str,
        api_key: str,
        key_variable: str,
        forward_ip: bool,
        trusted_proxies: Sequence[Network],
        limiter: KeyedRateLimiter,
        secret: bytes,
    ) -> None:
        self.auth_url = auth_url
        self.key_variable = key_variable  # named in the problem when Supabase's gateway rejects the key
        self._api_key = api_key
        self.forward_ip = forward_ip
        self._trusted = tuple(trusted_proxies)
        self._limiter = limiter
        self._secret = secret

    @classmethod
    def from_settings(cls, settings: Settings, limiter: KeyedRateLimiter) -> AuthPassthrough:
        """``limiter`` must know ``bucket_limits(settings)``. The settings guarantee the key exists."""
        forward = settings.auth_passthrough_forward_ip
        variable = "SUPABASE_SERVICE_KEY" if forward else "SUPABASE_ANON_KEY"
        key = settings.supabase_service_key if forward else settings.supabase_anon_key
        if key is None:
            raise ValueError(f"the auth pass-through needs {variable}")
        return cls(
            auth_url=f"{settings.supabase_url}/auth/v1",
            api_key=key.get_secret_value(),
            key_variable=variable,
            forward_ip=forward,
            trusted_proxies=networks(settings.trusted_proxies),
            limiter=limiter,
            secret=key_secret(settings),
        )

    def client(self, peer: str | None, forwarded_for: Sequence[str]) -> Client:
        """The caller, from the connection's peer address and its X-Forwarded-For header lines."""
        return client_of(peer, forwarded_for, self._trusted)

    async def admit(self, operation: Operation, client: Client, email: str | None = None) -> None:
        """Count one ``operation`` for the client's IP, then its email; raise ``rate_limited`` (429) when spent."""
        ip_bucket, email_bucket = BUCKETS[operation]
        hits = [(ip_bucket, subject_key(self._secret, "ip", client.subject))]
        if email is not None and email_bucket is not None:
            hits.append((email_bucket, subject_key(self._secret, "email", normalized_email(email))))
        for bucket, key in hits:
            decision = await self._limiter.hit_key(key, bucket)
            if not decision.allowed:
                logger.info(
                    "auth pass-through rate limited",
                    extra={"bucket": bucket, "retry_after": decision.retry_after_seconds},
                )
                raise decision.error()

    def gotrue(self, http: httpx.AsyncClient, client: Client) -> RequestScopedGoTrue:
        """A Supabase Auth client for this request, telling it the client's IP when forwarding is on."""
        forwarded = client.forwarded_for if self.forward_ip else None
        return RequestScopedGoTrue(self.auth_url, self._api_key, http, forwarded_for=forwarded)
