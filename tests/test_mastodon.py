"""
Tests for the Mastodon source (L{tmd.plugins.mastodon}) against a fake instance on a
loopback port: hashtag streams (server-sent events) with a token, polling without
one, deletes retracted from rooms. The source's clock is a L{task.Clock}.
"""

from __future__ import annotations

import json
import os
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from tests.fake_mastodon import FakeMastodon, status
from tests.helpers import ImmediateReactor, eventually, in_thread_now, open_store
from tests.test_twitter import Messages
from tmd.chat import Chat
from tmd.config import Config
from tmd.hub import Hub
from tmd.model import Room
from tmd.pluginhost import PluginContext
from tmd.plugins.mastodon import MastodonOptions, MastodonSource, html_text, mastodon

START = 1_764_000_000.0
TOKEN = "the-access-token"


def options(*argv: str) -> MastodonOptions:
    parsed = MastodonOptions()
    parsed.parseOptions(list(argv))
    return parsed


class OptionsTests(SynchronousTestCase):
    def test_token(self) -> None:
        """The token comes from its file or the environment; without one, tmd polls."""
        self.patch(os, "environ", {"TMD_MASTODON_ACCESS_TOKEN": "from-env"})
        parsed = options("--instance-url", "https://mastodon.example/")
        self.assertEqual((parsed["instance-url"], parsed.access_token),
                         ("https://mastodon.example", "from-env"))
        self.patch(os, "environ", {})
        self.assertEqual(options("--instance-url", "https://m.example").access_token, "")

    def test_streaming_url(self) -> None:
        """Streaming is from the instance unless another URL is given; wss:// means https://."""
        self.assertEqual(options("--instance-url", "https://m.example")["streaming-url"],
                         "https://m.example")
        self.assertEqual(options("--instance-url", "https://m.example", "--streaming-url",
                                 "wss://streaming.m.example/")["streaming-url"],
                         "https://streaming.m.example")

    def test_refused(self) -> None:
        """No instance, or polling faster than every 15 s, stop the daemon at start."""
        for argv, why in [((), "instance_url"),
                          (("--instance-url", "https://m.example", "--poll-interval", "5"),
                           "15 seconds or more"),
                          (("--instance-url", "https://m.example", "--streaming-url",
                            "ftp://m.example"), "streaming_url")]:
            self.assertIn(why, str(self.assertRaises(usage.UsageError, options, *argv)))

    def test_plugin(self) -> None:
        """The plugin object is found by the name C{mastodon} and makes the source."""
        self.assertEqual(mastodon.name, "mastodon")
        context = PluginContext(None, None, None, Config(), ImmediateReactor())  # type: ignore
        self.assertIsInstance(
            mastodon.makeService(context, options("--instance-url", "https://m.example")),
            MastodonSource)


class HtmlTextTests(SynchronousTestCase):
    def test_text(self) -> None:
        """Paragraphs and line breaks stay, markup goes, entities are decoded."""
        self.assertEqual(html_text(
            '<p>Is light a <b>wave</b> &amp; a particle? <a href="https://x.example/tags/phys"'
            ' class="mention hashtag" rel="tag">#<span>phys101</span></a></p>'
            '<p>line one<br />line two &lt;script&gt;</p><script>alert(1)</script>'),
            "Is light a wave & a particle? #phys101\n\nline one\nline two <script>")

    def test_link(self) -> None:
        """Mastodon's shortened links read as the whole URL."""
        self.assertEqual(html_text(
            '<p><a href="https://example.org/a/long/path"><span class="invisible">https://'
            '</span><span class="ellipsis">example.org/a/lo</span><span class="invisible">'
            'ng/path</span></a></p>'), "https://example.org/a/long/path")


class MastodonTestCase(TestCase):
    timeout = 20

    async def setUp(self) -> None:
        self.fake = FakeMastodon(TOKEN)
        self.url = await self.fake.serve(self)
        self.clock = ImmediateReactor()
        self.clock.advance(START)
        self.store = open_store(self, reactor=self.clock)
        self.hub = Hub(self.clock)
        self.chat = Chat(self.store, self.hub, self.clock, in_thread_now)
        self.context = PluginContext(self.chat, self.hub, self.store, Config(), self.clock)
        self.patch(os, "environ", {})

    async def create(self, name: str, *hashtags: str) -> tuple[Room, str]:
        return await self.chat.create_room({"name": name, "hashtags": list(hashtags)})

    def source(self, *argv: str) -> MastodonSource:
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        source = MastodonSource(self.context, options("--instance-url", self.url, *argv),
                                HTTPClient(Agent(reactor, pool=pool)))
        source.startService()
        self.addCleanup(source.stopService)
        return source

    def with_token(self) -> str:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(TOKEN)
        return path


class Frames:
    """Every frame the Hub publishes in a room."""

    def __init__(self, hub: Hub, room: Room) -> None:
        self.frames: list[dict[str, Any]] = []
        hub.subscribe(room.id, self)

    def deliver(self, event: Any) -> None:
        self.frames.append(json.loads(event.frame))


class StreamingTests(MastodonTestCase):
    async def test_update_and_delete(self) -> None:
        """
        With a token, each hashtag is streamed; an update is a social message with the
        full handle, plain text and link; a delete retracts it with a deleted frame.
        """
        room, _ = await self.create("physics-101", "#Phys101")
        messages, frames = Messages(self.hub, room), Frames(self.hub, room)
        opened = self.fake.next_stream()
        source = self.source("--access-token-file", self.with_token())
        stream = await opened
        self.assertEqual(self.fake.calls, ["/api/v1/streaming/hashtag?tag=phys101"])
        await eventually(lambda: self.context.state == "connected")
        self.assertEqual(self.context.detail, "#phys101 connected")
        stream.thump()
        stream.update(status("110", "<p>Is light a wave?<br>Discuss!</p>"))
        stream.update(status("111", "<p>local</p>", acct="grace"))
        message = await messages.next()
        self.assertEqual(
            (message.kind, message.author, message.body, message.source),
            ("social", "@ada@physics.example", "Is light a wave?\nDiscuss!",
             {"network": "mastodon", "id": "110", "url": "https://physics.example/@ada/110"}))
        self.assertEqual((await messages.next()).author, "@grace@127.0.0.1")
        stream.delete("110")
        await eventually(lambda: source.retracted == 1)
        self.assertEqual(frames.frames[-1], {"type": "deleted", "seq": message.seq})
        page, _ = await self.chat.messages(room, 0, 10)
        self.assertEqual([m.body for m in page], ["local"])
        self.assertEqual(self.context.counts(),  # what /metrics shows
                         {"ingested": 2, "capped": 0, "retracted": 1, "reconnects": 0})

    async def test_streaming_elsewhere(self) -> None:
        """With a streaming URL of its own, the instance is not asked for the stream."""
        room, _ = await self.create("physics-101", "#phys101")
        messages = Messages(self.hub, room)
        opened = self.fake.next_stream()
        self.source("--access-token-file", self.with_token(),
                    "--instance-url", "http://127.0.0.1:9", "--streaming-url", self.url)
        (await opened).update(status("110", "<p>from the streaming host</p>"))
        self.assertEqual((await messages.next()).body, "from the streaming host")

    async def test_rooms_followed(self) -> None:
        """A hashtag is streamed while an open room has it; two rooms share one stream."""
        one, owner = await self.create("one", "#phys101")
        two, owner_two = await self.create("two", "#phys101", "#optics")
        into_one, into_two = Messages(self.hub, one), Messages(self.hub, two)
        first = self.fake.next_stream()
        source = self.source("--access-token-file", self.with_token())
        await first
        await eventually(lambda: len(self.fake.streams) == 2)
        self.assertEqual(sorted(s.tag for s in self.fake.streams), ["optics", "phys101"])
        phys = next(s for s in self.fake.streams if s.tag == "phys101")
        optics = next(s for s in self.fake.streams if s.tag == "optics")
        phys.update(status("1", "<p>to both</p>", tags=[{"name": "phys101"}, {"name": "optics"}]))
        optics.update(status("1", "<p>to both</p>"))  # the same post on the other stream
        optics.update(status("2", "<p>optics only</p>", tag="optics"))
        self.assertEqual((await into_one.next()).body, "to both")
        self.assertEqual([(await into_two.next()).body for _ in range(2)],
                         ["to both", "optics only"])
        await eventually(lambda: source.ingested == 3)
        await self.chat.update_room("one", owner, {"state": "closed"})
        self.clock.advance(5)  # "two" still has both hashtags: both streams stay
        self.assertEqual(sorted(source.streams), ["optics", "phys101"])
        await self.chat.update_room("two", owner_two, {"hashtags": ["#optics"]})
        self.clock.advance(5)  # no open room has #phys101 now: its stream is closed
        await phys.lost
        self.assertEqual(sorted(source.streams), ["optics"])

    async def test_unauthorized(self) -> None:
        """A refused token stops each stream, saying so in the status."""
        await self.create("physics-101", "#phys101")
        self.fake.token = "another"
        self.source("--access-token-file", self.with_token())
        await eventually(lambda: self.context.state == "stopped")
        self.assertIn("401", self.context.detail or "")
        self.flushLoggedErrors()


class PollingTests(MastodonTestCase):
    async def test_polling(self) -> None:
        """
        Without a token, the public timeline is polled every 15 s (and the status says
        so): the first poll marks where new starts, later ones bring the new, in order.
        """
        room, _ = await self.create("physics-101", "#phys101")
        messages = Messages(self.hub, room)
        self.fake.timelines["phys101"] = [status("100", "<p>old</p>")]
        polled = self.fake.next_poll()
        source = self.source()
        self.assertEqual(await polled, "/api/v1/timelines/tag/phys101?limit=1")
        await eventually(lambda: self.context.state == "polling")
        self.assertEqual(self.context.detail, "no access token, polling the public timelines:"
                                              " #phys101 polling (every 15 s)")
        self.fake.timelines["phys101"] = [status("102", "<p>second</p>"),
                                          status("101", "<p>first</p>"),
                                          status("100", "<p>old</p>")]
        polled = self.fake.next_poll()
        self.clock.advance(14.9)
        self.assertFalse(polled.called)
        self.clock.advance(0.1)
        self.assertEqual(await polled, "/api/v1/timelines/tag/phys101?min_id=100&limit=40")
        self.assertEqual([(await messages.next()).body for _ in range(2)], ["first", "second"])
        polled = self.fake.next_poll()
        self.clock.advance(15)
        self.assertEqual(await polled, "/api/v1/timelines/tag/phys101?min_id=102&limit=40")
        await eventually(lambda: source.ingested == 2)
