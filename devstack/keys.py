"""The local stand-in for Supabase Auth's signing key.

GoTrue cannot run here, so the local stack signs access tokens itself with an ES256 key (what new
Supabase projects use) and gives the service its public JWKS. Tokens carry GoTrue's claims so the
service cannot tell them from real ones.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm


class SigningKey:
    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        self.private_key = private_key
        public = json.loads(ECAlgorithm.to_jwk(private_key.public_key()))
        # Key id = RFC 7638 thumbprint, so it is stable for the same key.
        canonical = json.dumps({k: public[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
        self.public_jwk = {**public, "kid": self.kid, "alg": "ES256", "use": "sig", "key_ops": ["verify"]}

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        if path.exists():
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
            return cls(key)
        signing_key = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = signing_key.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.write_bytes(pem)
        path.chmod(0o600)
        return signing_key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    def access_token(
        self,
        user_id: uuid.UUID | str,
        *,
        issuer: str,
        email: str | None = None,
        audience: str = "authenticated",
        role: str = "authenticated",
        expires_in: int = 3600,
        app_metadata: dict[str, Any] | None = None,
        user_metadata: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        """A token with the claims GoTrue puts in an access token."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": str(user_id),
            "aud": audience,
            "exp": now + expires_in,
            "iat": now,
            "email": email or "",
            "phone": "",
            "app_metadata": app_metadata or {"provider": "email", "providers": ["email"]},
            "user_metadata": user_metadata or {},
            "role": role,
            "aal": "aal1",
            "amr": [{"method": "password", "timestamp": now}],
            "session_id": str(uuid.uuid4()),
            "is_anonymous": False,
        }
        claims.update(overrides)
        return jwt.encode(claims, self.private_key, algorithm="ES256", headers={"kid": self.kid, "typ": "JWT"})
