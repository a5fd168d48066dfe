"""
End to end on PostgreSQL: real C{twistd -n tmd} daemons sharing one database, real
HTTP and websocket clients.

Two daemons on one schema of the test server (C{TMD_TEST_POSTGRES}, see
L{tests.postgres}); a PostgreSQL restart under steady posting, on a private
cluster of the test's own (the machine's server is shared with parallel tests);
and a daemon that cannot reach PostgreSQL at start.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, TimeoutError, gatherResults
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase

from tests.clients import Frames, Http, LiveClient, connect, count
from tests.integration.daemon import CLEAN_STOP, Daemon
from tests.postgres import fresh_schema

ROOM = "pg-room"


def seqs(messages: list[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages]


def through(seq: int) -> Callable[[Frames], bool]:
    """A predicate: the newest message frame has at least C{seq} (cheap on long runs)."""
    def check(frames: Frames) -> bool:
        for frame in reversed(frames):
            if frame["type"] == "message":
                return bool(frame["message"]["seq"] >= seq)
        return False
    return check


def online(n: int) -> Callable[[Frames], bool]:
    """A predicate: the newest presence frame says C{n} are online."""
    def check(frames: Frames) -> bool:
        for frame in reversed(frames):
            if frame["type"] == "presence":
                return bool(frame["online"] == n)
        return False
    return check


UNLIMITED_POSTS = ("--limit", "participant_posts=off", "--limit", "address_posts=off")
"""These tests post as fast as loopback allows, from one address: no rate limits."""


async def two_daemons(test: TestCase, database: str) -> tuple[Daemon, Daemon]:
    """Two daemons on C{database}, started at once (they migrate an empty schema together)."""
    a, b = await gatherResults([
        Deferred.fromCoroutine(Daemon.start(test, "--database", database, *UNLIMITED_POSTS))
        for _ in range(2)])
    return a, b


async def room_with(http: Http, nicknames: list[str], room: str = ROOM) -> list[str]:
    """Create C{room} and join it under each of C{nicknames}; their tokens."""
    code, created = await http.call("POST", "/api/v1/rooms", {"name": room})
    assert code == 201, (code, created)
    tokens = []
    for nickname in nicknames:
        code, joined = await http.call("POST", f"/api/v1/rooms/{room}/join",
                                       {"nickname": nickname})
        assert code == 201, (code, joined)
        tokens.append(joined["token"])
    return tokens


async def watch(test: TestCase, daemon: Daemon, query: str = "?since=0",
                room: str = ROOM) -> LiveClient:
    """A websocket client of C{room} on C{daemon}, past its welcome; closed at cleanup."""
    client = await connect(daemon.port, f"/api/v1/rooms/{room}/live{query}")

    async def close() -> None:
        if not client.closed.called:
            client.sendClose()
            await client.closed

    test.addCleanup(close)
    await client.wait_for(count("welcome", 1))
    return client


async def stored(http: Http, room: str = ROOM) -> list[dict[str, Any]]:
    """Every message of C{room}, a page of 1000 at a time."""
    found: list[dict[str, Any]] = []
    while True:
        after = found[-1]["seq"] if found else 0
        code, page = await http.call("GET", f"/api/v1/rooms/{room}/messages?after={after}"
                                     "&limit=1000")
        assert code == 200, (code, page)
        found += page["messages"]
        if len(page["messages"]) < 1000:
            assert page["last_seq"] == (found[-1]["seq"] if found else 0), page["last_seq"]
            return found


class TwoDaemonsTests(TestCase):
    """Two daemons on one PostgreSQL schema behave as one service."""

    timeout = 120

    async def test_live_across_daemons(self) -> None:
        """
        Posts made over HTTP on either daemon reach the websocket clients of both, in
        seq order, once each; presence adds up the clients of both daemons, both ways.
        """
        a, b = await two_daemons(self, fresh_schema(self))
        http_a, http_b = Http(a.url), Http(b.url)
        ada, bob = await room_with(http_a, ["ada", "bob"])
        on_a, on_b = await watch(self, a), await watch(self, b)

        for client in (on_a, on_b):
            await client.wait_for(online(2))
        for http in (http_a, http_b):
            code, room = await http.call("GET", f"/api/v1/rooms/{ROOM}")
            self.assertEqual((code, room["online"]), (200, 2), http.base)

        posts = []
        for i in range(8):  # B, A, B, A, ...: each message crosses to the other daemon
            http, token = (http_b, bob) if i % 2 == 0 else (http_a, ada)
            code, message = await http.call("POST", f"/api/v1/rooms/{ROOM}/messages",
                                            {"body": f"post {i}"}, token)
            self.assertEqual((code, message["seq"]), (201, i + 1))
            posts.append((i + 1, f"post {i}", "bob" if i % 2 == 0 else "ada"))
        for client in (on_a, on_b):
            await client.wait_for(through(8))
            self.assertEqual([(m["seq"], m["body"], m["author"]) for m in client.messages()],
                             posts)

        on_b.sendClose()
        await on_b.closed
        await on_a.wait_for(online(1))
        for http in (http_a, http_b):
            code, room = await http.call("GET", f"/api/v1/rooms/{ROOM}")
            self.assertEqual((code, room["online"]), (200, 1), http.base)
        self.assertEqual(seqs(on_a.messages()), list(range(1, 9)), "a late duplicate")
        for daemon in (a, b):
            self.assertEqual(await daemon.stop(), CLEAN_STOP)
            self.assertNotIn("Traceback", daemon.output)

    async def test_concurrent_posts(self) -> None:
        """
        4 posters x 500 HTTP posts at once, two posters on each daemon, into one room:
        every post is answered 201 and the seqs are exactly 1..2000; the room holds
        them all; a websocket client on each daemon gets all 2000 in order, once each.
        """
        posters, each = 4, 500
        total = posters * each
        a, b = await two_daemons(self, fresh_schema(self))
        tokens = await room_with(Http(a.url), [f"poster-{i}" for i in range(posters)])
        watchers = [await watch(self, a), await watch(self, b)]
        answers: list[tuple[int, Any]] = []

        async def poster(i: int) -> None:
            http = Http((a, b)[i % 2].url)
            for n in range(each):
                answers.append(await http.call("POST", f"/api/v1/rooms/{ROOM}/messages",
                                               {"body": f"{i}/{n}"}, tokens[i]))

        await gatherResults([Deferred.fromCoroutine(poster(i)) for i in range(posters)])
        self.assertEqual(Counter(code for code, _ in answers), {201: total})
        self.assertEqual(sorted(message["seq"] for _, message in answers),
                         list(range(1, total + 1)))
        in_room = await stored(Http(b.url))
        self.assertEqual(seqs(in_room), list(range(1, total + 1)))
        self.assertEqual({(m["seq"], m["body"]) for m in in_room},
                         {(m["seq"], m["body"]) for _, m in answers})
        for watcher in watchers:
            await watcher.wait_for(through(total))
            self.assertEqual(seqs(watcher.messages()), list(range(1, total + 1)))


# -- a private PostgreSQL server, to stop and start ------------------------------------------

class Cluster:
    """
    A PostgreSQL server of the test's own in a temporary directory under /tmp, run
    as the C{postgres} user (PostgreSQL refuses root), on a free loopback port.
    """

    def __init__(self, bindir: Path, top: Path, prefix: list[str], port: int) -> None:
        self._bindir = bindir
        self._top = top
        self._prefix = prefix
        self.port = port
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    async def create(cls, test: TestCase) -> Cluster:
        """Make and start a cluster; stop it and remove it at cleanup. Skip if we cannot."""
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                       key=lambda path: int(Path(path).parts[-3]))
        if not found:
            raise SkipTest("no /usr/lib/postgresql/*/bin/initdb: install PostgreSQL's server"
                           " to run this test")
        try:
            postgres = pwd.getpwnam("postgres")
        except KeyError:
            raise SkipTest("there is no 'postgres' user to run a PostgreSQL server as") from None
        if os.geteuid() == 0:
            runuser = shutil.which("runuser")
            if runuser is None:
                raise SkipTest("running as root without runuser(1): cannot run PostgreSQL")
            prefix = [runuser, "-u", "postgres", "--"]
        elif os.geteuid() == postgres.pw_uid:
            prefix = []
        else:
            raise SkipTest("this test runs a PostgreSQL server: run it as root or as postgres")
        top = Path(tempfile.mkdtemp(prefix="tmd-pg-", dir="/tmp"))
        test.addCleanup(shutil.rmtree, top, True)
        os.chown(top, postgres.pw_uid, postgres.pw_gid)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        cluster = cls(Path(found[-1]).parent, top, prefix, port)
        await cluster._run("initdb", "-D", str(top / "data"), "--auth=trust", "-U", "postgres",
                           "--locale=C", "-E", "UTF8", "--no-sync")
        test.addCleanup(cluster.stop)
        await cluster.start()
        return cluster

    async def start(self) -> None:
        """Start the server; fires once it accepts connections."""
        await self._run("pg_ctl", "-D", str(self._top / "data"), "-l", str(self._top / "log"),
                        "-o", f"-p {self.port} -k {self._top} -c listen_addresses=127.0.0.1",
                        "-w", "-t", "60", "start")
        self.running = True

    async def stop(self) -> None:
        """Stop the server (fast: clients are disconnected at once) if it is running."""
        if self.running:
            await self._run("pg_ctl", "-D", str(self._top / "data"), "-m", "fast", "-w",
                            "-t", "60", "stop")
            self.running = False

    async def _run(self, program: str, *args: str) -> None:
        """One of PostgreSQL's programs, off the reactor; fails with its output if it fails."""
        command = [*self._prefix, str(self._bindir / program), *args]
        out, err, code = await getProcessOutputAndValue(
            command[0], command[1:], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            path=str(self._top))
        if code != 0:
            log = self._top / "log"
            raise RuntimeError(
                f"{' '.join(command)} exited with {code}:\n{out.decode()}{err.decode()}"
                + (log.read_text() if log.exists() else ""))


@dataclass
class Answer:
    poster: int
    body: str
    code: int
    json: Any
    seconds: float
    retry_after: list[bytes] | None


ANSWER_TIMEOUT = 10.0
"""Seconds a post may take before the test calls it hung (PostgreSQL down or not)."""

PROMPT = 2.0
"""Seconds within which a post must be refused while PostgreSQL is down."""

PACE = 0.02
"""Seconds each poster waits between posts: steady posting, not a flood of 503s."""


class Posters:
    """Posters that post steadily over HTTP until told to stop, keeping every answer."""

    def __init__(self, targets: list[tuple[Daemon, str]]) -> None:
        self.answers: list[Answer] = []
        self._targets = targets
        self._running = True
        self._waiting: list[tuple[Callable[[], bool], Deferred[None]]] = []
        self._done = gatherResults(
            [Deferred.fromCoroutine(self._post(i)) for i in range(len(targets))],
            consumeErrors=True)
        self._done.addErrback(self._failed)

    async def _post(self, i: int) -> None:
        daemon, token = self._targets[i]
        http = Http(daemon.url)
        n = 0
        while self._running:
            body = f"poster {i} post {n}"
            n += 1
            started = reactor.seconds()
            code, json = await Deferred.fromCoroutine(http.call(
                "POST", f"/api/v1/rooms/{ROOM}/messages", {"body": body}, token,
            )).addTimeout(ANSWER_TIMEOUT, reactor)
            self.answers.append(Answer(i, body, code, json, reactor.seconds() - started,
                                       http.last_headers.getRawHeaders(b"Retry-After")))
            still = []
            for predicate, d in self._waiting:
                if predicate():
                    d.callback(None)
                else:
                    still.append((predicate, d))
            self._waiting = still
            await task.deferLater(reactor, PACE, lambda: None)

    def _failed(self, failure: Failure) -> Failure:
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            d.errback(failure)
        return failure

    def answered(self, poster: int, code: int, since: int = 0) -> int:
        """How many of C{poster}'s answers from C{since} on had status C{code}."""
        return sum(1 for a in self.answers[since:] if a.poster == poster and a.code == code)

    def when(self, predicate: Callable[[], bool], what: str,
             seconds: float = 30.0) -> Deferred[None]:
        """Fires once C{predicate()} holds after an answer; fails after C{seconds}."""
        d: Deferred[None] = Deferred()
        if predicate():
            d.callback(None)
            return d
        if self._done.called:
            d.errback(RuntimeError(f"the posters stopped before {what}"))
            return d
        self._waiting.append((predicate, d))

        def late(failure: Failure) -> None:
            failure.trap(TimeoutError)
            raise AssertionError(f"not within {seconds:g} s: {what}")

        return d.addTimeout(seconds, reactor).addErrback(late)

    async def stop(self) -> None:
        self._running = False
        await self._done


LINKS = 4 + 1
"""Connections each daemon holds to PostgreSQL: the pool (C{--db-pool-size} 4) and the Bus's."""


async def logged(daemon: Daemon, text: str, times: int, seconds: float = 30.0) -> None:
    """Wait until C{daemon} has logged C{text} C{times} times (no event says so: poll)."""
    deadline = reactor.seconds() + seconds
    while daemon.output.count(text) < times:
        if reactor.seconds() > deadline:
            raise AssertionError(f"{daemon.url} logged {text!r} {daemon.output.count(text)}"
                                 f" times, not {times}, within {seconds:g} s")
        await task.deferLater(reactor, 0.05, lambda: None)


class RestartTests(TestCase):
    """PostgreSQL stops and starts again under two daemons and steady posting."""

    timeout = 180

    async def test_postgres_restart(self) -> None:
        """
        While PostgreSQL is down, posts answer 503 C{unavailable} with Retry-After within
        2 s (none hangs) and /healthz is 503, and websocket clients stay connected; once
        it is back, every connection of both daemons comes back by itself, posting
        resumes, and each daemon LISTENs again (a post on one reaches the other's
        client). Every post acknowledged with 201 is stored, the room's seqs have no
        gap, and the websocket client of each daemon has every stored message, in
        order, once each.
        """
        cluster = await Cluster.create(self)
        a, b = await two_daemons(self, cluster.url)
        daemons = (a, b)
        tokens = await room_with(Http(a.url), [f"poster-{i}" for i in range(4)])
        watchers = [await watch(self, a), await watch(self, b)]
        targets = [(daemons[i % 2], tokens[i]) for i in range(4)]  # two posters per daemon
        posters = Posters(targets)
        self.addCleanup(posters.stop)
        every = range(len(targets))

        await posters.when(lambda: all(posters.answered(i, 201) >= 10 for i in every),
                           "10 posts of each poster acknowledged")
        await cluster.stop()
        down = len(posters.answers)
        resume_from = max(seqs(watchers[0].messages()), default=0)  # as a client that leaves now
        await posters.when(lambda: all(posters.answered(i, 503, down) >= 10 for i in every),
                           "10 posts of each poster refused while PostgreSQL is down")
        for daemon in daemons:
            code, health = await Http(daemon.url).call("GET", "/healthz")
            self.assertEqual((code, health["status"]), (503, "unavailable"), daemon.url)
        self.assertEqual([w.close_code for w in watchers if w.closed.called], [])

        await cluster.start()
        up = len(posters.answers)
        await posters.when(lambda: all(posters.answered(i, 201, up) >= 10 for i in every),
                           "posting resumed on both daemons (10 posts of each poster)")
        await posters.stop()

        for answer in posters.answers:
            if answer.code != 201:
                self.assertEqual((answer.code, answer.json["error"]["code"]),
                                 (503, "unavailable"), answer)
                self.assertTrue(answer.retry_after and int(answer.retry_after[0]) > 0, answer)
                self.assertLess(answer.seconds, PROMPT, answer)
        for daemon in daemons:
            code, health = await Http(daemon.url).call("GET", "/healthz")
            self.assertEqual((code, health), (200, {"status": "ok"}), daemon.url)

        for daemon in daemons:  # every link of the pool and the Bus's: 5 each
            await logged(daemon, "reconnected to PostgreSQL", LINKS)
        for i, (daemon, token) in enumerate(targets[:2]):  # one post on A, then one on B
            code, message = await Http(daemon.url).call(
                "POST", f"/api/v1/rooms/{ROOM}/messages", {"body": f"after {i}"}, token)
            self.assertEqual(code, 201, message)
            for watcher in watchers:  # the other daemon hears of it: it LISTENs again
                await watcher.wait_for(through(message["seq"]))

        in_room = await stored(Http(b.url))
        last = len(in_room)
        self.assertEqual(seqs(in_room), list(range(1, last + 1)))
        acknowledged = {(a.json["seq"], a.body) for a in posters.answers if a.code == 201}
        lost = acknowledged - {(m["seq"], m["body"]) for m in in_room}
        Logger().info("fault drill PostgreSQL restart: {acknowledged} acknowledged, {refused}"
                      " refused with 503, {stored} stored, {lost} lost",
                      acknowledged=len(acknowledged), stored=len(in_room), lost=len(lost),
                      refused=sum(1 for a in posters.answers if a.code == 503))
        self.assertEqual(lost, set())
        for watcher in watchers:
            await watcher.wait_for(through(last))
            self.assertEqual([(m["seq"], m["body"]) for m in watcher.messages()],
                             [(m["seq"], m["body"]) for m in in_room])
        self.assertEqual([w.close_code for w in watchers if w.closed.called], [])
        # A client that left as PostgreSQL stopped resumes after the restart, on the
        # other daemon: everything after its last seen seq, in order, once.
        resumed = await connect(b.port, f"/api/v1/rooms/{ROOM}/live?since={resume_from}")
        await resumed.wait_for(through(last))
        self.assertEqual([(m["seq"], m["body"]) for m in resumed.messages()],
                         [(m["seq"], m["body"]) for m in in_room[resume_from:]])
        resumed.sendClose()
        await resumed.closed
        for daemon in daemons:
            self.assertEqual(await daemon.stop(), CLEAN_STOP)
            self.assertEqual(daemon.output.count("lost the connection to PostgreSQL"), LINKS)
            self.assertNotIn("Traceback", daemon.output)


class StartTests(TestCase):
    """A daemon that cannot reach PostgreSQL says so and exits."""

    timeout = 60

    async def test_unreachable_at_start(self) -> None:
        """
        PostgreSQL refuses the connection: the daemon logs one clear critical line,
        C{tmd could not start: Cannot connect to PostgreSQL at ...}, with no
        traceback, and exits with status 1.
        """
        with socket.socket() as closed:  # bound, never listening: connections are refused
            closed.bind(("127.0.0.1", 0))
            port = closed.getsockname()[1]
            daemon = await Daemon.start_failing(
                self, "--database", f"postgresql://postgres@127.0.0.1:{port}/test")
        self.assertEqual(daemon.status, (1, None), daemon.output)
        [line] = [line for line in daemon.output.splitlines() if "could not start" in line]
        self.assertIn(f"#critical] tmd could not start: Cannot connect to PostgreSQL at"
                      f" postgres@127.0.0.1:{port}/test: ", line)
        self.assertNotIn("Traceback", daemon.output)
