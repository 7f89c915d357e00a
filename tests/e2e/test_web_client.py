"""The reference web client (examples/web) in a real browser: Debian's Chromium driven by Playwright, against the
whole local stack. The app is the production build, served by ``vite preview``; it signs up and in with supabase-js
against the GoTrue double, chats through ``useChat`` on the AI SDK endpoint, and reads threads and history through
the service (``test_web_client_supabase.py`` runs the build that reads with supabase-js, through the PostgREST
double).

Screenshots of the main screens go to ``.devstack/run/test/screenshots``; with ``UPDATE_SCREENSHOTS=1``, to
``docs/screenshots`` (the README's).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Response, async_playwright, expect

from devstack.stack import ROOT, Stack
from tests.e2e.conftest import StackClient

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
# Chromium's own background traffic (updates, sync, safe browsing) only fails on a machine without internet.
QUIET = ["--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
SLOW_REPLY = " ".join(f"slow{i}" for i in range(1, 21))  # the scripted model's [[slow]] reply: 20 words, 2 s
# How long an action or an expectation waits. A reply can take seconds on a loaded machine (an archival insert is two
# model steps and an embedding through Letta), longer than expect's default of 5 s; both wait as long as each other.
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=QUIET)
        yield browser
        await browser.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    await context.close()


@pytest.fixture(scope="module")
def screenshots(stack: Stack) -> Path:
    folder = ROOT / "docs" / "screenshots" if os.environ.get("UPDATE_SCREENSHOTS") else stack.state_dir / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def web_url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.config.web_port}/"


async def sign_up(page: Page, stack: Stack, client: StackClient, screenshots: Path | None = None) -> uuid.UUID:
    """Create an account in the sign-in screen; returns once the agent is ready and a thread is open."""
    email = f"{uuid.uuid4().hex[:10]}@example.com"
    await page.goto(web_url(stack))
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill("correct horse battery")
    await page.get_by_label("Your name").fill("Ann")
    if screenshots:
        await page.screenshot(path=screenshots / "sign-in.png")
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_label("Message")).to_be_visible()
    return await client.wait_for("select id from auth.users where email = $1", email)


async def send(page: Page, text: str) -> None:
    """Send a message and wait for its reply to start."""
    count = await replies(page).count()
    await page.get_by_label("Message").fill(text)
    await page.get_by_role("button", name="Send").click()
    await expect(replies(page)).to_have_count(count + 1)


def replies(page: Page):  # type: ignore[no-untyped-def]
    return page.get_by_test_id("message-assistant")


async def stored_reply(client: StackClient, user_id: uuid.UUID) -> str:
    """The newest stored reply once its turn has settled."""
    return await client.wait_for(
        "select content from public.messages where user_id = $1 and role = 'assistant' and status = 'complete' "
        "and created_at = (select max(created_at) from public.messages where user_id = $1)",
        user_id,
    )


def is_resume(response: Response) -> bool:
    return re.search(r"/api/v1/chat/ui/[^/]+/stream$", response.url) is not None


async def test_a_reply_streams_survives_a_reload_follows_to_a_second_tab_and_stops(
    stack: Stack, client: StackClient, context: BrowserContext, screenshots: Path
) -> None:
    page = await context.new_page()
    user_id = await sign_up(page, stack, client, screenshots)

    # A streamed reply, equal to what was stored.
    await send(page, "hello there")
    await expect(replies(page).last).to_contain_text("You said: hello there")
    assert await replies(page).last.locator(".text").inner_text() == await stored_reply(client, user_id)

    # Reload in the middle of a reply: the page resumes the running turn (200, not 204) and it continues to the end.
    await send(page, "[[slow]] tell me a story")
    await expect(replies(page).last).to_contain_text("slow2 ")
    async with page.expect_response(is_resume) as resumed:
        await page.reload()
    assert (await resumed.value).status == 200, "the reply had ended before the reload: nothing was resumed"
    await expect(replies(page).last.locator(".text")).to_have_text(SLOW_REPLY)
    assert await stored_reply(client, user_id) == SLOW_REPLY

    # A second tab on the same thread follows the reply that the first one is receiving.
    await send(page, "[[slow]] and another")
    await expect(replies(page).last).to_contain_text("slow2 ")
    second = await context.new_page()
    async with second.expect_response(is_resume) as followed:
        await second.goto(page.url)
    assert (await followed.value).status == 200
    await expect(replies(second).last.locator(".text")).to_have_text(SLOW_REPLY)
    await expect(replies(page).last.locator(".text")).to_have_text(SLOW_REPLY)
    await page.screenshot(path=screenshots / "conversation.png")
    await second.close()

    # Stop: the page stops at once, and the reply is stopped on the server: its turn is stored as cancelled.
    await send(page, "[[slow]] stop me")
    await expect(replies(page).last).to_contain_text("slow2 ")
    await page.get_by_role("button", name="Stop").click()
    await expect(page.get_by_role("button", name="Send")).to_be_visible()
    assert "slow20" not in await replies(page).last.inner_text()
    status = await client.wait_for(
        "select status from public.messages where role = 'assistant' and status <> 'pending' and turn_id = "
        "(select turn_id from public.messages where user_id = $1 and content = '[[slow]] stop me')",
        user_id,
    )
    assert status == "cancelled"


async def test_threads_share_memory_and_the_panels_work(
    stack: Stack, client: StackClient, context: BrowserContext, screenshots: Path
) -> None:
    page = await context.new_page()
    user_id = await sign_up(page, stack, client)
    threads = page.get_by_test_id("thread")

    # A fact told in one thread is known in a new one: the threads share the agent's memory.
    await send(page, "remember that my cat is Miso")
    await expect(replies(page).last.get_by_role("button", name="Good reply")).to_be_visible()
    first_thread = page.url.split("#")[-1]
    await page.get_by_role("button", name="+ New thread").click()
    await expect(page).not_to_have_url(re.compile(re.escape(first_thread)))
    await expect(threads).to_have_count(2)
    await send(page, "What is my cat called?")
    await expect(replies(page).last).to_contain_text("Miso")

    # Thumbs up on that reply.
    await replies(page).last.get_by_role("button", name="Good reply").click()
    await expect(replies(page).last.get_by_role("button", name="Good reply")).to_have_attribute("aria-pressed", "true")
    rating = await client.wait_for(
        "select f.rating from public.message_feedback f join public.messages m on m.id = f.message_id "
        "where m.user_id = $1 and m.content like '%Miso%' and m.role = 'assistant'",
        user_id,
    )
    assert rating == "up"

    # Rename the thread.
    current = threads.filter(has=page.locator(".title")).and_(page.locator("li.current"))
    await current.get_by_role("button", name="Rename").click()
    await page.get_by_label("Thread title").fill("About Miso")
    await page.get_by_label("Thread title").press("Enter")
    await expect(threads.filter(has_text="About Miso")).to_have_count(1)
    assert await client.db.fetchval(
        "select count(*) from public.threads where user_id = $1 and title = 'About Miso' and title_source = 'user'",
        user_id,
    )

    # Branch from the reply: a new thread holding the history up to it; then delete the branch.
    await replies(page).last.get_by_role("button", name="Branch from here").click()
    await expect(threads).to_have_count(3)
    await expect(replies(page).last).to_contain_text("Miso")
    branch = page.url.split("#")[-1]
    assert await client.db.fetchval(
        "select forked_from_message_id is not null from public.threads where id = $1::uuid", branch
    )
    await threads.and_(page.locator("li.current")).get_by_role("button", name="Delete").click()
    await expect(threads).to_have_count(2)
    assert not await client.db.fetchval("select count(*) from public.threads where id = $1::uuid", branch)

    # Memory: what the agent keeps about the user, edited; archival memory searched.
    await send(page, "[[archive my passport expires in 2031]]")
    await expect(replies(page).last).to_contain_text("archived")
    await page.get_by_role("button", name="Memory").click()
    human = page.get_by_label("human block")
    await expect(human).to_have_value(re.compile("Miso"))
    await human.fill((await human.input_value()) + "\nFavourite colour: teal")
    await page.get_by_role("button", name="Save memory").click()
    await expect(page.get_by_text("Saved")).to_be_visible()
    await page.get_by_label("Search archival memory").fill("passport")
    await page.get_by_label("Search archival memory").press("Enter")
    await expect(page.get_by_test_id("archival-hits")).to_contain_text("passport expires in 2031")
    await page.screenshot(path=screenshots / "memory.png")
    token = stack.access_token(user_id)
    memory = await client.http.get(
        f"{stack.config.service_url}/api/v1/agent/memory", headers={"Authorization": f"Bearer {token}"}
    )
    assert "Favourite colour: teal" in next(b["value"] for b in memory.json()["blocks"] if b["label"] == "human")

    # Usage and the budget that is left, as the service reports them.
    await page.get_by_role("button", name="Usage").click()
    budget = await client.http.get(
        f"{stack.config.service_url}/api/v1/user/budget", headers={"Authorization": f"Bearer {token}"}
    )
    await expect(page.get_by_test_id("remaining")).to_have_text(re.compile(r"^\$\d+\.\d{4}$"))
    shown = float((await page.get_by_test_id("remaining").inner_text()).lstrip("$"))
    assert abs(shown - budget.json()["remaining"]) < 0.001
    await page.screenshot(path=screenshots / "usage.png")


async def test_search_finds_a_message_and_opens_its_thread(
    stack: Stack, client: StackClient, context: BrowserContext, screenshots: Path
) -> None:
    page = await context.new_page()
    await sign_up(page, stack, client)
    await send(page, "remember that my cat is Miso")
    await expect(replies(page).last.get_by_role("button", name="Good reply")).to_be_visible()
    first_thread = page.url.split("#")[-1]
    await page.get_by_role("button", name="+ New thread").click()
    await expect(page).not_to_have_url(re.compile(re.escape(first_thread)))

    await page.get_by_role("button", name="Search").click()
    await page.get_by_label("Search messages").fill("Miso")
    await page.get_by_label("Search messages").press("Enter")
    hits = page.get_by_test_id("search-hits")
    await expect(hits).to_contain_text("remember that my cat is Miso")
    await page.screenshot(path=screenshots / "search.png")
    await hits.get_by_role("button").filter(has_text="remember that my cat is Miso").first.click()
    await expect(page).to_have_url(re.compile(re.escape(first_thread)))

    # A query the service refuses (only stop words): the problem's sentence is shown instead of hits.
    await page.get_by_label("Search messages").fill("the and of")
    await page.get_by_label("Search messages").press("Enter")
    await expect(page.locator(".search .error")).to_contain_text("no word to look for")
    await expect(hits).to_have_count(0)
