"""Letta's version against the versions the service was tested with (service/clients/letta_version.py).

Letta is a pytest-httpx double here, as a failure-path test of our client: the accepted case runs on the real
Letta 0.16.8 in tests/e2e/test_letta_pin.py.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from litestar import Litestar
from litestar.di import Provide
from litestar.testing import AsyncTestClient
from pytest_httpx import HTTPXMock

from service.clients import letta_version
from service.clients.errors import UpstreamError
from service.clients.letta import LettaClient
from service.clients.letta_version import UNTESTED_CODE, LettaVersion, UntestedLettaVersion
from service.clients.litellm import LiteLLMClient
from service.settings import load_settings
from service.web.health import HealthController
from service.web.problems import sentence

LETTA = "http://letta.test"
LITELLM = "http://litellm.test"
HEALTH = f"{LETTA}/v1/health/"
PROVIDER = "provider-1"
ADMIN_KEY = "admin-key-for-letta-version-0123456789"


def health(httpx_mock: HTTPXMock, version: str = "0.16.8", **kwargs: Any) -> None:
    """Letta's answer to GET /v1/health/: ``{"version": ..., "status": "ok"}`` unless ``kwargs`` say otherwise."""
    httpx_mock.add_response(method="GET", url=HEALTH, **(kwargs or {"json": {"version": version, "status": "ok"}}))


def client(http: httpx.AsyncClient, *, allow_untested: bool = False) -> LettaClient:
    """The client as service.wiring builds it: with the version check."""
    return LettaClient(http, LETTA, "letta-password", LettaVersion(http, LETTA, allow_untested=allow_untested))


def version_of(letta: LettaClient) -> LettaVersion:
    assert letta.version is not None
    return letta.version


def paths(httpx_mock: HTTPXMock) -> list[str]:
    return [request.url.path for request in httpx_mock.get_requests()]


async def test_a_tested_version_is_read_once_then_calls_go_straight_to_letta(
    http: httpx.AsyncClient, httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture
) -> None:
    health(httpx_mock)
    for _ in range(2):
        httpx_mock.add_response(method="GET", url=f"{LETTA}/v1/providers/{PROVIDER}", json={"id": PROVIDER})
    letta = client(http)

    with caplog.at_level(logging.INFO, logger="service.letta"):
        await version_of(letta).check_at_start()
        await letta.get_provider(PROVIDER)
        await letta.get_provider(PROVIDER)

    assert paths(httpx_mock) == ["/v1/health/", f"/v1/providers/{PROVIDER}", f"/v1/providers/{PROVIDER}"]
    assert version_of(letta).accepted and version_of(letta).reported == "0.16.8"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [("INFO", "Letta version checked")]
    # The health request carries no password: Letta answers it without one, and it must not leak elsewhere.
    assert "authorization" not in httpx_mock.get_requests()[0].headers


async def test_an_untested_version_stops_the_start_with_a_clear_error(
    http: httpx.AsyncClient, httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture
) -> None:
    health(httpx_mock, "0.17.0")
    version = LettaVersion(http, LETTA, allow_untested=False)

    with pytest.raises(UntestedLettaVersion) as refused, caplog.at_level(logging.INFO, logger="service.letta"):
        await version.check_at_start()

    assert refused.value.version == "0.17.0"
    assert "'0.17.0'" in str(refused.value) and "0.16.8" in str(refused.value)
    assert "LETTA_ALLOW_UNTESTED_VERSION=true" in str(refused.value)
    assert not version.accepted
    [record] = caplog.records
    assert record.levelname == "ERROR" and record.__dict__["letta_version"] == "0.17.0"
    assert record.__dict__["code"] == UNTESTED_CODE


async def test_the_setting_lets_an_untested_version_run_with_a_warning(
    http: httpx.AsyncClient, httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture
) -> None:
    health(httpx_mock, "0.17.0")
    httpx_mock.add_response(method="GET", url=f"{LETTA}/v1/providers/{PROVIDER}", json={"id": PROVIDER})
    letta = client(http, allow_untested=True)

    with caplog.at_level(logging.INFO, logger="service.letta"):
        await version_of(letta).check_at_start()
        await letta.get_provider(PROVIDER)

    assert version_of(letta).accepted
    [record] = caplog.records
    assert record.levelname == "WARNING" and "LETTA_ALLOW_UNTESTED_VERSION" in record.getMessage()
    assert record.__dict__["letta_version"] == "0.17.0"


async def test_an_answer_without_a_version_is_not_a_tested_letta(
    http: httpx.AsyncClient, httpx_mock: HTTPXMock
) -> None:
    health(httpx_mock, text="<html>It works!</html>")
    version = LettaVersion(http, LETTA, allow_untested=False)

    with pytest.raises(UntestedLettaVersion) as refused:
        await version.check_at_start()

    assert refused.value.version == "unknown"


async def test_an_unreachable_letta_does_not_stop_the_start_and_is_checked_before_the_first_call(
    http: httpx.AsyncClient, httpx_mock: HTTPXMock, caplog: pytest.LogCaptureFixture
) -> None:
    httpx_mock.add_exception(httpx.ConnectError("All connection attempts failed"), url=HEALTH)
    health(httpx_mock)
    httpx_mock.add_response(method="GET", url=f"{LETTA}/v1/providers/{PROVIDER}", json={"id": PROVIDER})
    letta = client(http)

    with caplog.at_level(logging.INFO, logger="service.letta"):
        await version_of(letta).check_at_start()  # no exception: a replica must not crash-loop
        assert not version_of(letta).accepted
        await letta.get_provider(PROVIDER)

    assert paths(httpx_mock) == ["/v1/health/", "/v1/health/", f"/v1/providers/{PROVIDER}"]
    assert [r.levelname for r in caplog.records] == ["WARNING", "INFO"]
    assert "ConnectError" in caplog.records[0].__dict__["error"]


async def test_while_letta_cannot_say_its_version_no_call_goes_out(
    http: httpx.AsyncClient, httpx_mock: HTTPXMock
) -> None:
    health(httpx_mock, status_code=502, text="Bad Gateway")
    letta = client(http)

    with pytest.raises(UpstreamError) as failed:
        await letta.get_provider(PROVIDER)

    assert failed.value.transient and failed.value.status == 502
    assert not isinstance(failed.value, UntestedLettaVersion)
    assert paths(httpx_mock) == ["/v1/health/"]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float]]:
    """letta_version's monotonic clock, moved by the test."""
    now = [1000.0]
    monkeypatch.setattr(letta_version.time, "monotonic", lambda: now[0])
    yield now


async def test_a_refused_version_refuses_every_call_and_is_read_again_only_after_a_while(
    http: httpx.AsyncClient, httpx_mock: HTTPXMock, clock: list[float]
) -> None:
    health(httpx_mock, "0.17.0")
    letta = client(http)

    for _ in range(3):  # one read: the calls in between are refused without asking Letta again
        with pytest.raises(UntestedLettaVersion) as refused:
            await letta.get_provider(PROVIDER)
        assert refused.value.transient  # provisioning retries later; chat answers "unavailable, retry"
    turn = letta.turn_request("agent-1", "hi", "otid-1")
    with pytest.raises(UntestedLettaVersion):
        await letta.open_stream(turn)  # no turn ever runs on it
    assert paths(httpx_mock) == ["/v1/health/"]

    # The operator puts Letta 0.16.8 back: the next call after RECHECK_SECONDS reads it and goes through.
    clock[0] += letta_version.RECHECK_SECONDS
    health(httpx_mock)
    httpx_mock.add_response(method="GET", url=f"{LETTA}/v1/providers/{PROVIDER}", json={"id": PROVIDER})
    assert await letta.get_provider(PROVIDER) == {"id": PROVIDER}
    assert paths(httpx_mock) == ["/v1/health/", "/v1/health/", f"/v1/providers/{PROVIDER}"]


async def test_readiness_reads_the_version_every_time_and_catches_a_replaced_letta(
    http: httpx.AsyncClient, httpx_mock: HTTPXMock
) -> None:
    health(httpx_mock)
    health(httpx_mock, "0.32.1")  # someone ran `pip install -U letta` and restarted it
    letta = client(http)

    first = (await letta.health())["letta"]
    second = (await letta.health())["letta"]

    assert first["ok"] is True and first["version"] == "0.16.8" and first["latency_ms"] >= 0
    assert "error" not in first and "code" not in first
    assert second["ok"] is False and second["version"] == "0.32.1" and second["code"] == UNTESTED_CODE
    assert "'0.32.1'" in second["error"]
    assert not version_of(letta).accepted
    with pytest.raises(UntestedLettaVersion):
        await letta.get_provider(PROVIDER)  # calls are refused from then on
    assert paths(httpx_mock) == ["/v1/health/", "/v1/health/"]


async def test_readiness_of_a_letta_that_is_down_has_no_code(http: httpx.AsyncClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_exception(httpx.ConnectError("All connection attempts failed"), url=HEALTH)

    check = (await client(http).health())["letta"]

    assert check["ok"] is False and check["error"].startswith("ConnectError: All connection attempts failed")
    assert "code" not in check and "version" not in check


# -- /health/ready with a refused version --------------------------------------------------------------------


class Database(asyncpg.Pool):  # type: ignore[type-arg]
    """A database that answers readiness's ``select 1`` (the route's type check wants an asyncpg pool)."""

    def __init__(self) -> None:
        pass

    async def fetchval(self, query: str, *args: Any, column: int = 0, timeout: float | None = None) -> Any:
        return 1


def health_app(http: httpx.AsyncClient) -> Litestar:
    """The readiness route with its real dependencies but the database (a stub that answers)."""
    settings = load_settings(
        {
            "DATABASE_URL": "postgresql://unused@127.0.0.1:9/unused",
            "SUPABASE_URL": "http://supabase.test",
            "LETTA_BASE_URL": LETTA,
            "LITELLM_BASE_URL": LITELLM,
            "LITELLM_MASTER_KEY": "sk-master",
            "ADMIN_API_KEY": ADMIN_KEY,
        }
    )
    services: dict[str, Any] = {
        "db": Database(),
        "letta": client(http),
        "litellm": LiteLLMClient(http, LITELLM, "sk-master"),
        "settings": settings,
    }

    def provider(service: Any) -> Provide:
        def provide() -> Any:
            return service

        return Provide(provide, sync_to_thread=False)

    return Litestar([HealthController], dependencies={name: provider(s) for name, s in services.items()})


async def test_readiness_fails_on_an_untested_letta_with_its_code_public_and_the_version_for_admins(
    http: httpx.AsyncClient, httpx_mock: HTTPXMock
) -> None:
    health(httpx_mock, "0.17.0")
    health(httpx_mock, "0.17.0")
    httpx_mock.add_response(method="GET", url=f"{LITELLM}/health/liveliness", json="I'm alive!", is_reusable=True)

    async with AsyncTestClient(health_app(http)) as test_client:
        public = await test_client.get("/health/ready")
        admin = await test_client.get("/health/ready", headers={"Authorization": f"Bearer {ADMIN_KEY}"})

    assert public.status_code == admin.status_code == 503
    detail = sentence(UNTESTED_CODE)
    assert public.json()["checks"]["letta"] == {"ok": False, "code": UNTESTED_CODE, "detail": detail}
    assert public.json()["checks"]["litellm"] == {"ok": True}
    letta = admin.json()["checks"]["letta"]
    assert letta["version"] == "0.17.0" and letta["code"] == UNTESTED_CODE and "'0.17.0'" in letta["error"]
    assert "letta.test" not in public.text
