"""Feedback whose send to Letta failed reaches Letta later, on the real stack: a replica that cannot reach Letta
(connection refused, as when Letta is down or that replica is cut off from it) stores the feedback and fails to send
it; the retry loops of the two replicas that reach Letta send it, once, to the step that wrote the reply."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from devstack.stack import Stack
from tests.e2e.conftest import StackClient
from tests.e2e.test_feedback import letta_step, say
from tests.e2e.test_metrics import samples, value

pytestmark = pytest.mark.e2e

CUT_OFF_PORT = 18002
CUT_OFF = "service-no-letta"
SECOND_PORT = 18003
SECOND = "service-feedback-b"
RETRY_INTERVAL = 2.0  # the stack's FEEDBACK_RETRY_INTERVAL_SECONDS


@pytest.fixture(scope="module")
def cut_off_replica(stack: Stack) -> Iterator[str]:
    """A replica whose Letta does not answer (nothing listens on port 9)."""
    url = stack.start_replica(CUT_OFF, CUT_OFF_PORT, LETTA_BASE_URL="http://127.0.0.1:9")
    yield url
    stack.stop_replica(CUT_OFF)


@pytest.fixture(scope="module")
def second_replica(stack: Stack) -> Iterator[str]:
    """Another replica that reaches Letta: its retry loop competes with the first one's for the same feedback."""
    url = stack.start_replica(SECOND, SECOND_PORT)
    yield url
    stack.stop_replica(SECOND)


async def retries_sent(client: StackClient, urls: list[str]) -> list[float]:
    """Each replica's ``aichat_feedback_retries_total{outcome="sent"}`` (its own /metrics)."""
    admin = {"Authorization": f"Bearer {client.stack.config.admin_api_key}"}
    counts = []
    for url in urls:
        response = await client.http.get(f"{url}/metrics", headers=admin)
        assert response.status_code == 200, response.text
        counts.append(value(samples(response.text), "aichat_feedback_retries_total", outcome="sent"))
    return counts


def logged(stack: Stack, name: str, message: str) -> list[dict[str, Any]]:
    """The JSON log lines of process ``name`` whose message is ``message``."""
    lines = stack.processes[name].log_path.read_text(errors="replace").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return [record for record in records if record.get("msg") == message]


async def test_feedback_whose_send_failed_reaches_the_letta_step_later_once(
    client: StackClient, cut_off_replica: str, second_replica: str
) -> None:
    replicas = [client.stack.config.service_url, second_replica, cut_off_replica]
    sent_before = await retries_sent(client, replicas)
    user = await client.sign_up("Ida")
    reply = await say(client, user, "remember that my cat is Miso")  # two Letta steps: the tool's, the reply's
    message_id = reply["message_id"]

    # Rated on the replica that cannot reach Letta: stored all the same; its send fails.
    rated_at = time.monotonic()
    response = await client.http.put(
        f"{cut_off_replica}/api/v1/chat/messages/{message_id}/feedback",
        headers=user.headers,
        json={"rating": "down", "comment": "Too cheerful."},
    )
    assert response.status_code == 200, response.text
    await client.wait_for(
        "select true from public.message_feedback where message_id = $1", uuid.UUID(message_id), timeout=5
    )
    deadline = time.monotonic() + 10
    while not [r for r in logged(client.stack, CUT_OFF, "feedback not sent to Letta") if r["message_id"] == message_id]:
        assert time.monotonic() < deadline, "the cut-off replica did not log its failed send"
        await asyncio.sleep(0.1)
    row = await client.db.fetchrow(
        "select letta_sent_at, letta_step_id from public.message_feedback where message_id = $1", uuid.UUID(message_id)
    )
    assert (row["letta_sent_at"], row["letta_step_id"]) == (None, None)

    # A replica that reaches Letta sends it at its next pass once it has been unsent for an interval: to the step
    # that wrote the reply, of this turn's run, and that step alone.
    step = await letta_step(client, message_id)
    sent_after = time.monotonic() - rated_at
    assert step["feedback"] == "negative" and step["run_id"] == reply["run_id"]
    assert RETRY_INTERVAL <= sent_after < 3 * RETRY_INTERVAL + 5, sent_after
    steps = await client.letta("GET", f"/v1/runs/{reply['run_id']}/steps")
    assert sorted(str(s["feedback"]) for s in steps) == ["None", "negative"]

    # Sent once, by one of the two replicas that reach Letta, however many passes ran since.
    await asyncio.sleep(2 * RETRY_INTERVAL)
    sent = [after - before for before, after in zip(sent_before, await retries_sent(client, replicas), strict=True)]
    assert sum(sent) == 1 and sent[2] == 0, sent
