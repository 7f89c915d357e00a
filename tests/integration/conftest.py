"""Fixtures the integration modules share (the database fixtures are in tests/conftest.py)."""

from __future__ import annotations

import pytest

from devstack.keys import SigningKey


@pytest.fixture(scope="module")
def signing_key() -> SigningKey:
    """The key the module's access tokens are signed with; the app under test gets its JWKS."""
    return SigningKey.generate()
