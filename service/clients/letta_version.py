"""The Letta server's version, held to the versions this service was tested with.

Letta 0.16.8 is the last release of the server (``letta-ai/letta`` was archived on 2026-08-15), and PyPI's
``letta`` from 0.32 on is another product under the same name: a Letta answering with any other version is one
this service never ran against. Letta reports its version on ``GET /v1/health/``, which it answers without its
password.

- At start-up an untested version stops the service (``check_at_start`` raises) unless
  ``LETTA_ALLOW_UNTESTED_VERSION`` is on, which logs a warning instead. A Letta that does not answer does not
  stop it: a replica must not crash-loop while Letta restarts.
- Until a version was accepted, every Letta call first reads it (``LettaClient`` calls ``verify``): no turn ever
  runs on an unchecked or refused Letta. A refused one fails the call as ``UntestedLettaVersion``, a transient
  ``UpstreamError``: callers treat it as Letta being down (chat answers 503 ``agent_unavailable``, provisioning
  retries). It is read again at most every ``RECHECK_SECONDS``, so putting a tested Letta back needs no restart.
- Every readiness probe reads the version again (``probe``), so a Letta replaced under a running service is
  caught there: readiness fails with the code ``letta_version_untested``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from service.clients.errors import UpstreamError
from service.clients.letta_stream import SERVICE

logger = logging.getLogger("service.letta")

# The Letta server versions this service is tested with (the local stack and CI run 0.16.8).
TESTED_LETTA_VERSIONS: frozenset[str] = frozenset({"0.16.8"})

# Readiness reports a refused version with this code (service.web.problems.ERRORS).
UNTESTED_CODE = "letta_version_untested"
# Between two reads of a refused version by Letta calls (readiness probes read it every time).
RECHECK_SECONDS = 10.0
READ_TIMEOUT_SECONDS = 3.0


def _tested() -> str:
    return ", ".join(sorted(TESTED_LETTA_VERSIONS))


class UntestedLettaVersion(UpstreamError):
    """Letta reports a version outside ``TESTED_LETTA_VERSIONS`` and untested versions are not allowed."""

    def __init__(self, version: str) -> None:
        super().__init__(
            SERVICE,
            f"Letta reports version {version!r}, not one this service was tested with ({_tested()}); "
            "set LETTA_ALLOW_UNTESTED_VERSION=true to run on it anyway",
            transient=True,  # an operator can replace Letta without restarting the service
        )
        self.version = version


class LettaVersion:
    """What Letta's ``/v1/health/`` says, judged against ``TESTED_LETTA_VERSIONS``."""

    def __init__(self, http: httpx.AsyncClient, base_url: str, *, allow_untested: bool) -> None:
        self._http = http
        self._url = f"{base_url.rstrip('/')}/v1/health/"
        self._allow_untested = allow_untested
        self.reported: str | None = None  # the version Letta last answered with
        self.accepted = False
        self._read_at = 0.0
        self._lock = asyncio.Lock()  # one read at a time: the first calls after start-up wait for one answer

    async def read(self) -> str:
        """Letta's version; ``UpstreamError`` when Letta does not answer. An answer without a version (not Letta
        0.16.8's health, whatever answers there) reads as ``"unknown"``, which is not a tested version."""
        try:
            response = await self._http.get(self._url, timeout=READ_TIMEOUT_SECONDS)
        except httpx.HTTPError as exc:
            raise UpstreamError.from_transport(SERVICE, exc) from exc
        if response.is_error:
            raise UpstreamError.from_response(SERVICE, response)
        try:
            body = response.json()
        except ValueError:
            body = None
        version = body.get("version") if isinstance(body, dict) else None
        return version if isinstance(version, str) and version else "unknown"

    def judge(self, version: str) -> None:
        """Accept ``version`` or raise ``UntestedLettaVersion``; logs once per version seen."""
        changed = version != self.reported
        self.reported, self._read_at = version, time.monotonic()
        if version in TESTED_LETTA_VERSIONS:
            self.accepted = True
            if changed:
                logger.info("Letta version checked", extra={"letta_version": version})
            return
        if self._allow_untested:
            self.accepted = True
            if changed:
                logger.warning(
                    "Letta runs a version this service was not tested with; LETTA_ALLOW_UNTESTED_VERSION is on",
                    extra={"letta_version": version, "tested_versions": _tested()},
                )
            return
        was_accepted, self.accepted = self.accepted, False
        if changed or was_accepted:
            logger.error(
                "Letta runs a version this service was not tested with: the service does not start on it, or once "
                "running refuses every Letta call and fails readiness, until Letta runs a tested version "
                "(or LETTA_ALLOW_UNTESTED_VERSION=true)",
                extra={"letta_version": version, "tested_versions": _tested(), "code": UNTESTED_CODE},
            )
        raise UntestedLettaVersion(version)

    async def verify(self) -> None:
        """Return once Letta runs an accepted version, reading it unless already accepted; raises
        ``UntestedLettaVersion``, or ``UpstreamError`` when Letta does not answer."""
        if self.accepted:
            return
        async with self._lock:
            if self.accepted:
                return
            if self.reported is not None and time.monotonic() - self._read_at < RECHECK_SECONDS:
                raise UntestedLettaVersion(self.reported)
            self.judge(await self.read())

    async def check_at_start(self) -> None:
        """Start-up: raise ``UntestedLettaVersion`` on an untested version; a Letta that does not answer is
        checked later (next readiness probe or Letta call), not a reason to stop."""
        try:
            await self.verify()
        except UntestedLettaVersion:
            raise
        except UpstreamError as exc:
            logger.warning(
                "Letta's version could not be read at start-up: it is checked when Letta answers "
                "(readiness probe or first call), and no call goes to Letta before",
                extra={"error": str(exc)},
            )

    async def probe(self) -> dict[str, Any]:
        """Readiness: ``{"letta": {"ok", "latency_ms", "version"?, "error"?, "code"?}}``, reading the version anew."""
        started = time.perf_counter()
        result: dict[str, Any] = {"ok": True}
        try:
            version = await self.read()
            result["version"] = version
            self.judge(version)
        except UntestedLettaVersion as exc:
            result.update(ok=False, error=str(exc).removeprefix(f"{SERVICE}: "), code=UNTESTED_CODE)
        except UpstreamError as exc:
            result.update(ok=False, error=str(exc).removeprefix(f"{SERVICE}: "))
        result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
        return {SERVICE: result}
