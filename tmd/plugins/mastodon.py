"""
The Mastodon source: public posts with a room's hashtags, from one instance.

With a user access token (Mastodon 4.2 and later want one, scope C{read:statuses}),
each hashtag of an open room is streamed as server-sent events from
C{/api/v1/streaming/hashtag}; a C{delete} event retracts the post from the rooms it
went to (their clients get a C{deleted} frame). Without a token, each hashtag's
public timeline is polled instead, no faster than every 15 s, and the status says
so. Rooms are learnt by polling the store, as the Twitter source does (see there).
"""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlsplit

from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from zope.interface import implementer

from tmd.config import ConfigError, read_secret
from tmd.interfaces import IPluginContext, ITmdPlugin
from tmd.streaming import MAX_LINE, BrokenStream, RoomCap, Seen, ServerSentEvents, Stream

MIN_POLL = 15.0
"""Seconds: the public timelines are polled no faster (rate limits are per address)."""
WORST_FIRST = ("stopped", "backing off", "connecting", "polling", "connected")


class MastodonOptions(usage.Options):
    optParameters = [
        ["instance-url", None, None, "The instance's base URL, e.g. https://mastodon.social."],
        ["streaming-url", None, None,
         "The streaming API's base URL where it is not the instance's (the instance's"
         " /api/v2/instance names it: configuration.urls.streaming); wss:// is read as https://."],
        ["access-token-file", None, None,
         "A file holding a user access token with read:statuses (else env"
         " TMD_MASTODON_ACCESS_TOKEN); without one, tmd polls the public timelines."],
        ["max-posts-per-room", None, 60,
         "The most posts ingested into one room in any hour; 0: no cap.", int],
        ["poll-interval", None, MIN_POLL, "Seconds between polls without a token (15 or more).",
         float],
        ["sync-interval", None, 5.0, "Seconds between looks at the rooms' hashtags.", float],
    ]

    access_token = ""

    def postOptions(self) -> None:
        url = str(self["instance-url"] or "").rstrip("/")
        if not url.startswith(("https://", "http://")):
            raise usage.UsageError("[mastodon] needs instance_url, an http(s) URL.")
        self["instance-url"] = url
        scheme, _, rest = str(self["streaming-url"] or url).rstrip("/").partition("://")
        scheme = {"wss": "https", "ws": "http"}.get(scheme, scheme)
        if scheme not in ("https", "http") or not rest:
            raise usage.UsageError("[mastodon] streaming_url is an http(s) or ws(s) URL.")
        self["streaming-url"] = f"{scheme}://{rest}"
        if self["poll-interval"] < MIN_POLL:
            raise usage.UsageError(f"--poll-interval is {MIN_POLL:g} seconds or more.")
        if self["max-posts-per-room"] < 0 or self["sync-interval"] <= 0:
            raise usage.UsageError(
                "--max-posts-per-room is 0 or more; --sync-interval more than 0.")
        try:
            self.access_token = (
                read_secret(self["access-token-file"]) if self["access-token-file"]
                else os.environ.get("TMD_MASTODON_ACCESS_TOKEN", "").strip())
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


class _Text(HTMLParser):
    """A status's HTML as plain text: paragraphs and line breaks kept, markup dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag == "p" and self.parts:
            self.parts.append("\n\n")
        elif tag in ("script", "style"):
            self._skipping += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """The plain text of Mastodon's status HTML (parsed, never matched with a regex)."""
    parser = _Text()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts).strip()


def _newest_first(statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Statuses by id, newest first (ids are numbers in strings, growing with time)."""
    return sorted(statuses, key=lambda s: (len(s["id"]), s["id"]), reverse=True)


class MastodonSource(Service):
    """Follows the hashtags of the open rooms on one instance, by stream or by poll."""

    log = Logger()

    def __init__(self, context: IPluginContext, options: MastodonOptions,
                 http: HTTPClient | None = None) -> None:
        self.context = context
        self.options = options
        self._http = http
        self._pool: HTTPConnectionPool | None = None
        self._host = urlsplit(options["instance-url"]).hostname or ""
        self.streams: dict[str, Stream] = {}
        """Each followed hashtag (lower-case, no '#') and its stream."""
        self._rooms: dict[str, list[str]] = {}
        self._states: dict[str, tuple[str, str | None]] = {}
        self._newest: dict[str, str] = {}
        """Each polled hashtag's newest status id: the next poll asks for those after it."""
        self._seen = Seen()
        self._cap = RoomCap(options["max-posts-per-room"])
        self._pending: set[Deferred[Any]] = set()
        self._sync = LoopingCall(lambda: Deferred.fromCoroutine(self.sync_rooms()))
        self._sync.clock = context.reactor
        self.ingested = 0
        """Posts added to rooms."""
        self.capped = 0
        """Posts left out because their room was at its cap."""
        self.retracted = 0
        """Messages deleted because their post was deleted."""
        self._ended_reconnects = 0
        """The reconnects of streams no longer followed."""
        context.report_counts(self.counts)

    @property
    def polling(self) -> bool:
        return not self.options.access_token

    @property
    def reconnects(self) -> int:
        return self._ended_reconnects + sum(s.reconnects for s in self.streams.values())

    def counts(self) -> dict[str, int]:
        """The totals /metrics shows for this source."""
        return {"ingested": self.ingested, "capped": self.capped,
                "retracted": self.retracted, "reconnects": self.reconnects}

    def startService(self) -> None:
        super().startService()
        if self._http is None:
            self._pool = HTTPConnectionPool(self.context.reactor)
            self._http = HTTPClient(Agent(self.context.reactor, pool=self._pool))
        if self.polling:
            self.log.warn("mastodon: no access token, so no streaming: polling the public"
                          " hashtag timelines of {instance} every {every} s",
                          instance=self.options["instance-url"],
                          every=self.options["poll-interval"])
        self._publish()
        self._sync.start(self.options["sync-interval"], now=True)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._sync.running:
            self._sync.stop()
        await DeferredList([stream.stop() for stream in self.streams.values()])
        await DeferredList(list(self._pending))
        if self._pool is not None:
            await self._pool.closeCachedConnections()

    async def sync_rooms(self) -> None:
        """Follow the hashtags of the open rooms: start streams for new ones, stop the rest."""
        try:
            rooms = await self.context.store.tagged_rooms(
                int(self.context.reactor.seconds() * 1000))
        except Exception as e:
            self.log.warn("mastodon: cannot read the rooms: {why}", why=str(e))
            return
        by_tag: dict[str, list[str]] = {}
        for room in rooms:
            for hashtag in room.hashtags:
                by_tag.setdefault(hashtag.lstrip("#").lower(), []).append(room.name)
        self._rooms = by_tag
        self._cap.keep([room.name for room in rooms])
        if not self.running:
            return
        for tag in set(self.streams) - set(by_tag):
            stream = self.streams.pop(tag)
            self._ended_reconnects += stream.reconnects
            stream.stop()
            self._states.pop(tag, None)
            self._newest.pop(tag, None)
        for tag in set(by_tag) - set(self.streams):
            self.streams[tag] = self._stream(tag)
            self.streams[tag].start()
        self._publish()

    def _stream(self, tag: str) -> Stream:
        def status(state: str, detail: str | None) -> None:
            if tag in self.streams:
                self._states[tag] = (state, detail)
                self._publish()

        if self.polling:
            return Stream(self.context.reactor, f"mastodon #{tag}", lambda: self._poll(tag),
                          lambda: _Timeline(self, tag), status,
                          pause=self.options["poll-interval"])
        return Stream(self.context.reactor, f"mastodon #{tag}", lambda: self._listen(tag),
                      lambda: _Events(self, tag), status)

    def _publish(self) -> None:
        """One status for C{/healthz}: the worst of the hashtags', with each one's."""
        if not self._states:
            self.context.set_status("idle", "no open room has hashtags"
                                    + ("; no access token: will poll" if self.polling else ""))
            return
        state = min((s for s, _ in self._states.values()), key=WORST_FIRST.index)
        detail = "; ".join(f"#{tag} {s}" + (f" ({d})" if d else "")
                           for tag, (s, d) in sorted(self._states.items()))
        if self.polling:
            detail = "no access token, polling the public timelines: " + detail
        self.context.set_status(state, detail)

    def _listen(self, tag: str) -> Deferred[Any]:
        assert self._http is not None
        return self._http.get(self.options["streaming-url"] + "/api/v1/streaming/hashtag",
                              params={"tag": tag}, unbuffered=True, headers=Headers({
                                  "Authorization": [f"Bearer {self.options.access_token}"],
                                  "Accept": ["text/event-stream"]}))

    def _poll(self, tag: str) -> Deferred[Any]:
        assert self._http is not None
        newest = self._newest.get(tag)
        params = {"min_id": newest, "limit": "40"} if newest else {"limit": "1"}
        return self._http.get(
            self.options["instance-url"] + f"/api/v1/timelines/tag/{quote(tag, safe='')}",
            params=params, unbuffered=True, headers=Headers({"Accept": ["application/json"]}))

    def polled(self, tag: str, statuses: list[dict[str, Any]]) -> None:
        """A timeline's answer: the statuses after the newest seen (on the first, none)."""
        statuses = _newest_first([s for s in statuses if isinstance(s.get("id"), str)])
        if not statuses:
            return
        first = tag not in self._newest
        self._newest[tag] = statuses[0]["id"]
        if not first:  # the first poll only says where "new" starts
            for status in reversed(statuses):
                self.received(tag, status)

    def received(self, tag: str, status: dict[str, Any]) -> None:
        """A status with C{tag}: into each room following it, once."""
        if status.get("reblog") or not isinstance(status.get("id"), str):
            return
        account = status.get("account") or {}
        acct = str(account.get("acct") or account.get("username") or "unknown")
        handle = acct if "@" in acct else f"{acct}@{self._host}"
        text = html_text(str(status.get("content") or ""))
        if status.get("spoiler_text"):
            text = f"CW: {status['spoiler_text']}\n\n{text}"
        source = {"network": "mastodon", "id": status["id"],
                  "url": status.get("url") or status.get("uri")}
        now = self.context.reactor.seconds()
        for room in self._rooms.get(tag, []):
            if not self._seen.add((room, status["id"])):
                continue
            if not self._cap.allow(room, now):
                self.capped += 1
                continue
            self._track(self.context.chat.ingest(room, f"@{handle}", text, source),
                        "ingested", f"status {status['id']} not added to {room}")

    def deleted(self, tag: str, status_id: str) -> None:
        """A status with C{tag} was deleted: so is what it became in the rooms following it."""
        for room in self._rooms.get(tag, []):
            self._track(self.context.chat.retract(room, "mastodon", status_id), "retracted",
                        f"status {status_id} not retracted from {room}", counted=bool)

    def _track(self, work: Any, counter: str, failed: str,
               counted: Any = lambda result: True) -> None:
        pending = Deferred.fromCoroutine(work)
        self._pending.add(pending)

        def done(result: object) -> None:
            self._pending.discard(pending)
            if isinstance(result, Failure):
                self.log.warn("mastodon: {failed}: {why}", failed=failed,
                              why=result.getErrorMessage())
            elif counted(result):
                setattr(self, counter, getattr(self, counter) + 1)

        pending.addBoth(done)


class _Events:
    """One streaming connection's body: server-sent events."""

    log = Logger()

    def __init__(self, source: MastodonSource, tag: str) -> None:
        self._source = source
        self._tag = tag
        self._events = ServerSentEvents()

    def data(self, chunk: bytes) -> None:
        for event in self._events.feed(chunk):
            if event.event == "update":
                try:
                    status = json.loads(event.data)
                except ValueError:
                    self.log.warn("mastodon: an update that is not JSON")
                    continue
                if isinstance(status, dict):
                    self._source.received(self._tag, status)
            elif event.event == "delete":
                self._source.deleted(self._tag, event.data.strip())

    def end(self) -> None:
        pass


class _Timeline:
    """One poll's body: a JSON list of statuses, taken whole once it has all arrived."""

    def __init__(self, source: MastodonSource, tag: str) -> None:
        self._source = source
        self._tag = tag
        self._body = bytearray()

    def data(self, chunk: bytes) -> None:
        self._body.extend(chunk)
        if len(self._body) > 8 * MAX_LINE:
            raise BrokenStream("a timeline page larger than 8 MiB")

    def end(self) -> None:
        statuses = json.loads(self._body)
        if isinstance(statuses, list):
            self._source.polled(self._tag, [s for s in statuses if isinstance(s, dict)])


@implementer(IPlugin, ITmdPlugin)
class MastodonPlugin:
    name = "mastodon"
    description = "Public posts with each room's hashtags, streamed (or polled) from Mastodon."
    options = MastodonOptions

    def makeService(self, context: IPluginContext, options: object) -> MastodonSource:
        assert isinstance(options, MastodonOptions)
        return MastodonSource(context, options)


mastodon = MastodonPlugin()
