"""A Standard Webhooks sender's signature, for the tests and benchmarks that play the Edge Function relay.

Written from the specification (HMAC-SHA256 over ``id.timestamp.body`` with the base64 secret after ``whsec_``),
independently of the service's verifier, so that a test of one is not a test of itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac


def sign_standard_webhook(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for a message."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"
