"""Issue 15, metrics, on the real stack: a chat turn through the service process moves the turn counter, the
first-delta histogram and Letta's call latency in GET /metrics, which answers the admin key only and names no
user, agent or email."""

from __future__ import annotations

import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import StackClient

pytestmark = pytest.mark.e2e

LETTA_TURN = {"service": "letta", "method": "POST", "route": "/v1/agents/{id}/messages"}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: StackClient) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    admin = {"Authorization": f"Bearer {client.stack.config.admin_api_key}"}
    response = await client.http.get(f"{client.stack.config.service_url}/metrics", headers=admin)
    assert response.status_code == 200, response.text
    return response.text, samples(response.text)


async def test_a_chat_turn_shows_in_the_metrics_without_naming_its_user(client: StackClient) -> None:
    user = await client.sign_up("Mia")
    _, before = await scrape(client)
    events = await client.chat_stream(user, "Hello, how are you?")
    done = events[-1][1]
    assert done["status"] == "complete"
    text, after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("aichat_turns_total", status="complete", error_code="none") >= 1
    assert moved("aichat_turn_duration_seconds_count", status="complete") >= 1
    assert moved("aichat_turn_first_delta_seconds_count") >= 1
    # The first token took some time, less than the whole turn.
    assert (
        0 < moved("aichat_turn_first_delta_seconds_sum") < moved("aichat_turn_duration_seconds_sum", status="complete")
    )
    assert moved("aichat_upstream_request_duration_seconds_count", **LETTA_TURN) >= 1
    assert moved("aichat_http_requests_total", method="POST", route="/api/v1/chat/message", status="200") >= 1
    # Provisioning the user called LiteLLM and Letta, by route template.
    assert (
        value(
            after, "aichat_upstream_request_duration_seconds_count", service="litellm", method="POST", route="/user/new"
        )
        >= 1
    )
    assert (
        value(
            after, "aichat_upstream_request_duration_seconds_count", service="letta", method="POST", route="/v1/agents/"
        )
        >= 1
    )
    # What the service process reads at scrape time.
    assert value(after, "aichat_metrics_database_up") == 1
    assert value(after, "aichat_server_connections_open") >= 1  # this scrape's own connection, at least
    assert value(after, "aichat_provisioning_profiles", state="failed") == 0
    assert value(after, "aichat_db_pool_max_connections") >= 1
    # No user, agent, run or email in any label.
    profile = await client.profile(user.id)
    assert profile is not None
    for secret in (str(user.id), user.email, profile["letta_agent_id"], done["run_id"], done["turn_id"]):
        assert secret not in text
    assert not re.search(r"(agent|run|provider|message)-[0-9a-f]{8}", text)


async def test_metrics_are_refused_without_the_admin_key(client: StackClient) -> None:
    url = f"{client.stack.config.service_url}/metrics"
    anonymous = await client.http.get(url)
    assert anonymous.status_code == 401
    user = await client.sign_up("Ned", wait_active=False)
    refused = await client.http.get(url, headers=user.headers)
    assert refused.status_code == 403 and refused.json()["code"] == "admin_only"
    assert "aichat_" not in anonymous.text + refused.text
