"""
The browser page end to end: a real C{twistd -n tmd}, headless Chromium, several people.

Playwright's sync API runs in a thread (C{deferToThread}) so the reactor, which
runs the daemon's process protocol, keeps turning. Every wait is one of
Playwright's expectations with a timeout, never a sleep. Every scenario also
checks that each page came with the Content-Security-Policy header and broke
none of it, and that no page logged an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from tests.integration.daemon import Daemon

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 10_000
DESKTOP = (1280, 800)
PHONE = (375, 740)
HH_MM = re.compile(r"^\d\d:\d\d$")  # a message's local time as the page shows it
SEQS = "items => items.map(item => item.dataset.seq)"
ROOM = "physics-101"
TITLE = "Physics 101"

# Reports every CSP violation as a console error, which the watcher below collects.
# (Playwright's init scripts are not subject to the page's CSP.)
CSP_WATCH = """
document.addEventListener('securitypolicyviolation', (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI}`);
});
"""

# A network that lets no websocket through, as behind some proxies: every handshake fails (the
# page's sockets are sent to an address that answers 404 instead of upgrading).
BLOCK_WEBSOCKETS = """
window.WebSocket = class extends window.WebSocket {
  constructor(url, protocols) {
    super(String(url).replace(/\\/live(\\?|$)/, '/blocked$1'), protocols);
  }
};
"""

# What the page says; the tests hold it to these words.
PAUSED = "The owner paused the room: you can read along, but posting is off for now."
CLOSED = "This room is closed for good: you can still read it, but nobody can post any more."
MUTED = ("The room\N{RIGHT SINGLE QUOTATION MARK}s owner has muted you:"
         " you can read along, but you cannot post.")
DELETED = "This room was deleted by its owner"

# Stored-XSS attempts: each must show as the very text typed, and run nothing.
XSS_TITLE = "<img src=x onerror=window.__xss=1>"
XSS_NICKNAME = "<script>window.__xss=1</script>"
XSS_BODIES = [
    "<img src=x onerror=window.__xss=1>",
    "<script>window.__xss=1</script>",
    '<svg onload="window.__xss=1"></svg>',
    '"><iframe src="javascript:window.__xss=1"></iframe>',
    'https://example.org/"onmouseover="window.__xss=1" javascript:window.__xss=1',
]


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


class Browser:
    """
    One headless Chromium; a context (its own localStorage) per person. It collects
    what must never happen: page errors, console errors (CSP violations among them)
    and pages served without the Content-Security-Policy header.
    """

    def __init__(self, playwright: Any, allowed_errors: tuple[str, ...]) -> None:
        self._chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        self._allowed = allowed_errors
        self.pages: dict[str, Any] = {}
        self.problems: list[str] = []

    def page(self, who: str, viewport: tuple[int, int]) -> Any:
        context = self._chromium.new_context(
            viewport={"width": viewport[0], "height": viewport[1]}, accept_downloads=True)
        context.set_default_timeout(WAIT_MS)
        context.add_init_script(CSP_WATCH)
        page = context.new_page()
        page.on("pageerror", lambda error: self.problems.append(f"{who}: {error}"))
        page.on("console", lambda message: self._console(who, message))
        page.on("response", lambda response: self._response(who, response))
        self.pages[who] = page
        return page

    def _console(self, who: str, message: Any) -> None:
        if message.type == "error" and not any(a in message.text for a in self._allowed):
            self.problems.append(f"{who}: console: {message.text}")

    def _response(self, who: str, response: Any) -> None:
        if response.request.resource_type != "document":
            return
        policy = response.headers.get("content-security-policy", "")
        if "script-src 'self'" not in policy or "style-src 'self'" not in policy:
            self.problems.append(f"{who}: {response.url} came without the strict CSP: {policy!r}")

    def screenshots(self, artifacts: Path) -> None:
        for who, page in self.pages.items():
            with contextlib.suppress(Exception):
                page.screenshot(path=str(artifacts / f"browser-{who}.png"))

    def close(self) -> None:
        self._chromium.close()


@contextlib.contextmanager
def browser(artifacts: Path, allowed_errors: tuple[str, ...] = ()) -> Iterator[Browser]:
    """
    A L{Browser} for one scenario: on failure, a screenshot of every page into
    C{artifacts}; at the end, a failure for anything the browser reported.
    C{allowed_errors}: console errors the scenario causes on purpose (the failed
    requests a refused password leaves in the console, say).
    """
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=WAIT_MS)
    with sync_playwright() as playwright:
        chromium = Browser(playwright, allowed_errors)
        try:
            yield chromium
        except BaseException:
            chromium.screenshots(artifacts)
            raise
        finally:
            chromium.close()
    check(not chromium.problems, "the browser reported:\n" + "\n".join(chromium.problems))


def create_room(page: Any, url: str, name: str, title: str, password: str = "") -> str:
    """Create a room on the front page; returns the owner token the page kept."""
    page.goto(url + "/")
    page.fill("#room-title", title)
    page.fill("#room-name", name)
    page.select_option("#room-lifetime", "3600")
    if password:
        page.fill("#room-password", password)
    page.click("#create-form [type=submit]")
    page.wait_for_url(f"{url}/{name}")
    token: str | None = page.evaluate(f"localStorage.getItem('tmd:owner:{name}')")
    check(bool(token), "the front page did not keep the owner token")
    return token or ""


def join(page: Any, nickname: str, password: str = "") -> None:
    from playwright.sync_api import expect

    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")
    page.fill("#nickname", nickname)
    if password:
        page.fill("#join-password", password)
    page.click("#join-form [type=submit]")
    expect(page.locator("#composer")).to_be_visible()
    expect(page.locator("#join-form")).to_be_hidden()
    expect(page.locator("#conn-state")).to_have_attribute("data-state", "live")


def post(page: Any, body: str) -> None:
    """Post with Enter and wait until the server took it (the composer empties)."""
    from playwright.sync_api import expect

    page.fill("#body", body)
    page.press("#body", "Enter")
    expect(page.locator("#body")).to_have_value("")


def message(page: Any, text: str) -> Any:
    return page.locator("#messages li.message", has_text=text)


def accept_next_dialog(page: Any) -> None:
    """The next confirm() is answered OK (unanswered, Playwright dismisses it)."""
    page.once("dialog", lambda dialog: dialog.accept())


def chat_scenario(url: str, artifacts: Path) -> None:
    """
    Create a room on the front page, open it in two browser contexts (separate
    localStorage), join as two people, and chat both ways.
    """
    from playwright.sync_api import expect

    with browser(artifacts) as chromium:
        ada, grace = chromium.page("ada", DESKTOP), chromium.page("grace", PHONE)

        # The front page creates the room and keeps its owner token.
        create_room(ada, url, ROOM, TITLE)
        grace.goto(f"{url}/{ROOM}")

        for who, page in chromium.pages.items():
            expect(page.locator("#room-title")).to_have_text(TITLE)
            join(page, who)
        for page in chromium.pages.values():
            expect(page.locator("#online")).to_have_text("2")

        # ada posts with Enter; grace sees it live.
        post(ada, "Is light a wave?")
        first = message(grace, "Is light a wave?")
        expect(first.locator(".author")).to_have_text("ada")
        expect(first.locator(".body")).to_have_text("Is light a wave?")
        expect(first.locator(".time")).to_have_text(HH_MM)
        expect(ada.locator("li.message.mine")).to_have_count(1)

        # grace posts markup and a link with the button; ada sees text and a safe link.
        grace.fill("#body", "Both. <b>x</b> see https://example.org/duality.")
        grace.click("#send")
        second = message(ada, "example.org")
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
        for page in chromium.pages.values():
            expect(page.locator("#messages li.message")).to_have_count(2)
        ada.reload()
        expect(ada.locator("#conn-state")).to_have_attribute("data-state", "live")
        expect(ada.locator("#composer")).to_be_visible()
        expect(ada.locator("#join-form")).to_be_hidden()
        expect(ada.locator("#messages li.message")).to_have_count(2)
        seqs = ada.eval_on_selector_all("#messages li.message", SEQS)
        check(seqs == ["1", "2"], f"messages out of order after a reload: {seqs}")
        expect(grace.locator("#online")).to_have_text("2")


def moderation_scenario(url: str, artifacts: Path) -> None:
    """
    The owner (ada, on a desktop) moderates while grace (on a phone) takes part:
    delete a message, pause and resume, mute and unmute, the transcript, close the
    room, delete it.
    """
    from playwright.sync_api import expect

    with browser(artifacts) as chromium:
        ada, grace = chromium.page("ada", DESKTOP), chromium.page("grace", PHONE)
        create_room(ada, url, ROOM, TITLE)
        grace.goto(f"{url}/{ROOM}")
        join(ada, "ada")
        join(grace, "grace")

        # Only the room's creator gets the owner controls.
        expect(ada.locator("#owner-bar")).to_be_visible()
        expect(grace.locator("#owner-bar")).to_be_hidden()

        # The owner deletes a message: it disappears from every page.
        post(grace, "Buy cheap watches!")
        post(grace, "What is a photon?")
        expect(grace.locator(".message-actions")).to_have_count(0)
        spam = message(ada, "cheap watches")
        spam.hover()
        accept_next_dialog(ada)
        spam.locator("[data-action=delete]").click()
        for page in (ada, grace):
            expect(message(page, "cheap watches")).to_have_count(0)
            expect(message(page, "What is a photon?")).to_have_count(1)

        # Paused: grace is told, and cannot post; resumed, she can again.
        grace.fill("#body", "Draft while paused")
        ada.click("#owner-pause")
        expect(grace.locator("#room-notice")).to_have_text(PAUSED)
        expect(grace.locator("#room-state")).to_have_text("paused")
        expect(grace.locator("#body")).to_be_disabled()
        expect(grace.locator("#send")).to_be_disabled()
        expect(grace.locator("#body")).to_have_value("Draft while paused")
        expect(ada.locator("#owner-pause")).to_be_hidden()
        ada.click("#owner-resume")
        expect(grace.locator("#room-notice")).to_be_hidden()
        expect(grace.locator("#room-state")).to_be_hidden()
        expect(grace.locator("#body")).to_be_enabled()
        post(grace, "Back again")
        expect(message(ada, "Back again")).to_have_count(1)

        # Muted from one of her messages: grace's post is refused, her draft kept.
        back = message(ada, "Back again")
        back.hover()
        back.locator("[data-action=mute]").click()
        expect(ada.locator("#owner-status")).to_have_text(
            "grace is muted: they can read, but not post.")
        expect(back.locator("[data-action=unmute]")).to_have_count(1)
        grace.fill("#body", "Am I muted?")
        grace.press("#body", "Enter")
        expect(grace.locator("#post-error")).to_have_text(MUTED)
        expect(grace.locator("#body")).to_have_value("Am I muted?")

        # Unmuted from the list of people: her next try goes through.
        ada.click("#people-menu summary")
        row = ada.locator("#people-list li", has_text="grace")
        expect(row.locator(".tag-muted")).to_have_text("muted")
        expect(ada.locator("#people-list li", has_text="ada").locator(".tag-you")).to_be_visible()
        row.get_by_role("button", name="Unmute").click()
        expect(row.get_by_role("button", name="Mute")).to_be_visible()
        expect(row.locator(".tag-muted")).to_have_count(0)
        grace.press("#body", "Enter")
        expect(message(ada, "Am I muted?")).to_have_count(1)
        expect(grace.locator("#post-error")).to_be_hidden()

        # The transcript, as text and as JSON: what is left, not what was deleted.
        ada.click("#more-menu summary")
        expect(ada.locator("#people-list")).to_be_hidden()
        with ada.expect_download() as text_download:
            ada.click("#transcript-formats [data-format=txt]")
        check(text_download.value.suggested_filename == f"{ROOM}-transcript.txt",
              f"transcript file name: {text_download.value.suggested_filename}")
        text = Path(text_download.value.path()).read_text("utf-8")
        check("What is a photon?" in text and "cheap watches" not in text,
              f"the text transcript:\n{text}")
        with ada.expect_download() as json_download:
            ada.click("#transcript-formats [data-format=json]")
        check("Am I muted?" in Path(json_download.value.path()).read_text("utf-8"),
              "the JSON transcript lacks the last message")

        # Closed: read-only for good.
        accept_next_dialog(ada)
        ada.click("#owner-close")
        expect(grace.locator("#room-notice")).to_have_text(CLOSED)
        expect(grace.locator("#body")).to_be_disabled()
        expect(grace.locator("#messages li.message")).to_have_count(3)
        for control in ("#owner-pause", "#owner-resume", "#owner-close"):
            expect(ada.locator(control)).to_be_hidden()

        # Deleted: the owner lands on the front page; grace is told, and the page stops.
        ada.click("#more-menu summary")
        accept_next_dialog(ada)
        ada.click("#owner-delete")
        ada.wait_for_url(f"{url}/")
        check(ada.evaluate(f"localStorage.getItem('tmd:owner:{ROOM}')") is None,
              "the owner token outlived its room")
        expect(grace.locator("#room-notice")).to_contain_text(DELETED)
        expect(grace.locator("#conn-state")).to_have_attribute("data-state", "offline")
        expect(grace.locator("#messages li.message")).to_have_count(0)
        expect(grace.locator("#composer")).to_be_hidden()


def user_text_scenario(url: str, artifacts: Path) -> None:
    """
    Markup in a room title, a nickname and message bodies shows as the text typed,
    live, after a reload and in the owner's list of people, and runs nothing.
    """
    from playwright.sync_api import expect

    with browser(artifacts) as chromium:
        ada, grace = chromium.page("ada", DESKTOP), chromium.page("grace", PHONE)
        create_room(ada, url, ROOM, XSS_TITLE)
        grace.goto(f"{url}/{ROOM}")
        join(grace, XSS_NICKNAME)
        for body in XSS_BODIES:
            post(grace, body)

        def shows_text(page: Any) -> None:
            expect(page.locator("#room-title")).to_have_text(XSS_TITLE)
            check(page.title().startswith(XSS_TITLE), f"document title: {page.title()!r}")
            items = page.locator("#messages li.message")
            expect(items).to_have_count(len(XSS_BODIES))
            for i, body in enumerate(XSS_BODIES):
                expect(items.nth(i).locator(".author")).to_have_text(XSS_NICKNAME)
                expect(items.nth(i).locator(".body")).to_have_text(body)
            for tag in ("img", "script", "svg", "iframe"):
                expect(page.locator(f"#messages {tag}, #room-title {tag}")).to_have_count(0)
            # The one link is the https URL, cut where the quote begins.
            links = page.locator("#messages .body a")
            expect(links).to_have_count(1)
            expect(links).to_have_attribute("href", "https://example.org/")
            links.hover()
            check(page.evaluate("typeof window.__xss") == "undefined", "an injection ran")

        for page in (ada, grace):
            shows_text(page)
        ada.reload()
        shows_text(ada)

        # The owner's list of people and mute notice show the nickname as text.
        ada.click("#people-menu summary")
        person = ada.locator("#people-list .person-name")
        expect(person).to_have_text(XSS_NICKNAME)
        ada.locator("#people-list button").click()
        expect(ada.locator("#owner-status")).to_have_text(
            f"{XSS_NICKNAME} is muted: they can read, but not post.")
        check(ada.evaluate("typeof window.__xss") == "undefined", "an injection ran")


def password_scenario(url: str, artifacts: Path) -> None:
    """
    A room made with a password: a guest reads nothing before joining, is refused
    without the password and with a wrong one, and gets in with the right one;
    the owner reads and downloads the transcript with the owner token.
    """
    from playwright.sync_api import expect

    # A refused password is an HTTP 401, which Chromium logs as a failed request.
    refused = ("the server responded with a status of 401",)
    with browser(artifacts, allowed_errors=refused) as chromium:
        ada, grace = chromium.page("ada", DESKTOP), chromium.page("grace", PHONE)
        create_room(ada, url, ROOM, TITLE, password="correct horse")
        expect(ada.locator("#conn-state")).to_have_attribute("data-state", "live")
        expect(ada.locator("#join-password")).to_be_visible()

        grace.goto(f"{url}/{ROOM}")
        expect(grace.locator("#join-password")).to_be_visible()
        expect(grace.locator("#room-notice")).to_contain_text("This room has a password")
        grace.fill("#nickname", "grace")
        grace.click("#join-form [type=submit]")
        expect(grace.locator("#join-error")).to_have_text(
            "This room has a password: type it to join.")
        grace.fill("#join-password", "battery staple")
        grace.click("#join-form [type=submit]")
        expect(grace.locator("#join-error")).to_have_text("Wrong room password.")
        expect(grace.locator("#composer")).to_be_hidden()
        grace.fill("#join-password", "correct horse")
        grace.click("#join-form [type=submit]")
        expect(grace.locator("#composer")).to_be_visible()
        expect(grace.locator("#join-error")).to_be_hidden()
        expect(grace.locator("#conn-state")).to_have_attribute("data-state", "live")

        # The owner, who has not joined, reads along with the owner token.
        post(grace, "Hello, secret room")
        expect(message(ada, "Hello, secret room")).to_have_count(1)
        ada.click("#more-menu summary")
        with ada.expect_download() as download:
            ada.click("#transcript-formats [data-format=csv]")
        transcript = Path(download.value.path()).read_text("utf-8")
        check("Hello, secret room" in transcript, f"the CSV transcript:\n{transcript}")

        # ...and can join too, with the password.
        join(ada, "ada", password="correct horse")
        post(ada, "Welcome, grace")
        expect(message(grace, "Welcome, grace")).to_have_count(1)
        check(json.loads(ada.evaluate(f"localStorage.getItem('tmd:participant:{ROOM}')"))
              ["nickname"] == "ada", "the participant was not kept")


def slow_down_scenario(url: str, artifacts: Path) -> None:
    """
    With the daemon allowing two posts in a burst, a third is refused: over the
    websocket (an error frame with C{retry_after}) and over HTTP (429 with
    C{Retry-After}) the page says how long to wait, counts down and keeps the draft.
    """
    from playwright.sync_api import expect

    slow_down = re.compile(r"^Slow down: try again in [12] s\.$")
    # A refused HTTP post is a 429, which Chromium logs as a failed request.
    refused = ("the server responded with a status of 429",)
    with browser(artifacts, allowed_errors=refused) as chromium:
        ada, grace = chromium.page("ada", DESKTOP), chromium.page("grace", PHONE)
        create_room(ada, url, ROOM, TITLE)

        # Over the websocket.
        join(ada, "ada")
        post(ada, "One")
        post(ada, "Two")
        ada.fill("#body", "Three")
        ada.press("#body", "Enter")
        expect(ada.locator("#post-error")).to_have_text(slow_down)
        expect(ada.locator("#send")).to_be_disabled()
        expect(ada.locator("#post-error")).to_be_hidden()
        expect(ada.locator("#body")).to_have_value("Three")
        post(ada, "Three")

        # Over HTTP: grace's websocket never says welcome, so she posts with fetch.
        grace.route_web_socket(re.compile(r"/live"), lambda ws: None)
        grace.goto(f"{url}/{ROOM}")
        grace.fill("#nickname", "grace")
        grace.click("#join-form [type=submit]")
        expect(grace.locator("#composer")).to_be_visible()
        expect(grace.locator("#conn-state")).not_to_have_attribute("data-state", "live")
        post(grace, "Uno")
        post(grace, "Dos")
        grace.fill("#body", "Tres")
        grace.click("#send")
        expect(grace.locator("#post-error")).to_have_text(slow_down)
        expect(grace.locator("#send")).to_be_disabled()
        expect(grace.locator("#post-error")).to_be_hidden()
        expect(grace.locator("#body")).to_have_value("Tres")
        post(grace, "Tres")
        for text in ("Uno", "Dos", "Tres"):
            expect(message(ada, text)).to_have_count(1)


def blocked_websocket_scenario(url: str, artifacts: Path) -> None:
    """
    grace's websockets never open: her page follows the room over the event stream
    instead and posts over HTTP, while ada, on a websocket, chats with her; the
    room's deletion reaches her too.
    """
    from playwright.sync_api import expect

    # Chromium logs each failed handshake as an error.
    with browser(artifacts, allowed_errors=("WebSocket connection to",)) as chromium:
        ada, grace = chromium.page("ada", DESKTOP), chromium.page("grace", PHONE)
        grace.add_init_script(BLOCK_WEBSOCKETS)
        streams: list[str] = []
        grace.on("request", lambda request: streams.append(request.url)
                 if "/events" in request.url else None)
        create_room(ada, url, ROOM, TITLE)
        join(ada, "ada")
        post(ada, "Before grace came")

        grace.goto(f"{url}/{ROOM}")
        join(grace, "grace")  # live once the event stream says welcome
        expect(message(grace, "Before grace came")).to_have_count(1)
        check(bool(streams), "grace's page never opened the event stream")
        post(ada, "Welcome, grace")
        expect(message(grace, "Welcome, grace")).to_have_count(1)
        post(grace, "Hello from behind the proxy")
        expect(message(ada, "Hello from behind the proxy")).to_have_count(1)
        expect(grace.locator("li.message.mine")).to_have_count(1)
        for page in (ada, grace):
            expect(page.locator("#online")).to_have_text("2")
        seqs = grace.eval_on_selector_all("#messages li.message", SEQS)
        check(seqs == ["1", "2", "3"], f"grace's messages: {seqs}")

        ada.click("#more-menu summary")
        accept_next_dialog(ada)
        ada.click("#owner-delete")
        expect(grace.locator("#room-notice")).to_contain_text(DELETED)
        expect(grace.locator("#conn-state")).to_have_attribute("data-state", "offline")


class BrowserTests(TestCase):
    timeout = 90

    def run_scenario(self, scenario: Callable[[str, Path], None], *daemon_args: str,
                     ) -> Deferred[None]:
        require_browser(self)

        async def run() -> None:
            daemon = await Daemon.start(self, *daemon_args)
            artifacts = Path(self.mktemp()).resolve()
            artifacts.mkdir(parents=True)
            await deferToThread(scenario, daemon.url, artifacts)

        return Deferred.fromCoroutine(run())

    def test_two_people_chat(self) -> Deferred[None]:
        """
        A room made on the front page; two browsers join it with their own nickname,
        see each other's messages live, and user text is shown as text.
        """
        return self.run_scenario(chat_scenario)

    def test_owner_moderates(self) -> Deferred[None]:
        """
        The room's creator deletes a message, pauses, mutes, downloads the transcript,
        closes and deletes the room; the other participant's page follows live.
        """
        return self.run_scenario(moderation_scenario)

    def test_user_text_stays_text(self) -> Deferred[None]:
        """Stored-XSS attempts in a title, a nickname and messages render as text."""
        return self.run_scenario(user_text_scenario)

    def test_password_room(self) -> Deferred[None]:
        """Joining a password room wants the right password."""
        return self.run_scenario(password_scenario)

    def test_websockets_blocked(self) -> Deferred[None]:
        """Where websockets cannot pass, the page falls back to the event stream and HTTP."""
        return self.run_scenario(blocked_websocket_scenario)

    def test_slow_down(self) -> Deferred[None]:
        """A rate-limited post shows how long to wait and keeps the draft."""
        return self.run_scenario(slow_down_scenario, "--limit", "participant_posts=2/4s")
