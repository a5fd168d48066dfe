"""
End to end: a real C{twistd -n tmd}, real HTTP and websocket clients, a restart.
"""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.clients import Http, connect, count
from tests.integration.daemon import CLEAN_STOP, Daemon
from tmd.store.migrations import migrations


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages]


class DaemonTests(TestCase):
    timeout = 120

    def test_chat_survives_restart(self) -> Deferred[None]:
        """
        Two participants post over HTTP and the websocket; both sockets see every
        message once, in seq order; SIGTERM closes them with 1001; after a restart on
        the same file, a client resuming with C{since} misses nothing.
        """
        return Deferred.fromCoroutine(self._chat_survives_restart())

    async def _chat_survives_restart(self) -> None:
        daemon = await Daemon.start(self)
        http = Http(daemon.url)
        code, created = await http.call("POST", "/api/v1/rooms", {"name": "E2E-Room"})
        self.assertEqual((code, created["room"]["name"]), (201, "e2e-room"))
        tokens = {}
        for nickname in ("ada", "bob"):
            code, joined = await http.call("POST", "/api/v1/rooms/e2e-room/join",
                                           {"nickname": nickname})
            self.assertEqual(code, 201)
            tokens[nickname] = joined["token"]

        ada = await connect(daemon.port, f"/api/v1/rooms/e2e-room/live?token={tokens['ada']}")
        bob = await connect(daemon.port, f"/api/v1/rooms/e2e-room/live?token={tokens['bob']}")
        welcome = (await bob.wait_for(count("welcome", 1)))[0]
        self.assertEqual(welcome["you"]["nickname"], "bob")

        for i in range(3):
            code, _ = await http.call("POST", "/api/v1/rooms/e2e-room/messages",
                                      {"body": f"http {i}"}, tokens["ada"])
            self.assertEqual(code, 201)
            bob.post(f"ws {i}", ref=f"r{i}")
        acks = await bob.wait_for(count("ack", 3))
        self.assertEqual(sorted(f["ref"] for f in acks if f["type"] == "ack"), ["r0", "r1", "r2"])
        for client in (ada, bob):
            await client.wait_for(count("message", 6))
            self.assertEqual(seqs(client.messages()), [1, 2, 3, 4, 5, 6])
        bodies = sorted(m["body"] for m in ada.messages())
        self.assertEqual(bodies, ["http 0", "http 1", "http 2", "ws 0", "ws 1", "ws 2"])
        await ada.wait_for(lambda frames: any(
            f["type"] == "presence" and f["online"] == 2 for f in frames))

        self.assertEqual(await daemon.stop(), CLEAN_STOP)
        self.assertEqual([await ada.closed, await bob.closed], [1001, 1001])

        await daemon.restart()
        http = Http(daemon.url)
        code, _ = await http.call("POST", "/api/v1/rooms/e2e-room/messages", {"body": "after"},
                                  tokens["ada"])
        self.assertEqual(code, 201)
        resumed = await connect(daemon.port, "/api/v1/rooms/e2e-room/live?since=6")
        await resumed.wait_for(count("message", 1))
        self.assertEqual([(m["seq"], m["body"]) for m in resumed.messages()], [(7, "after")])
        code, page = await http.call("GET", "/api/v1/rooms/e2e-room/messages")
        self.assertEqual((seqs(page["messages"]), page["last_seq"]), (list(range(1, 8)), 7))
        resumed.sendClose()
        await resumed.closed
        self.assertEqual(await daemon.stop(), CLEAN_STOP)
        for secret in (*tokens.values(), created["owner_token"]):
            self.assertNotIn(secret, daemon.output)
        self.assertIn('"POST /api/v1/rooms/e2e-room/join HTTP/1.1" 201', daemon.output)
        self.assertNotIn("Traceback", daemon.output)
        self.assertNotIn("Unhandled", daemon.output)

    def test_installed_page_and_health(self) -> Deferred[None]:
        """The installed copy serves the browser page, its assets, health and OpenAPI."""
        return Deferred.fromCoroutine(self._installed_page_and_health())

    async def _installed_page_and_health(self) -> None:
        daemon = await Daemon.start(self)
        http = Http(daemon.url)
        for path in ("/", "/some-room", "/static/js/room.js", "/static/css/tmd.css"):
            code, body = await http.call("GET", path)
            self.assertEqual(code, 200, path)
            self.assertTrue(body, path)
        self.assertEqual(await http.call("GET", "/healthz"), (200, {"status": "ok"}))
        code, document = await http.call("GET", "/api/v1/openapi.json")
        self.assertEqual((code, document["openapi"]), (200, "3.1.0"))

    def test_defaults(self) -> Deferred[None]:
        """With no arguments it listens on tcp:8080 and keeps ./tmd.sqlite3."""
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", 8080)) == 0:
                self.skipTest("something else listens on port 8080")
        return Deferred.fromCoroutine(self._defaults())

    async def _defaults(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        daemon = Daemon(directory, [])
        self.addCleanup(daemon.stop)
        await daemon._spawn()
        self.assertEqual(daemon.port, 8080)
        self.assertIn("tmd listening on TCP 0.0.0.0:8080", daemon.output)
        self.assertEqual(await daemon.stop(), CLEAN_STOP)
        with sqlite3.connect(directory / "tmd.sqlite3") as db:
            self.assertEqual(db.execute("SELECT count(*) FROM schema_version").fetchone()[0],
                             len(migrations("sqlite")))
