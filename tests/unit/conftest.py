"""Fixtures the unit modules share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest


@pytest.fixture(scope="module")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """One client per module: building one loads the CA bundle (~80 ms). pytest-httpx patches the transport
    class, so each test's ``httpx_mock`` still sees every request."""
    async with httpx.AsyncClient() as client:
        yield client
