"""End to end: a real C{twistd -n tmd} with the Twitter source, against a fake X API."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.clients import Http
from tests.fake_twitter import FakeTwitter, tweet
from tests.integration.daemon import Daemon


class TwitterDaemonTests(TestCase):
    timeout = 60

    def test_tweet_into_room(self) -> Deferred[None]:
        """
        Configured by its TOML table, the source streams from the fake; a room made
        with a hashtag gets its rule, and the matching post as a social message.
        """
        return Deferred.fromCoroutine(self._tweet_into_room())

    async def _tweet_into_room(self) -> None:
        fake = FakeTwitter("the-token")
        url = await fake.serve(self)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        token_file = os.path.join(directory, "token")
        with open(token_file, "w", encoding="utf-8") as f:
            f.write("the-token\n")
        config = os.path.join(directory, "tmd.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write(f'[twitter]\napi_url = "{url}"\nbearer_token_file = "{token_file}"\n'
                    "sync_interval = 0.2\n")
        opened = fake.next_stream()
        daemon = await Daemon.start(self, "--config", config)
        stream = await opened.addTimeout(20, reactor)
        http = Http(daemon.url)
        changed = fake.next_change()
        code, _ = await http.call("POST", "/api/v1/rooms",
                                  {"name": "physics-101", "hashtags": ["#phys101"]})
        self.assertEqual(code, 201)
        await changed.addTimeout(20, reactor)
        self.assertEqual([(r["tag"], r["value"]) for r in fake.rules.values()],
                         [("tmd:room:physics-101", "#phys101")])
        stream.send(tweet("1460323737035677698", "Is light a wave? #phys101", "ada",
                          ("tmd:room:physics-101",)))
        for _ in range(200):
            code, page = await http.call("GET", "/api/v1/rooms/physics-101/messages")
            if page["messages"]:
                break
            await deferLater(reactor, 0.05)  # type: ignore[arg-type]
        [message] = page["messages"]
        self.assertEqual(
            (message["kind"], message["author"], message["body"], message["source"]),
            ("social", "@ada", "Is light a wave? #phys101",
             {"network": "twitter", "id": "1460323737035677698",
              "url": "https://x.com/ada/status/1460323737035677698"}))
        code, health = await http.call("GET", "/healthz")
        self.assertEqual((code, health["plugins"]["twitter"]["state"]), (200, "connected"))
        code, metrics = await http.call("GET", "/metrics")
        self.assertIn(b'tmd_plugin_events_total{event="ingested",plugin="twitter"} 1.0', metrics)
        self.assertNotIn("the-token", daemon.output)
