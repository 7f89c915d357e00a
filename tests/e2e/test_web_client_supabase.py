"""The reference web client built to read as it does against a real project (``VITE_READ_FROM=supabase``): threads,
history with feedback, and search come from supabase-js through the API gateway and PostgREST doubles, under the
database's row level security; sign-in goes to the GoTrue double, writes to the service. Debian's Chromium, driven
by Playwright, on the stack's second build of the client (``web_supabase_port``)."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from playwright.async_api import BrowserContext, Response, async_playwright, expect

from devstack.stack import Stack
from tests.e2e.conftest import StackClient
from tests.e2e.test_web_client import CHROMIUM, QUIET, TIMEOUT_MS, replies, send

pytestmark = pytest.mark.e2e


@pytest.fixture
async def context() -> AsyncIterator[BrowserContext]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(TIMEOUT_MS)
        yield context
        await browser.close()


async def test_threads_history_feedback_and_search_are_read_with_supabase_js(
    stack: Stack, client: StackClient, context: BrowserContext
) -> None:
    page = await context.new_page()
    seen: list[tuple[str, str, int]] = []  # (method, path, status) of every response the page got

    def record(response: Response) -> None:
        seen.append((response.request.method, urlsplit(response.url).path, response.status))

    page.on("response", record)

    def reads(path: str) -> list[int]:
        return [status for method, p, status in seen if p == path and method in ("GET", "POST")]

    email = f"{uuid.uuid4().hex[:10]}@example.com"
    await page.goto(f"http://127.0.0.1:{stack.config.web_supabase_port}/")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_label("Your name").fill("Ann")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_label("Message")).to_be_visible()
    user_id = await client.wait_for("select id from auth.users where email = $1", email)

    await send(page, "my cat is called Miso")
    reply = replies(page).last
    await expect(reply).to_contain_text("You said: my cat is called Miso")
    await reply.get_by_role("button", name="Good reply").click()
    await expect(reply.get_by_role("button", name="Good reply")).to_have_attribute("aria-pressed", "true")
    await client.wait_for(
        "select 1 from public.message_feedback f join public.threads t on t.user_id = f.user_id "
        "where f.user_id = $1 and f.rating = 'up' and t.title_source is not null",
        user_id,
    )

    # Reloaded, the page reads the thread list and the history (with the rating) from PostgREST, not the service.
    seen.clear()
    await page.reload()
    await expect(replies(page).last).to_contain_text("You said: my cat is called Miso")
    await expect(replies(page).last.get_by_role("button", name="Good reply")).to_have_attribute("aria-pressed", "true")
    await expect(page.get_by_test_id("thread")).to_have_count(1)
    title = await client.db.fetchval("select title from public.threads where user_id = $1", user_id)
    await expect(page.get_by_test_id("thread")).to_contain_text(title)
    assert reads("/rest/v1/threads") and set(reads("/rest/v1/threads")) == {200}, seen
    assert reads("/rest/v1/messages") and set(reads("/rest/v1/messages")) == {200}, seen
    assert not reads("/api/v1/threads") and not reads("/api/v1/chat/history"), seen

    # Search runs the search_messages function through PostgREST's RPC.
    await page.get_by_role("button", name="Search").click()
    await page.get_by_label("Search messages").fill("Miso")
    await page.get_by_label("Search messages").press("Enter")
    hits = page.get_by_test_id("search-hits")
    await expect(hits).to_contain_text("my cat is called Miso")
    await expect(hits.locator("mark").first).to_have_text(re.compile("^Miso$"))
    assert set(reads("/rest/v1/rpc/search_messages")) == {200}, seen
    # A query the function refuses (only stop words): its sentence is shown, the hits are gone.
    await page.get_by_label("Search messages").fill("the and of")
    await page.get_by_label("Search messages").press("Enter")
    await expect(page.locator(".search .error")).to_contain_text("no word to look for")
    await expect(hits).to_have_count(0)
    assert set(reads("/rest/v1/rpc/search_messages")) == {200, 400}, seen
    assert not reads("/api/v1/chat/search"), seen
