"""A JWKS as the service uses it: every usable public key by its ``kid``, bad keys skipped and logged.

A key that cannot be used (unknown type or curve, bad numbers, no ``kid``, private material, ``use`` other
than ``sig``) is skipped; a document that is not a JWKS, or lists keys none of which is usable, is a
``JwksError`` (the keys already held are better kept). Fetching and rationing are ``TokenVerifier``'s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from jwt.algorithms import ECAlgorithm, RSAAlgorithm

logger = logging.getLogger("service.auth")


class JwksError(Exception):
    """A JWKS document (or the response that should have held one) that cannot be used at all."""


def _describe(value: Any) -> str:
    """A value from the JWKS, short enough for a log line."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _parse_key(jwk: Any) -> tuple[str, str, Any]:
    """``(kid, algorithm, public key)`` of one JWK; ``ValueError`` says why it cannot be used."""
    if not isinstance(jwk, dict):
        raise ValueError("not a JSON object")
    kid, kty, alg = jwk.get("kid"), jwk.get("kty"), jwk.get("alg")
    if not isinstance(kid, str) or not kid:
        raise ValueError("no kid")
    if any(member in jwk for member in ("d", "p", "q", "k")):
        raise ValueError("holds private or symmetric key material")
    if jwk.get("use", "sig") != "sig":
        raise ValueError(f"use is {_describe(jwk.get('use'))}, not sig")
    parser: Callable[[str], Any]
    if kty == "EC" and jwk.get("crv") == "P-256" and alg in (None, "ES256"):
        algorithm, parser = "ES256", ECAlgorithm.from_jwk
    elif kty == "RSA" and alg in (None, "RS256"):
        algorithm, parser = "RS256", RSAAlgorithm.from_jwk
    else:
        raise ValueError(
            f"unsupported key (kty {_describe(kty)}, crv {_describe(jwk.get('crv'))}, alg {_describe(alg)})"
        )
    try:
        key = parser(json.dumps(jwk))
    except Exception as exc:  # any failure to build the key makes it a bad key, never the end of the others
        raise ValueError(f"unusable {algorithm} key ({type(exc).__name__}: {exc})") from exc
    return kid, algorithm, key


def parse_jwks(document: Any) -> dict[str, tuple[str, Any]]:
    """``kid -> (algorithm, public key)`` for every usable key; bad keys are skipped and logged.

    Raises ``JwksError`` when the document is not a JWKS, or when it lists keys and none of them is usable
    (a broken document, not a key rotation: the keys we have are better kept).
    """
    if not isinstance(document, dict):
        raise JwksError(f"JWKS is not a JSON object (got {type(document).__name__})")
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise JwksError(f"JWKS keys is not a list (got {type(entries).__name__})")
    keys: dict[str, tuple[str, Any]] = {}
    for index, jwk in enumerate(entries):
        raw_kid = jwk.get("kid") if isinstance(jwk, dict) else None
        kid = None if raw_kid is None else _describe(raw_kid)
        try:
            kid_, algorithm, key = _parse_key(jwk)
        except ValueError as exc:
            logger.warning("JWKS key skipped", extra={"kid": kid, "index": index, "reason": str(exc)})
            continue
        if kid_ in keys:
            logger.warning("JWKS key skipped", extra={"kid": kid, "index": index, "reason": "duplicate kid"})
            continue
        keys[kid_] = (algorithm, key)
    if entries and not keys:
        raise JwksError(f"none of the JWKS's {len(entries)} keys is usable")
    return keys
