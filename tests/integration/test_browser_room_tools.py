"""
The teacher's tools in the browser, end to end: a real C{twistd -n tmd}, headless
Chromium, an owner, two participants and a projector.

The owner makes a room with questions and pre-approval on the front page; held
questions wait in the owner's queue (their authors see them as pending) until the
owner approves one, edits and approves another and rejects a third; the participants
vote; the projector view shows the top question first with its count, the pinned one
highlighted, and the room's link and QR code (its screenshot is saved to
C{/tmp/projector.png} for people to look at). Then the host posts, locks and unlocks
the room, refuses restricted words, marks a question answered and downloads the
transcript with the statistics.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.integration.daemon import Daemon
from tests.integration.test_browser import (
    DESKTOP,
    PHONE,
    browser,
    check,
    create_room,
    join,
    message,
    post,
    require_browser,
)

ROOM = "physics-101"
TITLE = "Physics 101"
PROJECTOR = (1280, 720)
SCREENSHOT = Path("/tmp/projector.png")

WAVE = "Is light a wave?"
WAVE_EDITED = "Is light a wave or a particle?"
PHOTON = "What is a photon?"
SPAM = "Buy cheap watches!"


# Lets the test hold back the page's live connections (they go to an address that refuses the
# upgrade) and close the open one, as a network that drops for a while would.
LIVE_SWITCH = """
window.__liveBlocked = false;
window.__sockets = [];
window.WebSocket = class extends window.WebSocket {
  constructor(url, protocols) {
    const blocked = window.__liveBlocked;
    super(blocked ? String(url).replace(/\\/live(\\?|$)/, '/blocked$1') : url, protocols);
    if (blocked) document.documentElement.dataset.blocked = 'yes';
    window.__sockets.push(this);
  }
};
"""


def api(url: str, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    """One call to the daemon's API from the test (its thread may block)."""
    request = urllib.request.Request(url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        content = response.read()
    return json.loads(content) if content else None


def create_room_with_tools(page: Any, url: str) -> None:
    """Create the room on the front page with questions and pre-approval on."""
    page.goto(url + "/")
    page.fill("#room-title", TITLE)
    page.fill("#room-name", ROOM)
    page.check("#room-qa")
    page.check("#room-pre")
    page.click("#create-form [type=submit]")
    page.wait_for_url(f"{url}/{ROOM}")


def ask(page: Any, body: str) -> None:
    """Post C{body} as a question; it is held, so it shows as pending to its author."""
    from playwright.sync_api import expect

    page.check("#ask-question")
    post(page, body)
    expect(page.locator("#ask-question")).not_to_be_checked()
    expect(page.locator("#pending-list li", has_text=body)).to_contain_text(
        "Waiting for the owner\N{RIGHT SINGLE QUOTATION MARK}s approval")


def held(page: Any, body: str) -> Any:
    return page.locator("#queue-list li.held", has_text=body)


def vote_button(page: Any, body: str) -> Any:
    return message(page, body).locator("button.vote")


def projected(page: Any) -> Any:
    return page.locator("#present-list li.present-item")


def room_tools_scenario(url: str, artifacts: Path) -> None:
    from playwright.sync_api import expect

    with browser(artifacts) as chromium:
        ada = chromium.page("ada", DESKTOP)  # the owner, who has not joined: she is the host
        grace, alan = chromium.page("grace", PHONE), chromium.page("alan", DESKTOP)
        create_room_with_tools(ada, url)
        expect(ada.locator("#owner-bar")).to_be_visible()
        expect(ada.locator("#queue")).to_be_visible()
        expect(ada.locator("#queue-count")).to_have_text("0")
        for who, page in (("grace", grace), ("alan", alan)):
            page.goto(f"{url}/{ROOM}")
            join(page, who)
            expect(page.locator("#queue")).to_be_hidden()
            expect(page.locator("#ask-label")).to_be_visible()

        # Held: the authors see their posts as pending, nobody else sees them, the owner's
        # queue fills live.
        ask(alan, WAVE)
        ask(grace, PHOTON)
        post(alan, SPAM)
        expect(alan.locator("#pending-list li")).to_have_count(2)
        expect(ada.locator("#queue-count")).to_have_text("3")
        expect(held(ada, PHOTON).locator(".tag-question")).to_have_text("question")
        expect(held(ada, SPAM).locator(".tag-question")).to_have_count(0)
        for page in (ada, grace, alan):
            expect(page.locator("#messages li.message")).to_have_count(0)
        expect(grace.locator("#pending-list li")).to_have_count(1)

        # Edit then approve, approve, reject.
        wave = held(ada, WAVE)
        wave.get_by_role("button", name="Edit").click()
        wave.locator("textarea").fill(WAVE_EDITED)
        wave.get_by_role("button", name="Approve edited").click()
        held(ada, PHOTON).get_by_role("button", name="Approve").click()
        held(ada, SPAM).get_by_role("button", name="Reject").click()
        expect(ada.locator("#queue-list li")).to_have_count(0)
        expect(ada.locator("#queue-count")).to_have_text("0")
        for page in (ada, grace, alan):
            expect(message(page, WAVE_EDITED).locator(".tag-question")).to_have_text("question")
            expect(message(page, WAVE_EDITED).locator(".tag-edited")).to_be_visible()
            expect(message(page, PHOTON).locator(".vote-count")).to_have_text("0")
            expect(message(page, SPAM)).to_have_count(0)
        expect(grace.locator("#pending-list li")).to_have_count(0)
        expect(alan.locator("#pending-list li", has_text=SPAM)).to_contain_text(
            "The owner did not approve this.")
        seqs = grace.eval_on_selector_all("#messages li.message",
                                          "items => items.map(item => item.dataset.seq)")
        check(seqs == ["1", "2"], f"the approved questions' seqs: {seqs}")

        # The projector: read-only, the top questions first, how to join.
        projector = chromium.page("projector", PROJECTOR)
        projector.goto(f"{url}/{ROOM}/present")
        expect(projector.locator("#conn-state")).to_have_attribute("data-state", "live")
        expect(projector.locator("#present-title")).to_have_text(TITLE)
        expect(projector.locator("#view-top")).to_have_attribute("aria-pressed", "true")
        expect(projector.locator("#join-link")).to_have_text(
            re.compile(rf"^127\.0\.0\.1:\d+/{ROOM}$"))
        expect(projector.locator("#qr svg")).to_have_count(1)
        expect(projected(projector)).to_have_count(2)
        expect(projected(projector).first.locator(".body")).to_have_text(WAVE_EDITED)

        # Two participants vote for the photon question, one of them for the other too.
        vote_button(grace, PHOTON).click()
        vote_button(alan, PHOTON).click()
        vote_button(alan, WAVE_EDITED).click()
        expect(vote_button(grace, PHOTON)).to_have_attribute("aria-pressed", "true")
        expect(vote_button(grace, WAVE_EDITED)).to_have_attribute("aria-pressed", "false")
        for page in (ada, grace, alan):
            expect(vote_button(page, PHOTON).locator(".vote-count")).to_have_text("2")
            expect(vote_button(page, WAVE_EDITED).locator(".vote-count")).to_have_text("1")
        expect(vote_button(ada, PHOTON)).to_be_disabled()  # the host does not vote
        top = projected(projector).first
        expect(top.locator(".body")).to_have_text(PHOTON)
        expect(top.locator(".votes")).to_have_text("2")
        expect(projected(projector).nth(1).locator(".votes")).to_have_text("1")

        # A vote taken back: a tie, where the older question comes first; then given again.
        vote_button(alan, PHOTON).click()
        expect(vote_button(alan, PHOTON)).to_have_attribute("aria-pressed", "false")
        expect(projected(projector).first.locator(".body")).to_have_text(WAVE_EDITED)
        vote_button(alan, PHOTON).click()
        expect(top.locator(".body")).to_have_text(PHOTON)
        expect(top.locator(".votes")).to_have_text("2")

        # The chat page orders questions too: top, and newest.
        grace.click("#tab-questions")
        expect(grace.locator("#questions-count")).to_have_text("2")
        expect(grace.locator("#questions li.message").first).to_contain_text(PHOTON)
        grace.click("#question-order [data-order=newest]")
        expect(grace.locator("#questions li.message").first).to_contain_text(PHOTON)
        expect(grace.locator("#questions li.message").nth(1)).to_contain_text(WAVE_EDITED)
        grace.click("#tab-chat")

        # The owner pins the top question: highlighted on the projector and in the rooms.
        photon = message(ada, PHOTON)
        photon.hover()
        photon.locator("[data-action=pin]").click()
        expect(projector.locator("#pinned")).to_be_visible()
        expect(projector.locator("#pinned-body")).to_have_text(PHOTON)
        expect(projector.locator("#pinned-meta")).to_have_text("grace · 2 votes")
        expect(top).to_have_class(re.compile(r"\bpinned-item\b"))
        expect(grace.locator("#pinned-banner")).to_contain_text(PHOTON)
        projector.screenshot(path=str(SCREENSHOT))

        # The host speaks (shown as the host, apart from everyone else); the projector's
        # newest view shows it.
        post(ada, "Welcome, everyone: ask away.")
        welcome = message(grace, "Welcome, everyone")
        expect(welcome.locator(".author")).to_have_text("Host")
        expect(welcome.locator(".tag-host")).to_have_text("host")
        expect(welcome).to_have_class(re.compile(r"\bhost\b"))

        # Locked: only the host posts; unlocked, everyone again.
        ada.click("#owner-lock")
        expect(grace.locator("#room-notice")).to_contain_text("The owner locked the room")
        expect(grace.locator("#body")).to_be_disabled()
        post(ada, "Quiet please: the demo starts.")
        expect(message(alan, "Quiet please")).to_have_count(1)
        ada.click("#owner-unlock")
        expect(grace.locator("#body")).to_be_enabled()
        expect(grace.locator("#room-notice")).to_be_hidden()

        # Restricted words, refused: the post is turned down and the draft kept.
        ada.click("#settings-menu summary")
        ada.fill("#words", "spoiler\nthe answer is")
        ada.select_option("#words-action", "refuse")
        ada.click("#words-form [type=submit]")
        expect(ada.locator("#words-status")).to_have_text("Saved.")
        ada.click("#settings-menu summary")
        grace.fill("#body", "No SPOILER please")
        grace.press("#body", "Enter")
        expect(grace.locator("#post-error")).to_be_visible()
        expect(grace.locator("#post-error")).to_have_attribute("data-code", "restricted")
        expect(grace.locator("#body")).to_have_value("No SPOILER please")

        # Answered: off the projector's list of top questions.
        wave_message = message(ada, WAVE_EDITED)
        wave_message.hover()
        wave_message.locator("[data-action=answer]").click()
        expect(message(grace, WAVE_EDITED).locator(".tag-answered")).to_have_text("answered")
        expect(projected(projector)).to_have_count(1)
        projector.click("#view-newest")
        expect(projected(projector)).to_have_count(4)
        expect(projected(projector).nth(2)).to_contain_text("Welcome, everyone")
        expect(projected(projector).last).to_contain_text("Quiet please")

        # The owner's transcript, with the participation statistics asked for.
        ada.click("#more-menu summary")
        ada.check("#transcript-stats")
        with ada.expect_download() as download:
            ada.click("#transcript-formats [data-format=txt]")
        text = Path(download.value.path()).read_text("utf-8")
        check(PHOTON in text and "Participation" in text, f"the transcript:\n{text}")


def new_room_scenario(url: str, artifacts: Path) -> None:
    """
    grace's connection drops while the room is deleted and made again under its name:
    when she comes back, the welcome says the room is new, and her page starts over
    instead of splicing the new room's messages onto the old one's.
    """
    from playwright.sync_api import expect

    with browser(artifacts, allowed_errors=("WebSocket connection to",)) as chromium:
        ada, grace = chromium.page("ada", DESKTOP), chromium.page("grace", PHONE)
        grace.add_init_script(LIVE_SWITCH)
        owner = create_room(ada, url, ROOM, TITLE)
        join(ada, "ada")
        post(ada, "From the first room")
        grace.goto(f"{url}/{ROOM}")
        expect(message(grace, "From the first room")).to_have_count(1)

        grace.evaluate("window.__liveBlocked = true; window.__sockets.at(-1).close(4000, 'away')")
        expect(grace.locator("html")).to_have_attribute("data-blocked", "yes")
        api(url, "DELETE", f"/api/v1/rooms/{ROOM}", token=owner)
        api(url, "POST", "/api/v1/rooms", {"name": ROOM, "title": "Physics 102"})
        linus = api(url, "POST", f"/api/v1/rooms/{ROOM}/join", {"nickname": "linus"})["token"]
        for body in ("New room, first", "New room, second"):
            api(url, "POST", f"/api/v1/rooms/{ROOM}/messages", {"body": body}, token=linus)
        grace.evaluate("window.__liveBlocked = false")

        expect(message(grace, "New room, second")).to_have_count(1)
        expect(grace.locator("#room-title")).to_have_text("Physics 102")
        expect(message(grace, "From the first room")).to_have_count(0)
        seqs = grace.eval_on_selector_all("#messages li.message",
                                          "items => items.map(item => item.dataset.seq)")
        check(seqs == ["1", "2"], f"grace's messages after the room was made again: {seqs}")


class RoomToolsBrowserTests(TestCase):
    timeout = 120

    def run_scenario(self, scenario: Callable[[str, Path], None]) -> Deferred[None]:
        require_browser(self)

        async def run() -> None:
            daemon = await Daemon.start(self)
            artifacts = Path(self.mktemp()).resolve()
            artifacts.mkdir(parents=True)
            await deferToThread(scenario, daemon.url, artifacts)

        return Deferred.fromCoroutine(run())

    def test_approve_vote_project(self) -> Deferred[None]:
        """
        The owner approves held questions, two participants vote, and the projector
        shows the top question first with its count.
        """
        return self.run_scenario(room_tools_scenario)

    def test_room_made_again(self) -> Deferred[None]:
        """A page that comes back to a room made again under its name starts over."""
        return self.run_scenario(new_room_scenario)
