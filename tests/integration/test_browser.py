"""
The browser page end to end: a real C{twistd -n tmd}, headless Chromium, two people.

Playwright's sync API runs in a thread (C{deferToThread}) so the reactor, which
runs the daemon's process protocol, keeps turning. Every wait is one of
Playwright's expectations with a timeout, never a sleep.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.daemon import Daemon

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 10_000
HH_MM = re.compile(r"^\d\d:\d\d$")  # a message's local time as the page shows it
SEQS = "items => items.map(item => item.dataset.seq)"
ROOM = "physics-101"
TITLE = "Physics 101"


def require_browser(test: TestCase) -> None:
    """Skip without Chromium or Playwright, except in CI, where that is a failure."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "Playwright for Python is not installed (pip install playwright)"
    if reason is None:
        return
    if os.environ.get("CI"):
        test.fail(f"the browser test cannot run in CI: {reason}")
    raise SkipTest(f"the browser test needs headless Chromium: {reason}")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def chat_scenario(url: str, artifacts: Path) -> None:
    """
    Create a room on the front page, open it in two browser contexts (separate
    localStorage), join as two people, and chat both ways.
    """
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    problems: list[str] = []

    def watch(page: Any, who: str) -> None:
        page.on("pageerror", lambda error: problems.append(f"{who}: {error}"))
        page.on("console", lambda message: problems.append(f"{who}: console: {message.text}")
                if message.type == "error" else None)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        pages: dict[str, Any] = {}
        try:
            for who, viewport in (("ada", (1280, 800)), ("grace", (375, 740))):
                context = browser.new_context(
                    viewport={"width": viewport[0], "height": viewport[1]})
                context.set_default_timeout(WAIT_MS)
                pages[who] = context.new_page()
                watch(pages[who], who)
            ada, grace = pages["ada"], pages["grace"]

            # The front page creates the room and keeps its owner token.
            ada.goto(url + "/")
            ada.fill("#room-title", TITLE)
            ada.fill("#room-name", ROOM)
            ada.select_option("#room-lifetime", "3600")
            ada.click("#create-form [type=submit]")
            ada.wait_for_url(f"{url}/{ROOM}")
            owner_token = ada.evaluate(f"localStorage.getItem('tmd:owner:{ROOM}')")
            check(bool(owner_token), "the front page did not keep the owner token")
            grace.goto(f"{url}/{ROOM}")

            for who, page in pages.items():
                expect(page.locator("#room-title")).to_have_text(TITLE)
                expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")
                page.fill("#nickname", who)
                page.click("#join-form [type=submit]")
                expect(page.locator("#composer")).to_be_visible()
                expect(page.locator("#join-form")).to_be_hidden()
                expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")
            for page in pages.values():
                expect(page.locator("#online")).to_have_text("2")

            # ada posts with Enter; grace sees it live.
            ada.fill("#body", "Is light a wave?")
            ada.press("#body", "Enter")
            first = grace.locator("#messages li.message", has_text="Is light a wave?")
            expect(first.locator(".author")).to_have_text("ada")
            expect(first.locator(".body")).to_have_text("Is light a wave?")
            expect(first.locator(".time")).to_have_text(HH_MM)
            expect(ada.locator("#body")).to_have_value("")
            expect(ada.locator("li.message.mine")).to_have_count(1)

            # grace posts markup and a link with the button; ada sees text and a safe link.
            grace.fill("#body", "Both. <b>x</b> see https://example.org/duality.")
            grace.click("#send")
            second = ada.locator("#messages li.message", has_text="example.org")
            expect(second.locator(".author")).to_have_text("grace")
            expect(second.locator(".body")).to_have_text(
                "Both. <b>x</b> see https://example.org/duality.")
            expect(second.locator("b")).to_have_count(0)
            link = second.locator(".body a")
            expect(link).to_have_attribute("href", "https://example.org/duality")
            expect(link).to_have_attribute("target", "_blank")
            expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
            expect(grace.locator("#body")).to_have_value("")

            # The counter counts code points; over the limit, sending is off.
            grace.fill("#body", "\N{GRINNING FACE}" * 281)
            expect(grace.locator("#counter")).to_have_text("281 / 280")
            expect(grace.locator("#counter")).to_have_attribute("data-level", "over")
            expect(grace.locator("#send")).to_be_disabled()

            # Both see the same list in seq order; a reload keeps ada's nickname.
            for page in pages.values():
                expect(page.locator("#messages li.message")).to_have_count(2)
            ada.reload()
            expect(ada.locator("#conn-state")).to_have_attribute("data-state", "live")
            expect(ada.locator("#composer")).to_be_visible()
            expect(ada.locator("#join-form")).to_be_hidden()
            expect(ada.locator("#messages li.message")).to_have_count(2)
            seqs = ada.eval_on_selector_all("#messages li.message", SEQS)
            check(seqs == ["1", "2"], f"messages out of order after a reload: {seqs}")
            expect(grace.locator("#online")).to_have_text("2")
        except BaseException:
            for who, page in pages.items():  # what each browser showed, for the failure
                with contextlib.suppress(Exception):
                    page.screenshot(path=str(artifacts / f"browser-{who}.png"))
            raise
        finally:
            browser.close()
    check(not problems, "errors in the browser console:\n" + "\n".join(problems))


class BrowserTests(TestCase):
    timeout = 90

    def test_two_people_chat(self) -> Deferred[None]:
        """
        A room made on the front page; two browsers join it with their own nickname,
        see each other's messages live, and user text is shown as text.
        """
        require_browser(self)
        return Deferred.fromCoroutine(self._two_people_chat())

    async def _two_people_chat(self) -> None:
        daemon = await Daemon.start(self)
        artifacts = Path(self.mktemp()).resolve()
        artifacts.mkdir(parents=True)
        await deferToThread(chat_scenario, daemon.url, artifacts)
