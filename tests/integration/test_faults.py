"""
Fault drills on real C{twistd -n tmd} processes and real databases.

- kill -9 in the middle of steady posting (HTTP and websocket posters), on SQLite and
  on PostgreSQL: after the restart every acknowledged post is stored, and a client
  resuming with C{since} gets every later message in order, once.
- The SQLite file's filesystem fills up (a tiny tmpfs the test mounts): posts answer
  503 saying so, reads and live sockets go on, and posting recovers by itself once
  space is freed.

PostgreSQL stopping and starting under steady posting is
L{tests.integration.test_postgres.RestartTests}. Each drill logs its figures
(C{fault drill ...}) to trial's C{test.log}; docs/reliability.md quotes them.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import Logger
from twisted.trial.unittest import SkipTest, TestCase

from tests.clients import Frames, Http, connect, count
from tests.helpers import eventually
from tests.integration.daemon import CLEAN_STOP, Daemon
from tests.integration.test_postgres import UNLIMITED_POSTS, room_with, stored, through, watch
from tests.postgres import fresh_schema

ROOM = "faults"
log = Logger()


def answer_to(ref: str) -> Callable[[Frames], bool]:
    """A predicate: the newest frame answers the post C{ref} (an ack or an error)."""
    def check(frames: Frames) -> bool:
        return bool(frames) and frames[-1]["type"] in ("ack", "error") \
            and frames[-1]["ref"] == ref
    return check


class Posting:
    """
    Posters posting steadily, each waiting for its answer before the next post, until
    the daemon goes away; C{acknowledged} maps each acknowledged seq to its body.
    """

    def __init__(self) -> None:
        self.acknowledged: dict[int, str] = {}
        self.refused: list[tuple[int, Any]] = []

    async def over_http(self, daemon: Daemon, token: str, name: str) -> None:
        http = Http(daemon.url)
        n = 0
        while True:
            body = f"{name} {n}"
            n += 1
            try:
                code, answer = await http.call("POST", f"/api/v1/rooms/{ROOM}/messages",
                                               {"body": body}, token)
            except Exception:  # the daemon died under the request: not acknowledged
                return
            if code == 201:
                self.acknowledged[answer["seq"]] = body
            else:
                self.refused.append((code, answer))

    async def over_websocket(self, daemon: Daemon, token: str, name: str) -> None:
        client = await connect(daemon.port, f"/api/v1/rooms/{ROOM}/live?token={token}")
        await client.wait_for(count("welcome", 1))
        n = 0
        while not client.closed.called:
            body, ref = f"{name} {n}", f"{name}-{n}"
            n += 1
            client.post(body, ref)
            try:
                frames = await client.wait_for(answer_to(ref))
            except Exception:  # closed under the post: not acknowledged
                return
            if frames[-1]["type"] == "ack":
                self.acknowledged[frames[-1]["seq"]] = body
            else:
                self.refused.append((0, frames[-1]))


class KillTests(TestCase):
    """SIGKILL mid-stream loses no acknowledged post."""

    timeout = 120

    async def test_kill_9_sqlite(self) -> None:
        """On SQLite: every acknowledged post survives kill -9, and resuming loses nothing."""
        await self._drill("sqlite", ())

    async def test_kill_9_postgres(self) -> None:
        """The same on PostgreSQL (a fresh schema of the test server)."""
        await self._drill("postgresql", ("--database", fresh_schema(self)))

    async def _drill(self, engine: str, database: tuple[str, ...]) -> None:
        """
        Two HTTP and two websocket posters post steadily; a watcher follows the room;
        after 500 acknowledgements the daemon is killed with SIGKILL and started again
        on the same database. Every acknowledged (seq, body) is stored, the seqs have no
        gap, and a client resuming with C{since} = the watcher's last seen seq gets
        every later message, posts made after the restart included, in order, once.
        """
        daemon = await Daemon.start(self, *database, *UNLIMITED_POSTS)
        tokens = await room_with(Http(daemon.url), [f"poster-{i}" for i in range(4)], ROOM)
        watcher = await watch(self, daemon, "?since=0", ROOM)
        posting = Posting()
        posters = gatherResults([
            Deferred.fromCoroutine(posting.over_http(daemon, tokens[0], "http-0")),
            Deferred.fromCoroutine(posting.over_http(daemon, tokens[1], "http-1")),
            Deferred.fromCoroutine(posting.over_websocket(daemon, tokens[2], "ws-2")),
            Deferred.fromCoroutine(posting.over_websocket(daemon, tokens[3], "ws-3")),
        ])
        await eventually(lambda: len(posting.acknowledged) >= 500, timeout=60)

        await daemon.restart(kill=True)
        await posters
        await watcher.closed
        self.assertEqual(posting.refused, [])
        seen = [m["seq"] for m in watcher.messages()]
        self.assertEqual(seen, list(range(1, len(seen) + 1)), "the watcher before the kill")

        http = Http(daemon.url)
        before = await stored(http, ROOM)
        in_room = {m["seq"]: m["body"] for m in before}
        self.assertEqual(sorted(in_room), list(range(1, len(in_room) + 1)), "a gap in the seqs")
        lost = {seq: body for seq, body in posting.acknowledged.items()
                if in_room.get(seq) != body}
        log.info("fault drill kill -9 ({engine}): {acknowledged} acknowledged, {stored} stored,"
                 " {lost} lost; the watcher had seen {seen}", engine=engine,
                 acknowledged=len(posting.acknowledged), stored=len(in_room), lost=len(lost),
                 seen=len(seen))
        self.assertEqual(lost, {}, "acknowledged, lost")

        # The watcher resumes where it was; another client from halfway, a long backlog.
        resumed = {since: await watch(self, daemon, f"?since={since}", ROOM)
                   for since in (len(seen), len(seen) // 2)}
        for i in range(5):
            code, message = await http.call("POST", f"/api/v1/rooms/{ROOM}/messages",
                                            {"body": f"after {i}"}, tokens[0])
            self.assertEqual((code, message["seq"]), (201, len(in_room) + 1 + i))
        last = len(in_room) + 5
        everything = [(m["seq"], m["body"]) for m in await stored(http, ROOM)]
        for since, client in resumed.items():
            await client.wait_for(through(last))
            self.assertEqual([(m["seq"], m["body"]) for m in client.messages()],
                             everything[since:])
            self.assertEqual([seq for seq, _ in everything[since:]],
                             list(range(since + 1, last + 1)))
        self.assertEqual(await daemon.stop(), CLEAN_STOP)
        self.assertNotIn("Traceback", daemon.output)


async def run(*command: str) -> tuple[int, str]:
    """A program's exit code and output, run off the reactor."""
    out, err, code = await getProcessOutputAndValue(
        command[0], command[1:], env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    return code, (out + err).decode("utf-8", "replace")


async def tiny_filesystem(test: TestCase, size: str) -> Path:
    """
    A tmpfs of C{size} mounted for the test (unmounted at cleanup); skip if mounting
    is refused (it needs root, or CAP_SYS_ADMIN).
    """
    mount = shutil.which("mount")
    if mount is None:
        raise SkipTest("no mount(8): cannot make a small filesystem to fill")
    where = Path(tempfile.mkdtemp(prefix="tmd-full-", dir="/tmp"))
    test.addCleanup(shutil.rmtree, where, True)
    code, output = await run(mount, "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                             str(where))
    if code != 0:
        raise SkipTest(f"cannot mount a tmpfs (it needs root): {output.strip()}")

    async def unmount() -> None:
        code, output = await run("umount", str(where))
        assert code == 0, output

    test.addCleanup(unmount)
    return where


def fill(directory: Path) -> Path:
    """Write a file in C{directory} until its filesystem has no byte left; the file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for chunk in (b"\0" * 65536, b"\0" * 512, b"\0"):
            try:
                while True:
                    out.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    return filler


class DiskFullTests(TestCase):
    """The SQLite file's filesystem fills up and frees up again."""

    timeout = 60

    async def test_disk_full(self) -> None:
        """
        With the database's filesystem full, an HTTP post answers 503 C{unavailable}
        saying the disk is full, with Retry-After, and a websocket post gets that
        error frame; reads answer, live sockets stay open. Once space is freed the
        next post is stored with the next seq, with no restart, and reaches the
        live clients; every acknowledged post is stored.
        """
        directory = await tiny_filesystem(self, "4m")
        daemon = await Daemon.start(self, *UNLIMITED_POSTS, directory=directory)
        http = Http(daemon.url)
        ada, bob = await room_with(http, ["ada", "bob"], ROOM)
        watcher = await watch(self, daemon, "?since=0", ROOM)
        poster = await watch(self, daemon, f"?token={bob}", ROOM)
        acknowledged: dict[int, str] = {}
        for i in range(5):
            code, message = await http.call("POST", f"/api/v1/rooms/{ROOM}/messages",
                                            {"body": f"before {i}"}, ada)
            self.assertEqual(code, 201, message)
            acknowledged[message["seq"]] = message["body"]

        filler = fill(directory)
        refused = 0
        for i in range(5):
            code, error = await http.call("POST", f"/api/v1/rooms/{ROOM}/messages",
                                          {"body": f"while full {i}"}, ada)
            self.assertEqual((code, error["error"]["code"]), (503, "unavailable"), error)
            self.assertIn("disk is full", error["error"]["message"])
            self.assertEqual(http.last_headers.getRawHeaders(b"Retry-After"), [b"30"])
            refused += 1
        poster.post("over the socket", "full")
        frames = await poster.wait_for(answer_to("full"))
        self.assertEqual((frames[-1]["type"], frames[-1]["code"], frames[-1]["retry_after"]),
                         ("error", "unavailable", 30))
        code, page = await http.call("GET", f"/api/v1/rooms/{ROOM}/messages")
        self.assertEqual((code, [m["seq"] for m in page["messages"]]), (200, [1, 2, 3, 4, 5]))
        code, room = await http.call("GET", f"/api/v1/rooms/{ROOM}")
        self.assertEqual((code, room["online"]), (200, 2))
        self.assertFalse(watcher.closed.called or poster.closed.called)

        filler.unlink()
        code, message = await http.call("POST", f"/api/v1/rooms/{ROOM}/messages",
                                        {"body": "space again"}, ada)
        self.assertEqual((code, message.get("seq")), (201, 6), message)
        acknowledged[6] = "space again"
        poster.post("over the socket again", "again")
        frames = await poster.wait_for(answer_to("again"))
        self.assertEqual((frames[-1]["type"], frames[-1]["seq"]), ("ack", 7))
        acknowledged[7] = "over the socket again"
        await watcher.wait_for(through(7))
        self.assertEqual({m["seq"]: m["body"] for m in watcher.messages()}, acknowledged)
        self.assertEqual({m["seq"]: m["body"] for m in await stored(http, ROOM)}, acknowledged)
        log.info("fault drill disk full: {refused} HTTP posts and 1 websocket post refused"
                 " with 503 while full, {acknowledged} acknowledged, all stored, 0 lost",
                 refused=refused, acknowledged=len(acknowledged))
        self.assertEqual(await daemon.stop(), CLEAN_STOP)
        self.assertEqual(daemon.output.count("the database's disk is full"), 1, daemon.output)
        self.assertNotIn("Traceback", daemon.output)
