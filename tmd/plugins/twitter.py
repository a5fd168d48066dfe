"""
The Twitter/X source: posts matching a room's hashtags, from the X API v2 filtered stream.

Each open room with hashtags has one stream rule (C{#a OR #b}) tagged
C{tmd:room:<name>}; the stream says which rules a post matched, so the tag routes
it. Rooms are learnt by polling the store every few seconds (L{IStore.tagged_rooms})
rather than by listening for events: a room opens, changes, closes or expires on
any daemon sharing the database, and expiry is no event at all, while one cheap
query sees all of it. The rules are changed only when the rooms differ from them.

The stream itself is a L{tmd.streaming.Stream}: newline-delimited JSON read as it
arrives, keep-alives, stall detection and X's back-off rules.
"""

from __future__ import annotations

import html
import json
import os
from typing import Any

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
from tmd.model import Room
from tmd.streaming import Lines, RoomCap, Seen, Stream

RULE_PREFIX = "tmd:"
"""Rules tagged so are tmd's to manage; others on the account are left alone."""
ROOM_TAG = "tmd:room:"
STREAM_FIELDS = {"tweet.fields": "author_id,created_at", "expansions": "author_id",
                 "user.fields": "username"}


class TwitterOptions(usage.Options):
    optParameters = [
        ["bearer-token-file", None, None,
         "A file holding the app's bearer token (else env TMD_TWITTER_BEARER_TOKEN)."],
        ["api-url", None, "https://api.x.com", "The X API's base URL."],
        ["max-posts-per-room", None, 60,
         "The most posts ingested into one room in any hour; 0: no cap.", int],
        ["sync-interval", None, 5.0, "Seconds between looks at the rooms' hashtags.", float],
    ]

    bearer_token = ""

    def postOptions(self) -> None:
        self["api-url"] = self["api-url"].rstrip("/")
        if not self["api-url"].startswith(("https://", "http://")):
            raise usage.UsageError("--api-url must be an http(s) URL.")
        if self["max-posts-per-room"] < 0 or self["sync-interval"] <= 0:
            raise usage.UsageError(
                "--max-posts-per-room is 0 or more; --sync-interval more than 0.")
        try:
            token = (read_secret(self["bearer-token-file"]) if self["bearer-token-file"]
                     else os.environ.get("TMD_TWITTER_BEARER_TOKEN", "").strip())
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        if not token:
            raise usage.UsageError("Twitter needs a bearer token: set bearer_token_file in"
                                   " [twitter] or the TMD_TWITTER_BEARER_TOKEN variable.")
        self.bearer_token = token


def wanted_rules(rooms: list[Room]) -> dict[str, str]:
    """
    The rules tmd wants for C{rooms}, tag to value: one per distinct value (X refuses two
    rules with the same value), tagged with the first room that wants it.
    """
    by_value: dict[str, str] = {}
    for room in rooms:
        by_value.setdefault(" OR ".join(room.hashtags), ROOM_TAG + room.name)
    return {tag: value for value, tag in by_value.items()}


class RulesError(Exception):
    """The rules endpoint answered with an error."""


class TwitterSource(Service):
    """Keeps the stream rules in step with the rooms, and the stream's posts flowing in."""

    log = Logger()

    def __init__(self, context: IPluginContext, options: TwitterOptions,
                 http: HTTPClient | None = None) -> None:
        self.context = context
        self.options = options
        self._http = http
        self._pool: HTTPConnectionPool | None = None
        self._rules: dict[str, tuple[str, str]] | None = None
        """tmd's rules on the account, id to (tag, value), as last known; None: to be read."""
        self._refused: set[tuple[str, str]] = set()
        self._rooms: dict[str, list[str]] = {}
        """Rule tag to the rooms it feeds (rooms with the same hashtags share a rule)."""
        self._seen = Seen()
        self._cap = RoomCap(options["max-posts-per-room"])
        self._ingesting: set[Deferred[Any]] = set()
        self._syncing: Deferred[None] | None = None
        self._sync = LoopingCall(self._sync_now)
        self._sync.clock = context.reactor
        self.stream = Stream(context.reactor, "twitter", self._connect,
                             lambda: _Tweets(self), self._status)
        self._streaming = False
        self.ingested = 0
        """Posts added to rooms."""
        self.capped = 0
        """Posts left out because their room was at its cap."""
        self.refused = 0
        """Posts the chat refused (the room closed or paused since, say)."""
        context.report_counts(self.counts)

    @property
    def reconnects(self) -> int:
        return self.stream.reconnects

    def counts(self) -> dict[str, int]:
        """The totals /metrics shows for this source: each ingested post costs money."""
        return {"ingested": self.ingested, "capped": self.capped, "refused": self.refused,
                "reconnects": self.reconnects}

    def startService(self) -> None:
        super().startService()
        if self._http is None:
            self._pool = HTTPConnectionPool(self.context.reactor)
            self._http = HTTPClient(Agent(self.context.reactor, pool=self._pool))
        self.context.set_status("connecting", "syncing the stream rules")
        self._sync.start(self.options["sync-interval"], now=True)

    def _stream_once_synced(self) -> None:
        """After the first sync (done or failed), so no stale rule feeds the first posts."""
        if self.running and not self._streaming:
            self._streaming = True
            self.stream.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._sync.running:
            self._sync.stop()
        if self._syncing is not None:
            self._syncing.cancel()
        await self.stream.stop()
        await DeferredList(list(self._ingesting))
        if self._pool is not None:
            await self._pool.closeCachedConnections()

    def _status(self, state: str, detail: str | None) -> None:
        self.context.set_status(state, detail)
        if state == "stopped" and self._sync.running:  # the token was refused: all is off
            self._sync.stop()

    def _sync_now(self) -> Deferred[None]:
        self._syncing = Deferred.fromCoroutine(self.sync_rules())
        return self._syncing

    async def sync_rules(self) -> None:
        """Add and delete stream rules so that each open room with hashtags has its own."""
        try:
            await self._sync_rules()
        except Exception as e:
            self._rules = None  # read them again next time
            if self.running:
                self.log.warn("twitter: cannot sync the stream rules: {why}", why=str(e))
        self._syncing = None
        self._stream_once_synced()

    async def _sync_rules(self) -> None:
        rooms = await self.context.store.tagged_rooms(int(self.context.reactor.seconds() * 1000))
        wanted = wanted_rules(rooms)
        self._route(rooms, wanted)
        if self._rules is None:
            self._rules = await self._read_rules()
        stale = [id for id, (tag, value) in self._rules.items() if wanted.get(tag) != value]
        have = set(self._rules.values())
        missing = [(tag, value) for tag, value in wanted.items()
                   if (tag, value) not in have and (tag, value) not in self._refused]
        if stale:
            await self._change({"delete": {"ids": stale}})
            for id in stale:
                del self._rules[id]
            self.log.info("twitter: deleted {count} stream rules", count=len(stale))
        if missing:
            answer = await self._change({"add": [{"value": v, "tag": t} for t, v in missing]})
            for rule in answer.get("data", []):
                self._rules[rule["id"]] = (rule["tag"], rule["value"])
            for error in answer.get("errors", []):
                self.log.warn("twitter: rule {value!r} refused: {title} {details}",
                              value=error.get("value"), title=error.get("title"),
                              details=error.get("details", ""))
            self._refused.update(set(missing) - set(self._rules.values()))
            self.log.info("twitter: added {count} stream rules", count=len(answer.get("data", [])))

    def _route(self, rooms: list[Room], wanted: dict[str, str]) -> None:
        by_value: dict[str, list[str]] = {}
        for room in rooms:
            by_value.setdefault(" OR ".join(room.hashtags), []).append(room.name)
        self._rooms = {tag: by_value[value] for tag, value in wanted.items()}
        self._cap.keep([room.name for room in rooms])

    async def _read_rules(self) -> dict[str, tuple[str, str]]:
        response = await self._http_client().get(self._url("/2/tweets/search/stream/rules"),
                                                  headers=self._headers())
        answer = await self._answer(response)
        return {rule["id"]: (rule.get("tag", ""), rule["value"])
                for rule in answer.get("data", []) if rule.get("tag", "").startswith(RULE_PREFIX)}

    async def _change(self, body: dict[str, Any]) -> dict[str, Any]:
        response = await self._http_client().post(self._url("/2/tweets/search/stream/rules"),
                                                   json=body, headers=self._headers())
        return await self._answer(response)

    async def _answer(self, response: Any) -> dict[str, Any]:
        answer = await response.json()
        if not 200 <= response.code < 300:
            raise RulesError(f"{response.code} {json.dumps(answer)[:500]}")
        if not isinstance(answer, dict):
            raise RulesError("the rules endpoint answered something other than an object")
        return answer

    def _connect(self) -> Deferred[Any]:  # a treq response, which is an IResponse
        return self._http_client().get(self._url("/2/tweets/search/stream"),
                                       params=STREAM_FIELDS, headers=self._headers(),
                                       unbuffered=True)

    def _http_client(self) -> HTTPClient:
        assert self._http is not None, "the source is not started"
        return self._http

    def _url(self, path: str) -> str:
        return str(self.options["api-url"]) + path

    def _headers(self) -> Headers:
        return Headers({"Authorization": [f"Bearer {self.options.bearer_token}"]})

    def received(self, item: dict[str, Any]) -> None:
        """One object from the stream: a post, or errors (some saying to reconnect)."""
        for error in item.get("errors", []):
            if "disconnect" in str(error.get("title", "")) or "disconnect_type" in error:
                self.log.warn("twitter: the stream says {title}: {detail}; reconnecting",
                              title=error.get("title"), detail=error.get("detail"))
                self.stream.drop(str(error.get("title")))
                return
            self.log.warn("twitter: the stream reports {title}: {detail}",
                          title=error.get("title"), detail=error.get("detail"))
        post = item.get("data")
        if isinstance(post, dict) and isinstance(post.get("id"), str):
            self._post(post, item)

    def _post(self, post: dict[str, Any], item: dict[str, Any]) -> None:
        id = post["id"]
        if not self._seen.add(id):
            return
        users = {user.get("id"): user.get("username")
                 for user in item.get("includes", {}).get("users", [])}
        handle = users.get(post.get("author_id")) or post.get("author_id") or "unknown"
        url = (f"https://x.com/{handle}/status/{id}" if post.get("author_id") in users
               else f"https://x.com/i/web/status/{id}")
        source = {"network": "twitter", "id": id, "url": url}
        text = html.unescape(str(post.get("text", "")))  # v2 escapes &, < and > in text
        rooms = dict.fromkeys(room for rule in item.get("matching_rules", [])
                              for room in self._rooms.get(str(rule.get("tag")), []))
        now = self.context.reactor.seconds()
        for room in rooms:
            if not self._cap.allow(room, now):
                self.capped += 1
                continue
            self._ingest(room, f"@{handle}", text, source)

    def _ingest(self, room: str, author: str, body: str, source: dict[str, Any]) -> None:
        ingesting = Deferred.fromCoroutine(self.context.chat.ingest(room, author, body, source))
        self._ingesting.add(ingesting)

        def done(result: object) -> None:
            self._ingesting.discard(ingesting)
            if isinstance(result, Failure):
                self.refused += 1
                self.log.warn("twitter: post {id} not added to {room}: {why}", id=source["id"],
                              room=room, why=result.getErrorMessage())
            else:
                self.ingested += 1

        ingesting.addBoth(done)


class _Tweets:
    """One connection's body: a JSON object per line, keep-alives between."""

    log = Logger()

    def __init__(self, source: TwitterSource) -> None:
        self._source = source
        self._lines = Lines()

    def data(self, chunk: bytes) -> None:
        for line in self._lines.feed(chunk):
            try:
                item = json.loads(line)
            except ValueError:
                self.log.warn("twitter: a line of the stream is not JSON: {line!r}",
                              line=line[:200])
                continue
            if isinstance(item, dict):
                self._source.received(item)

    def end(self) -> None:
        pass


@implementer(IPlugin, ITmdPlugin)
class TwitterPlugin:
    name = "twitter"
    description = "Posts matching each room's hashtags, from the X API v2 filtered stream."
    options = TwitterOptions

    def makeService(self, context: IPluginContext, options: object) -> TwitterSource:
        assert isinstance(options, TwitterOptions)
        return TwitterSource(context, options)


twitter = TwitterPlugin()
