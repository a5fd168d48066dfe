"""
End to end, a stop under load: a real C{twistd -n tmd} taking posts over HTTP and
websockets from several clients at once is sent SIGTERM. It exits cleanly, soon;
every open websocket is closed with 1001; every request it took is answered; and
every post it acknowledged (a 201 or an C{ack}) is in the database.
"""

from __future__ import annotations

import sqlite3

from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectError
from twisted.trial.unittest import TestCase

from tests.clients import TIMEOUT, Frames, Http, LiveClient, connect, count
from tests.helpers import eventually
from tests.integration.daemon import CLEAN_STOP, Daemon

ROOM = "/api/v1/rooms/busy"
UNLIMITED = ("--limit", "participant_posts=off", "--limit", "address_posts=off",
             "--limit", "address_joins=off")
SHUTDOWN_TIMEOUT = 5
HTTP_POSTERS = 3
WEBSOCKET_POSTERS = 3
READERS = 2


class Load:
    """What the clients saw: the seqs acknowledged, and how each HTTP request ended."""

    def __init__(self) -> None:
        self.acknowledged: list[int] = []
        self.answers: list[int] = []
        """The status of every HTTP request that was answered."""
        self.unanswered: list[str] = []
        """HTTP requests sent on a connection the daemon took, and never answered."""
        self.refused = 0
        """Connections refused: the daemon had stopped listening."""

    async def post_over_http(self, http: Http, token: str, name: str) -> None:
        """Post one message after another until the daemon no longer takes connections."""
        for i in range(1, 100_000):
            try:
                code, body = await http.call("POST", ROOM + "/messages",
                                             {"body": f"{name} {i}"}, token)
            except ConnectError:
                self.refused += 1
                return
            except Exception as e:  # the connection was taken, the request not answered
                self.unanswered.append(repr(e))
                return
            self.answers.append(code)
            if code != 201:
                return
            self.acknowledged.append(body["seq"])

    async def post_over_websocket(self, client: LiveClient, name: str) -> None:
        """Post one message after another, each once the last is acknowledged, until closed."""
        for i in range(1, 100_000):
            if client.state != WebSocketProtocol.STATE_OPEN:
                return
            ref = f"{name}-{i}"

            def answered(frames: Frames, ref: str = ref) -> bool:
                return any(f.get("ref") == ref for f in frames[-5:])

            client.post(f"{name} {i}", ref)
            try:
                frames = await client.wait_for(answered)
            except ConnectionError:  # closed before the answer: not acknowledged
                return
            [answer] = [f for f in frames if f.get("ref") == ref]
            if answer["type"] != "ack":
                return
            self.acknowledged.append(answer["seq"])


def stored(database: str) -> list[int]:
    with sqlite3.connect(database) as db:
        return [seq for (seq,) in db.execute(
            "SELECT seq FROM messages JOIN rooms ON rooms.id = room_id WHERE name = 'busy'"
            " ORDER BY seq")]


def seqs(client: LiveClient) -> list[int]:
    return [m["seq"] for m in client.messages()]


class ShutdownTests(TestCase):
    timeout = 60

    def test_sigterm_under_load(self) -> Deferred[None]:
        """
        Three posters over HTTP and three over websockets post continuously, two more
        clients read; SIGTERM: a clean exit well within --shutdown-timeout, 1001 for
        every websocket, an answer for every request taken, every acknowledged post
        stored, and the readers saw stored messages only, in order, once.
        """
        return Deferred.fromCoroutine(self._sigterm_under_load())

    async def _sigterm_under_load(self) -> None:
        daemon = await Daemon.start(self, "--shutdown-timeout", str(SHUTDOWN_TIMEOUT), *UNLIMITED)
        http = Http(daemon.url)
        code, _ = await http.call("POST", "/api/v1/rooms", {"name": "busy"})
        self.assertEqual(code, 201)
        tokens = []
        for n in range(HTTP_POSTERS + WEBSOCKET_POSTERS):
            code, joined = await http.call("POST", ROOM + "/join", {"nickname": f"p{n}"})
            self.assertEqual(code, 201)
            tokens.append(joined["token"])
        sockets = [await connect(daemon.port, ROOM + f"/live?token={token}")
                   for token in tokens[HTTP_POSTERS:]]
        sockets += [await connect(daemon.port, ROOM + "/live") for _ in range(READERS)]
        for client in sockets:
            await client.wait_for(count("welcome", 1))

        load = Load()
        posting = [Deferred.fromCoroutine(load.post_over_http(Http(daemon.url), token, f"h{n}"))
                   for n, token in enumerate(tokens[:HTTP_POSTERS])]
        posting += [Deferred.fromCoroutine(load.post_over_websocket(client, f"w{n}"))
                    for n, client in enumerate(sockets[:WEBSOCKET_POSTERS])]
        await eventually(lambda: len(load.acknowledged) >= 150)

        stopping = reactor.seconds()  # type: ignore[attr-defined]
        status = await daemon.stop()
        took = reactor.seconds() - stopping  # type: ignore[attr-defined]
        await gatherResults(posting).addTimeout(TIMEOUT, reactor)
        for client in sockets:
            if not client.closed.called:
                await client.closed.addTimeout(TIMEOUT, reactor)

        summary = (f"stopped in {took:.2f} s; acknowledged {len(load.acknowledged)};"
                   f" HTTP answers {sorted(set(load.answers))}, refused {load.refused};"
                   f" unanswered {load.unanswered}\n{daemon.output[-3000:]}")
        self.assertEqual(status, CLEAN_STOP, summary)
        self.assertLess(took, SHUTDOWN_TIMEOUT, summary)
        self.assertEqual([client.close_code for client in sockets], [1001] * len(sockets),
                         summary)
        self.assertEqual(load.unanswered, [], summary)
        self.assertEqual(load.refused, HTTP_POSTERS, summary)
        self.assertEqual(set(load.answers), {201}, summary)
        saved = stored(str(daemon.directory / "tmd.sqlite3"))
        self.assertEqual(sorted(set(load.acknowledged) - set(saved)), [], summary)
        self.assertEqual(len(load.acknowledged), len(set(load.acknowledged)))
        for client in sockets[WEBSOCKET_POSTERS:]:
            received = seqs(client)
            self.assertEqual(received, sorted(set(received)))
            self.assertLessEqual(set(received), set(saved))
        self.assertNotIn("Traceback", daemon.output)
