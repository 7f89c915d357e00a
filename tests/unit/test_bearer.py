"""The one reading of ``Authorization: Bearer <token>`` (service/auth/middleware.py ``parse_bearer``), shared by the
auth middleware (401 without a token) and ``/health/ready`` (the admin key's details, no 401 on a public probe)."""

from __future__ import annotations

import pytest
from litestar.exceptions import NotAuthorizedException

from service.auth.middleware import bearer_token, parse_bearer
from service.settings import load_settings
from service.web.health import _is_admin_key
from tests.unit.test_settings import MINIMAL

ADMIN_KEY = "admin-api-key-0123456789abcdef-0123"


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def", "abc.def"),
        ("bearer abc.def", "abc.def"),  # the scheme is case-insensitive (RFC 9110)
        ("BEARER  abc.def ", "abc.def"),
        (None, None),
        ("", None),
        ("Bearer", None),
        ("Bearer   ", None),
        ("Basic abc.def", None),
        ("abc.def", None),
    ],
)
def test_parse_bearer(header: str | None, token: str | None) -> None:
    assert parse_bearer(header) == token


def test_bearer_token_is_a_401_without_a_token() -> None:
    assert bearer_token("Bearer abc") == "abc"
    with pytest.raises(NotAuthorizedException, match="missing Authorization header"):
        bearer_token(None)
    for malformed in ("Basic abc", "Bearer "):
        with pytest.raises(NotAuthorizedException, match="must be 'Bearer <token>'"):
            bearer_token(malformed)


def test_readiness_reads_the_admin_key_as_the_middleware_reads_tokens() -> None:
    settings = load_settings({**MINIMAL, "ADMIN_API_KEY": ADMIN_KEY})
    for header in (f"Bearer {ADMIN_KEY}", f"bearer {ADMIN_KEY}", f"Bearer  {ADMIN_KEY} "):
        assert _is_admin_key(header, settings), header
        assert parse_bearer(header) == ADMIN_KEY
    for header in (None, f"Basic {ADMIN_KEY}", ADMIN_KEY, "Bearer not-the-admin-key", "Bearer "):
        assert not _is_admin_key(header, settings), header
    # No admin key configured: nobody sees the details.
    assert not _is_admin_key(f"Bearer {ADMIN_KEY}", load_settings(MINIMAL))
