"""Feedback whose send to Letta failed reaches Letta later, on the real stack: a replica that cannot reach Letta
(connection refused, as when Letta is down or that replica is cut off from it) stores the feedback and fails to send
it; the retry loop of a replica that reaches Letta sends it to the step that wrote the reply."""

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

pytestmark = pytest.mark.e2e

CUT_OFF_PORT = 18002
CUT_OFF = "service-no-letta"
RETRY_INTERVAL = 2.0  # the stack's FEEDBACK_RETRY_INTERVAL_SECONDS


@pytest.fixture(scope="module")
def cut_off_replica(stack: Stack) -> Iterator[str]:
    """A replica whose Letta does not answer (nothing listens on port 9)."""
    url = stack.start_replica(CUT_OFF, CUT_OFF_PORT, LETTA_BASE_URL="http://127.0.0.1:9")
    yield url
    stack.stop_replica(CUT_OFF)


def logged(stack: Stack, name: str, message: str) -> list[dict[str, Any]]:
    """The JSON log lines of process ``name`` whose message is ``message``."""
    lines = stack.processes[name].log_path.read_text(errors="replace").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return [record for record in records if record.get("msg") == message]


async def test_feedback_whose_send_failed_reaches_the_letta_step_later(
    client: StackClient, cut_off_replica: str
) -> None:
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
