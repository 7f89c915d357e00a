"""The API reference page: one pinned Scalar file checked by Subresource Integrity, and off in production."""

from __future__ import annotations

import pytest

from devstack.keys import SigningKey
from service.web.docs import SCALAR_INTEGRITY, SCALAR_JS
from tests.integration.support import app_client

pytestmark = pytest.mark.integration


async def test_the_page_loads_one_pinned_script_with_its_integrity_and_nothing_else(
    database_url: str, signing_key: SigningKey
) -> None:
    async with app_client(database_url, signing_key) as client:
        page = await client.get("/schema")
        schema = await client.get("/schema/openapi.json")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f'src="{SCALAR_JS}" integrity="{SCALAR_INTEGRITY}" crossorigin="anonymous"' in page.text
    assert "@latest" not in page.text and "@main" not in page.text
    assert page.text.count("<script src=") == 1 and "<link" not in page.text  # no unpinned stylesheet
    assert schema.status_code == 200 and schema.json()["info"]["title"] == "ai-chat-backend"


@pytest.mark.parametrize("env", [{"ENVIRONMENT": "production", "WEBHOOK_SECRET": "w" * 32}, {"API_DOCS": "false"}])
async def test_the_page_can_be_off_and_the_schema_stays(
    database_url: str, signing_key: SigningKey, env: dict[str, str]
) -> None:
    async with app_client(database_url, signing_key, **env) as client:
        page = await client.get("/schema")
        schema = await client.get("/schema/openapi.json")
    assert "text/html" not in page.headers.get("content-type", "") or "api-reference" not in page.text
    assert schema.status_code == 200
