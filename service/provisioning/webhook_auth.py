"""Authentication of the signup webhook.

Two ways in, both constant-time:
- Standard Webhooks signatures (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), as sent
  by our Edge Function relay and by Supabase Auth hooks: HMAC-SHA256 over ``id.timestamp.body`` with the
  base64 secret after ``whsec_``; timestamps outside the tolerance window are replays and rejected.
- A static shared secret in ``x-webhook-secret``, for projects that let pg_net call the service directly
  (pg_net can only send static headers).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping


class WebhookAuthError(Exception):
    """The webhook is not from us; the message is safe to return."""


def _standard_key(secret: str) -> bytes:
    try:
        return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookAuthError("webhook signing secret is misconfigured") from exc


def _signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64 HMAC-SHA256>`` value Standard Webhooks defines for a message."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_standard_key(secret), signed, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"


def verify_standard_webhook(
    secret: str, headers: Mapping[str, str], body: bytes, tolerance_seconds: int, now: float | None = None
) -> str:
    """Return the verified ``webhook-id``, or raise ``WebhookAuthError``."""
    message_id = headers.get("webhook-id", "")
    timestamp_text = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not message_id or not timestamp_text or not signatures or len(message_id) > 256:
        raise WebhookAuthError("missing Standard Webhooks headers")
    # Unix seconds: ten digits until the year 2286; more is not a timestamp (and would overflow a float).
    if not (timestamp_text.isascii() and timestamp_text.isdigit() and len(timestamp_text) <= 12):
        raise WebhookAuthError("webhook-timestamp is not a Unix time in seconds")
    timestamp = int(timestamp_text)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise WebhookAuthError("webhook-timestamp is outside the tolerance window")
    expected = _signature(secret, message_id, timestamp, body).encode()
    # The header may carry several space-separated signatures (key rotation); any valid v1 one will do.
    if not any(
        candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected)
        for candidate in signatures.split(" ")[:8]
    ):
        raise WebhookAuthError("webhook signature does not verify")
    return message_id


def verify_shared_secret(secret: str, supplied: str | None) -> None:
    if not supplied or not hmac.compare_digest(supplied.encode(), secret.encode()):
        raise WebhookAuthError("webhook secret does not match")
