"""The Vercel AI SDK's own client (npm ``ai``, pinned in tests/e2e/ai_sdk/deno.json) against the real stack.

The Deno test (tests/e2e/ai_sdk/ai_sdk_client.test.ts) sends with ``DefaultChatTransport``, reads with
``readUIMessageStream``, cuts a stream and resumes it with ``reconnectToStream``; it writes the assistant messages
it built to a file, and this side checks them against what the service stored in ``public.messages``. The npm
packages come from DENO_DIR, filled by devstack/install.sh: nothing is downloaded here (``--cached-only``: a
package missing from the cache fails the test; ``--frozen``: the lockfile pins every package's integrity).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from devstack.stack import DENO, DENO_DIR, ROOT
from tests.e2e.conftest import StackClient

pytestmark = pytest.mark.e2e

SUITE = ROOT / "tests" / "e2e" / "ai_sdk"
CONFIG = SUITE / "deno.json"


def run_deno(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert DENO.exists(), f"{DENO} is missing: run `make install` (devstack/install.sh installs deno)"
    env = {
        **os.environ,
        **(env or {}),
        "DENO_DIR": str(DENO_DIR),
        "DENO_NO_UPDATE_CHECK": "1",
        "NO_COLOR": "1",
    }
    return subprocess.run(
        [str(DENO), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )


async def stored(client: StackClient, turn_id: str) -> dict[str, dict[str, Any]]:
    rows = await client.db.fetch("select * from public.messages where turn_id = $1::uuid", turn_id)
    return {row["role"]: dict(row) for row in rows}


async def test_the_ai_sdk_client_sends_reads_and_resumes_replies_equal_to_the_stored_ones(
    client: StackClient, tmp_path: Path
) -> None:
    user = await client.sign_up("Vera")
    results_file = tmp_path / "results.json"
    env = {
        "SERVICE_URL": client.stack.config.service_url,
        "ACCESS_TOKEN": user.token,
        "RESULTS_FILE": str(results_file),
    }
    result = await asyncio.to_thread(
        run_deno,
        "test",
        "--frozen",
        "--cached-only",
        "--config",
        str(CONFIG),
        f"--allow-net={urlsplit(client.stack.config.service_url).netloc}",
        "--allow-env",
        "--allow-sys=hostname",  # read when `ai` loads (@vercel/oidc's user agent)
        f"--allow-write={results_file}",
        str(SUITE),
        env=env,
    )
    assert result.returncode == 0, f"deno test failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"

    messages = json.loads(results_file.read_text())
    sent = {"hello": "hello", "remember": "remember that my cat is Miso", "resumed": "[[slow]] tell me a long story"}
    assert set(messages) == set(sent)
    for name, message in messages.items():
        turn = await stored(client, message["messageId"])  # the UI message's id is the turn's
        assert turn["user"]["user_id"] == user.id and turn["user"]["content"] == sent[name], name
        assert turn["user"]["status"] == "complete", name
        reply = turn["assistant"]
        assert reply["status"] == "complete", name
        assert message["text"] == reply["content"], name
        assert message["metadata"]["message_id"] == str(reply["id"]), name
        assert message["metadata"]["user_message_id"] == str(turn["user"]["id"]), name
    assert messages["hello"]["text"] == "You said: hello"
    assert messages["resumed"]["text"].split() == [f"slow{i}" for i in range(1, 21)]


def test_the_deno_suite_is_linted_and_formatted() -> None:
    for command in (["lint"], ["fmt", "--check"]):
        result = run_deno(*command, "--config", str(CONFIG), str(SUITE))
        assert result.returncode == 0, f"deno {command[0]} failed:\n{result.stdout}\n{result.stderr}"
