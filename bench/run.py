"""
The tmd benchmark: starts its own daemon, measures the post path and the fan-out.

    python bench/run.py            # full run: about 6 minutes on 2 cores
    python bench/run.py --quick    # smaller sizes, about a minute
    TMD_BENCH_POSTGRES=postgresql://postgres@127.0.0.1:5432/test python bench/run.py
                                   # the same, plus PostgreSQL (or --postgres URL)

It spawns C{twistd -n tmd} on a free loopback port with a fresh SQLite file in a
temporary directory (waiting for its "tmd listening" log line), drives it with
Twisted clients in this process (treq over one persistent connection pool,
Autobahn websockets), checks every answer along the way, prints a table, writes
C{bench/results.json} and stops the daemon with SIGTERM. Any error, wrong answer,
lost or reordered message, traceback in the daemon's log or unclean daemon exit
makes it exit non-zero. Every wait is bounded, and so is the whole run.

Given a PostgreSQL URL, it then does the post scenarios again on a daemon using a
fresh schema of that database (created for the run and dropped after it), and
times cross-daemon delivery: a second daemon on the same schema, a POST on the
first, its frame on a websocket client of the second.

The replay scenarios (C{--only replay}) start a fast downstream in a process of its
own (C{bench/downstream.py}: 200 at once, a count at C{GET /count}) and a daemon per
outbox setting (off, then on, SQLite) whose C{[replay]} section (a TOML file given
with C{--config}) replays to it. They time C{/replay/...}'s 202 paced at 200 requests/s
(open loop) and from 8 closed loops, and deliveries/s from the first 202 until the
downstream has them all.

Latencies are measured by the client, end to end on loopback, so they include the
client's own work (treq, Autobahn, JSON), which shares the machine with the daemon.

The load scenarios (C{paced}, C{load}) are driven by C{bench/loadgen.js}, a Node.js
process commanded over stdio: websockets that read frames from the bytes, and HTTP
posts on an open-loop schedule. C{load} runs idle connections, one room's fan-out at
rates and at saturation, and many rooms, against a fresh tmd daemon and then against
the reference broadcast servers of C{bench/reference/} (Autobahn, Node ws), and
prints tmd's figures as ratios to theirs and against issue 9's targets.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from treq.client import HTTPClient
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList, DeferredSemaphore, succeed
from twisted.internet.defer import TimeoutError as Timeout
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LISTENING = re.compile(rb"tmd listening on TCP [0-9.]+:(\d+)")
DOWNSTREAM_LISTENING = re.compile(rb"downstream listening on TCP [0-9.]+:(\d+)")
TWISTD = "from twisted.scripts.twistd import run; run()"
"""twistd from this very interpreter, whatever is (or is not) on PATH."""

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
REQUEST_TIMEOUT = 10.0
DELIVERY_TIMEOUT = 15.0
CONNECT_TIMEOUT = 15.0
CONNECT_PARALLEL = 32
"""Websocket handshakes in flight at once (the daemon listens with Twisted's backlog of 50)."""
WARMUP = 20
SCENARIOS = ("floor", "latency", "paced", "throughput", "fanout", "ws", "cross", "replay",
             "load")
POSTGRES_SCENARIOS = ("latency", "paced", "throughput", "cross")
LOADGEN_SCENARIOS = ("paced", "load")
PACED_RATE = 200
"""Posts per second of the paced (open-loop) HTTP post scenario."""
MAX_CONNECTIONS = 30000
"""The daemons' --max-connections and --max-connections-per-address: all come from 127.0.0.1."""
LOAD_WINDOW = 64
"""Posts not yet delivered to every subscriber at most, at fan-out saturation."""
IDLE_PER_ROOM = 100
"""Idle connections per room (tmd coalesces presence, so any size would do)."""
IDLE_SETTLE = 2.0
"""Seconds after the last idle connection opens before the server's RSS is read."""
POSTGRES_ENVIRONMENT = "TMD_BENCH_POSTGRES"

REPLAY_RATE = 200
"""Requests per second of the paced (open-loop) replay scenario."""
DRAIN_TIMEOUT = 120.0
"""Seconds the downstream may take to receive everything replayed so far."""
DRAIN_POLL = 0.005
"""Seconds between two reads of the downstream's count."""

TODAYSMEET = {"p50_ms": 3.0, "p90_ms": 4.0}
"""TodaysMeet's post (reflektor answering a POST): the figures we compare against."""


@dataclass(frozen=True)
class Sizes:
    floor_n: int
    post_n: int
    concurrency: int
    throughput_m: int
    fanout: tuple[tuple[int, int], ...]  # (K clients, P posts) per run
    ws_n: int
    pg_post_n: int  # post latency on PostgreSQL
    pg_throughput_m: int  # post throughput on PostgreSQL
    cross_n: int  # posts on daemon A timed to a websocket on daemon B (PostgreSQL)
    replay_paced_s: float  # seconds of /replay/ requests at REPLAY_RATE, open loop
    replay_saturation_s: float  # seconds of /replay/ requests by `concurrency` closed loops
    replay_total: int  # requests timed until the downstream has them all
    deadline: float  # seconds for all scenarios of one engine together
    paced_s: float  # seconds of HTTP posts at PACED_RATE, open loop (load generator)
    load_fanout: int  # websocket subscribers of the one fan-out room
    load_rates: tuple[int, ...]  # posts/s into that room, each for load_rate_s
    load_rate_s: float
    load_saturation_s: float  # seconds of posting as fast as LOAD_WINDOW allows
    load_rooms: tuple[int, int]  # (rooms, subscribers of each) for the many-rooms scenario
    load_rooms_rate: int  # posts/s over all those rooms
    load_rooms_s: float
    load_idle: int  # idle websocket connections
    load_drain_s: float  # seconds the subscribers may take to get everything after posting


QUICK = Sizes(floor_n=300, post_n=800, concurrency=8, throughput_m=1600,
              fanout=((200, 50),), ws_n=800, pg_post_n=300, pg_throughput_m=800, cross_n=200,
              replay_paced_s=2, replay_saturation_s=2, replay_total=1000, deadline=150,
              paced_s=2, load_fanout=200, load_rates=(20, 50, 100), load_rate_s=1,
              load_saturation_s=1, load_rooms=(20, 10), load_rooms_rate=100, load_rooms_s=1,
              load_idle=1000, load_drain_s=20)
FULL = Sizes(floor_n=2000, post_n=5000, concurrency=8, throughput_m=10000,
             fanout=((200, 300), (1000, 200)), ws_n=5000, pg_post_n=2000, pg_throughput_m=5000,
             cross_n=2000, replay_paced_s=5, replay_saturation_s=5, replay_total=2000,
             deadline=1200, paced_s=10, load_fanout=1000, load_rates=(20, 50, 100),
             load_rate_s=10, load_saturation_s=10, load_rooms=(200, 10), load_rooms_rate=400,
             load_rooms_s=10, load_idle=10000, load_drain_s=120)


class BenchError(Exception):
    """The daemon answered wrongly, lost or reordered something, or took too long."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise BenchError(message)


# -- statistics -------------------------------------------------------------------------------

def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q from 0 to 1)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(seconds: list[float]) -> dict[str, float]:
    """Median, p90, p99, max and mean of durations in seconds, as milliseconds."""
    ms = sorted(s * 1000 for s in seconds)
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 0.50), 3),
        "p90_ms": round(percentile(ms, 0.90), 3),
        "p99_ms": round(percentile(ms, 0.99), 3),
        "max_ms": round(ms[-1], 3) if ms else math.nan,
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else math.nan,
    }


# -- the daemon -------------------------------------------------------------------------------

class _DaemonOutput(ProcessProtocol):
    def __init__(self, listening: re.Pattern[bytes] = LISTENING) -> None:
        self._pattern = listening
        self.lines: list[str] = []
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.status: tuple[int | None, int | None] = (None, None)
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        for line in complete:
            self.lines.append(line.decode("utf-8", "replace"))
            match = self._pattern.search(line)
            if match and not self.listening.called:
                self.listening.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if self._partial:
            self.lines.append(self._partial.decode("utf-8", "replace"))
        ended = reason.value if reason.check(ProcessDone, ProcessTerminated) else None
        self.status = (getattr(ended, "exitCode", None), getattr(ended, "signal", None))
        if not self.listening.called:
            tail = "\n".join(self.lines[-30:])
            self.listening.errback(
                BenchError(f"the child exited {self.status} before listening:\n{tail}"))
        self.ended.callback(None)


def cpu_seconds_of(pid: int | None) -> float:
    """User plus system CPU process C{pid} has used so far, all its threads."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A child process of this interpreter that says on which port it listens."""

    args: list[str]
    what = "the child"
    executable = sys.executable

    def __init__(self, reactor: Any, directory: Path,
                 listening: re.Pattern[bytes] = LISTENING) -> None:
        self._reactor = reactor
        self.directory = directory
        self.port = 0
        self._output = _DaemonOutput(listening)
        self._process: Any = None

    async def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env["PYTHONPATH"] = str(REPO)  # the tmd of this tree, wherever it is installed from
        env["PYTHONUNBUFFERED"] = "1"
        started = time.perf_counter()
        self._process = self._reactor.spawnProcess(
            self._output, self.executable, self.args, env=env, path=str(self.directory))
        self.port = await self._output.listening.addTimeout(START_TIMEOUT, self._reactor)
        self.start_seconds = time.perf_counter() - started

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return getattr(self._process, "pid", None)

    @property
    def log(self) -> list[str]:
        return self._output.lines

    async def stop(self) -> tuple[int | None, int | None]:
        """SIGTERM, then wait; SIGKILL (and an error) if it does not go in time."""
        if self._process is not None and not self._output.ended.called:
            self._process.signalProcess("TERM")
            try:
                await self._output.ended.addTimeout(STOP_TIMEOUT, self._reactor)
            except Exception:
                self._process.signalProcess("KILL")
                raise BenchError(
                    f"{self.what} did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM") from None
        return self._output.status

    def cpu_seconds(self) -> float:
        """User plus system CPU the child has used so far, all its threads."""
        return cpu_seconds_of(self.pid)

    def memory(self) -> dict[str, int]:
        """Resident and peak resident memory, in KiB."""
        found = {}
        try:
            with open(f"/proc/{self.pid}/status") as status:
                for line in status:
                    key, _, value = line.partition(":")
                    if key in ("VmRSS", "VmHWM"):
                        found[key] = int(value.split()[0])
        except (OSError, ValueError):
            pass
        return {"rss_kib": found.get("VmRSS", -1), "peak_rss_kib": found.get("VmHWM", -1)}

    def problems(self) -> list[str]:
        """Tracebacks and failures the child logged."""
        return [line for line in self.log
                if "Traceback (most recent call last)" in line or "Unhandled" in line
                or "#critical]" in line or "#error]" in line]


class Daemon(Child):
    """One C{twistd -n tmd} child process: on a fresh SQLite file, or on C{database}."""

    what = "the daemon"

    def __init__(self, reactor: Any, directory: Path, profile: Path | None,
                 database: str | None = None, db_pool_size: int | None = None,
                 extra: Sequence[str] = ()) -> None:
        super().__init__(reactor, directory)
        self.database = database or f"sqlite:{directory / 'tmd.sqlite3'}"
        self.args = [sys.executable, "-c", TWISTD, "-n", "--pidfile="]
        if profile is not None:  # twistd's own profiler writes its file before it exits
            self.args += [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
        self.args += ["tmd", "--listen", "tcp:0:interface=127.0.0.1", "--database", self.database]
        for limit in ("participant_posts", "address_posts", "address_joins", "address_rooms"):
            self.args += ["--limit", f"{limit}=off"]  # one address measures capacity, not limits
        for option in ("--max-connections", "--max-connections-per-address"):
            self.args += [option, str(MAX_CONNECTIONS)]
        if db_pool_size is not None:
            self.args += ["--db-pool-size", str(db_pool_size)]
        self.args += extra


class Downstream(Child):
    """C{bench/downstream.py}: answers 200 at once, counts requests, says how many at /count."""

    what = "the downstream"

    def __init__(self, reactor: Any, directory: Path) -> None:
        super().__init__(reactor, directory, DOWNSTREAM_LISTENING)
        self.args = [sys.executable, str(HERE / "downstream.py")]


# -- HTTP -------------------------------------------------------------------------------------

class Api:
    """The daemon's JSON API over one persistent treq connection pool."""

    def __init__(self, reactor: Any, base: str, connections: int) -> None:
        self._reactor = reactor
        self.base = base
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = connections
        self.pool.retryAutomatically = False
        self.http = HTTPClient(Agent(reactor, pool=self.pool))

    async def call(self, method: str, path: str, expect: int, body: Any = None,
                   token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs: dict[str, Any] = {"headers": headers, "timeout": REQUEST_TIMEOUT}
        if body is not None:
            kwargs["json"] = body
        response = await self.http.request(method, self.base + path, **kwargs)
        content = await treq.content(response)
        if response.code != expect:
            retry = response.headers.getRawHeaders(b"Retry-After")
            raise BenchError(f"{method} {path}: expected {expect}, got {response.code}"
                             f"{' Retry-After ' + str(retry) if retry else ''}: {content[:300]!r}")
        if not content:
            return None
        return json.loads(content)

    async def room(self, name: str) -> str:
        created = await self.call("POST", "/api/v1/rooms", 201, {"name": name, "title": name})
        check(created["room"]["name"] == name, f"room created as {created['room']['name']!r}")
        return name

    async def join(self, room: str, nickname: str) -> str:
        joined = await self.call("POST", f"/api/v1/rooms/{room}/join", 201, {"nickname": nickname})
        check(joined["participant"]["nickname"] == nickname, "joined under another nickname")
        return str(joined["token"])

    async def post(self, room: str, token: str, body: str) -> dict[str, Any]:
        message = await self.call("POST", f"/api/v1/rooms/{room}/messages", 201,
                                  {"body": body}, token)
        check(message["body"] == body and message["room"] == room, f"posted, got {message}")
        return dict(message)

    async def check_room(self, room: str, last_seq: int) -> None:
        """The room holds messages 1..last_seq, in order, once each."""
        seqs: list[int] = []
        after = 0
        for _ in range(last_seq // 1000 + 2):
            page = await self.call("GET", f"/api/v1/rooms/{room}/messages?after={after}&limit=1000",
                                   200)
            seqs += [m["seq"] for m in page["messages"]]
            check(page["last_seq"] == last_seq,
                  f"{room}: last_seq is {page['last_seq']}, expected {last_seq}")
            if len(page["messages"]) < 1000:
                break
            after = seqs[-1]
        check(seqs == list(range(1, last_seq + 1)),
              f"{room}: the stored seqs are not 1..{last_seq} ({len(seqs)} of them)")

    async def close(self) -> None:
        await self.pool.closeCachedConnections()


# -- websockets -------------------------------------------------------------------------------

class Tracker:
    """Arrival times of live message frames across many clients of one room."""

    def __init__(self, clients: int) -> None:
        self.clients = clients
        self.count: dict[int, int] = {}
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._waiting: dict[int, Deferred[float]] = {}

    def arrived(self, seq: int, at: float) -> None:
        count = self.count.get(seq, 0) + 1
        self.count[seq] = count
        self.first.setdefault(seq, at)
        self.last[seq] = at
        if count == self.clients and seq in self._waiting:
            self._waiting.pop(seq).callback(at)

    def everyone_has(self, seq: int) -> Deferred[float]:
        if self.count.get(seq, 0) >= self.clients:
            return succeed(self.last[seq])
        d: Deferred[float] = Deferred()
        self._waiting[seq] = d
        return d


class LiveClient(WebSocketClientProtocol):
    """One live connection: checks its frames as they come and times them."""

    factory: LiveClientFactory

    def __init__(self) -> None:
        super().__init__()
        self.welcome: Deferred[dict[str, Any]] = Deferred()
        self.welcome_frame: dict[str, Any] = {}
        self.gone: Deferred[int | None] = Deferred()
        self.seqs: list[int] = []
        self.problems: list[str] = []
        self.acks: dict[str, Deferred[tuple[float, int]]] = {}
        self.online = 0

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        now = time.perf_counter()
        frame = json.loads(payload)
        kind = frame.get("type")
        if kind == "message":
            seq = frame["message"]["seq"]
            if self.seqs and seq <= self.seqs[-1]:
                self.problems.append(f"seq {seq} after {self.seqs[-1]}")
            self.seqs.append(seq)
            tracker = self.factory.tracker
            if tracker is not None:
                tracker.arrived(seq, now)
        elif kind == "presence":
            self.online = frame["online"]
            waiting = self.factory.presence
            if waiting is not None:
                waiting(self)
        elif kind == "ack":
            acked = self.acks.pop(frame.get("ref"), None)
            if acked is None:
                self.problems.append(f"unexpected ack {frame}")
            else:
                acked.callback((now, frame["seq"]))
        elif kind == "welcome":
            if self.welcome.called:
                self.problems.append("a second welcome")
            else:
                self.welcome_frame = frame
                self.welcome.callback(frame)
        elif kind == "error":
            self.problems.append(f"error frame {frame}")
            acked = self.acks.pop(frame.get("ref"), None)
            if acked is not None:
                acked.errback(BenchError(f"error frame {frame}"))
        else:
            self.problems.append(f"unknown frame {frame}")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.welcome.called:
            self.welcome.errback(BenchError(f"websocket closed before welcome: {code} {reason}"))
        for acked in self.acks.values():
            acked.errback(BenchError(f"websocket closed awaiting an ack: {code} {reason}"))
        self.acks.clear()
        if not self.factory.closing:
            self.problems.append(f"closed by the server: {code} {reason}")
        self.gone.callback(code)

    def post(self, body: str, ref: str) -> Deferred[tuple[float, int]]:
        d: Deferred[tuple[float, int]] = Deferred()
        self.acks[ref] = d
        self.sendMessage(json.dumps({"type": "post", "body": body, "ref": ref}).encode())
        return d


class LiveClientFactory(WebSocketClientFactory):
    protocol = LiveClient  # type: ignore[assignment]

    def __init__(self, url: str, reactor: Any) -> None:
        super().__init__(url, reactor=reactor)
        # The daemon is trusted here: skip the client's UTF-8 check, keep its own costs low.
        self.setProtocolOptions(utf8validateIncoming=False, openHandshakeTimeout=CONNECT_TIMEOUT,
                                closeHandshakeTimeout=5)
        self.tracker: Tracker | None = None
        self.presence: Callable[[LiveClient], None] | None = None
        self.closing = False


async def bounded(reactor: Any, d: Deferred[Any], seconds: float, what: str) -> Any:
    """C{await d}, or a L{BenchError} (and C{d} cancelled) after C{seconds}."""
    try:
        return await d.addTimeout(seconds, reactor)
    except Timeout:
        raise BenchError(f"timed out after {seconds} s: {what}") from None


async def connect_many(reactor: Any, factory: LiveClientFactory, port: int,
                       count: int) -> list[LiveClient]:
    """C{count} clients, each past its welcome frame, a few handshakes at a time."""
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=CONNECT_TIMEOUT)
    limit = DeferredSemaphore(CONNECT_PARALLEL)
    clients: list[LiveClient] = []

    async def one() -> None:
        client = cast(LiveClient, await endpoint.connect(factory))
        await bounded(reactor, client.welcome, CONNECT_TIMEOUT, "a welcome frame")
        clients.append(client)

    async def limited() -> None:
        await limit.acquire()
        try:
            await one()
        finally:
            limit.release()

    results = await DeferredList([Deferred.fromCoroutine(limited()) for _ in range(count)],
                                 consumeErrors=True)
    for ok, value in results:
        if not ok:
            raise BenchError(
                f"a websocket client could not connect: {cast(Failure, value).getErrorMessage()}")
    return clients


async def close_all(reactor: Any, factory: LiveClientFactory, clients: list[LiveClient]) -> None:
    factory.closing = True
    for client in clients:
        client.sendClose(1000)
    await bounded(reactor, DeferredList([c.gone for c in clients], consumeErrors=True), 15,
                  "the websocket clients to close")


# -- the load generator and the reference servers ---------------------------------------------

REFERENCE_LISTENING = re.compile(rb"reference listening on TCP [0-9.]+:(\d+)")
NODE = shutil.which("node")
NPM = shutil.which("npm")


def node_ready() -> str | None:
    """
    Why the Node load generator cannot run, or None once it can: C{npm ci} in bench/
    installs C{ws} from package-lock.json when node_modules is missing or older.
    """
    if NODE is None or NPM is None:
        return "Node.js (node and npm) is not installed: the load generator scenarios are skipped"
    installed = HERE / "node_modules" / ".package-lock.json"
    lock = HERE / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        progress("npm ci (bench/node_modules) ...")
        done = subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=HERE, timeout=300,
                              capture_output=True, text=True)
        progress(" done\n" if done.returncode == 0 else " failed\n")
        if done.returncode != 0:
            return f"npm ci failed in bench/: {done.stderr.strip()[-500:]}"
    return None


class _LoadGenOutput(ProcessProtocol):
    def __init__(self) -> None:
        self.replies: dict[int, Deferred[dict[str, Any]]] = {}
        self.ready: Deferred[dict[str, Any]] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.errors: list[str] = []
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        for line in complete:
            answer = json.loads(line)
            if answer.get("ready"):
                self.ready.callback(answer)
            elif answer.get("id") in self.replies:
                self.replies.pop(answer["id"]).callback(answer)

    def errReceived(self, data: bytes) -> None:
        self.errors.append(data.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        gone = BenchError(f"the load generator ended: {reason.getErrorMessage()} "
                          f"{''.join(self.errors)[-1000:]}")
        if not self.ready.called:
            self.ready.errback(gone)
        for waiting in self.replies.values():
            waiting.errback(gone)
        self.replies.clear()
        self.ended.callback(None)


class LoadGen:
    """C{node bench/loadgen.js}: websocket subscribers and paced HTTP posters, driven over stdio."""

    def __init__(self, reactor: Any, directory: Path) -> None:
        self._reactor = reactor
        self._directory = directory
        self._output = _LoadGenOutput()
        self._process: Any = None
        self._ids = 0
        self.node = ""

    async def start(self) -> None:
        assert NODE is not None
        self._process = self._reactor.spawnProcess(
            self._output, NODE, [NODE, str(HERE / "loadgen.js")], env=dict(os.environ),
            path=str(self._directory))
        ready = await bounded(self._reactor, self._output.ready, START_TIMEOUT,
                              "the load generator to start")
        self.node = ready["node"]

    async def command(self, command: str, seconds: float, **args: Any) -> dict[str, Any]:
        """Run C{command} in the load generator; its answer, or a L{BenchError}."""
        self._ids += 1
        answer: Deferred[dict[str, Any]] = Deferred()
        self._output.replies[self._ids] = answer
        self._process.write(json.dumps({"id": self._ids, "command": command, **args}).encode()
                            + b"\n")
        result = await bounded(self._reactor, answer, seconds, f"the load generator's {command}")
        if not result["ok"]:
            raise BenchError(f"the load generator's {command} failed: {result['error']}")
        return result

    def cpu_seconds(self) -> float:
        return cpu_seconds_of(getattr(self._process, "pid", None))

    async def stop(self) -> None:
        if self._process is not None and not self._output.ended.called:
            self._process.closeStdin()
            try:
                await self._output.ended.addTimeout(STOP_TIMEOUT, self._reactor)
            except Exception:
                self._process.signalProcess("KILL")


class Reference(Child):
    """A reference broadcast server (bench/reference/): Autobahn's, or Node ws's."""

    def __init__(self, reactor: Any, directory: Path, kind: str) -> None:
        super().__init__(reactor, directory, REFERENCE_LISTENING)
        self.kind = kind
        if kind == "autobahn":
            self.what = "the Autobahn reference server"
            self.args = [sys.executable, str(HERE / "reference" / "autobahn_server.py")]
        else:
            assert NODE is not None
            self.what = "the Node ws reference server"
            self.executable = NODE
            self.args = [NODE, str(HERE / "reference" / "ws_server.js")]


@dataclass
class Target:
    """A server the load generator drives: tmd (with its API, to make rooms) or a reference."""

    name: str
    process: Child
    api: Api | None = None

    async def rooms(self, bench: Bench, count: int, what: str,
                    posting: bool = True) -> list[dict[str, Any]]:
        """C{count} fresh rooms, each as the load generator wants it: ws URL, post URL, token."""
        made = []
        for _ in range(count):
            name = bench.room_name(what)
            token = None
            if self.api is not None:
                await self.api.room(name)
                if posting:
                    token = await self.api.join(name, "speaker")
            base = f"127.0.0.1:{self.process.port}/api/v1/rooms/{name}"
            made.append({"name": name, "ws": f"ws://{base}/live",
                         "post": f"http://{base}/messages" if posting else None,
                         "token": token})
        return made


# -- scenarios --------------------------------------------------------------------------------

@dataclass
class Bench:
    reactor: Any
    daemon: Daemon
    api: Api
    sizes: Sizes
    only: frozenset[str] = frozenset()
    warnings: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    rooms: int = 0
    engine: str = "sqlite"
    """C{sqlite}, or C{postgresql}: its results are keyed C{pg_...} and titled so."""
    db_pool_size: int | None = None
    others: list[Daemon] = field(default_factory=list)
    """Daemons started by a scenario besides C{daemon} (the cross-daemon one's)."""
    loadgen: LoadGen | None = None
    """The Node load generator, if Node.js is here and a scenario needs it."""
    profile: Path | None = None
    """Where the load scenarios' tmd daemon writes its profile (C{--profile} plus .load)."""

    def room_name(self, what: str) -> str:
        self.rooms += 1
        return f"bench-{what}-{self.rooms}-{os.getpid()}"

    def key(self, name: str) -> str:
        return name if self.engine == "sqlite" else f"pg_{name}"

    def title(self, title: str) -> str:
        return title if self.engine == "sqlite" else f"{title}, PostgreSQL"

    async def http_floor(self) -> None:
        """GET of a room name that cannot exist: Klein, treq and loopback, no database."""
        n = self.sizes.floor_n
        for _ in range(WARMUP):
            await self.api.call("GET", "/api/v1/rooms/-", 404)
        times = []
        started = time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            await self.api.call("GET", "/api/v1/rooms/-", 404)
            times.append(time.perf_counter() - t0)
        wall = time.perf_counter() - started
        self.results["http_floor"] = {
            "title": "HTTP floor: GET 404, no database (reference)",
            "requests": n, **summary(times), "per_s": round(n / wall, 1)}

    async def post_latency(self) -> None:
        n = self.sizes.post_n if self.engine == "sqlite" else self.sizes.pg_post_n
        room = await self.api.room(self.room_name("latency"))
        token = await self.api.join(room, "solo")
        for i in range(WARMUP):
            await self.api.post(room, token, f"warm-up {i}")
        times = []
        started = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            message = await self.api.post(room, token, f"post {i}: is light a wave?")
            times.append(time.perf_counter() - t0)
            check(message["seq"] == WARMUP + i + 1, f"post {i} got seq {message['seq']}")
        wall = time.perf_counter() - started
        await self.api.check_room(room, WARMUP + n)
        self.results[self.key("post_latency")] = {
            "title": self.title("post latency (HTTP, sequential)"), "engine": self.engine,
            "posts": n, **summary(times), "per_s": round(n / wall, 1)}

    async def post_throughput(self) -> None:
        c = self.sizes.concurrency
        m = self.sizes.throughput_m if self.engine == "sqlite" else self.sizes.pg_throughput_m
        room = await self.api.room(self.room_name("throughput"))
        tokens = [await self.api.join(room, f"poster-{i}") for i in range(c)]
        for i in range(WARMUP):
            await self.api.post(room, tokens[i % c], f"warm-up {i}")
        times: list[float] = []
        seqs: list[int] = []
        remaining = [m]

        async def poster(token: str) -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                t0 = time.perf_counter()
                message = await self.api.post(room, token, f"post {remaining[0]}")
                times.append(time.perf_counter() - t0)
                seqs.append(message["seq"])

        started = time.perf_counter()
        results = await DeferredList([Deferred.fromCoroutine(poster(t)) for t in tokens],
                                     consumeErrors=True)
        wall = time.perf_counter() - started
        for ok, value in results:
            if not ok:
                raise BenchError(
                    f"a concurrent poster failed: {cast(Failure, value).getErrorMessage()}")
        check(sorted(seqs) == list(range(WARMUP + 1, WARMUP + m + 1)),
              "concurrent posts did not get seqs WARMUP+1..WARMUP+M once each")
        await self.api.check_room(room, WARMUP + m)
        self.results[self.key("post_throughput")] = {
            "title": self.title(f"post throughput (HTTP, {c} concurrent posters)"),
            "engine": self.engine, "posts": m, "concurrency": c, **summary(times),
            "per_s": round(m / wall, 1)}

    async def fanout(self, k: int, p: int) -> None:
        room = await self.api.room(self.room_name(f"fanout{k}"))
        token = await self.api.join(room, "speaker")
        warmup = 3
        factory = LiveClientFactory(
            f"ws://127.0.0.1:{self.daemon.port}/api/v1/rooms/{room}/live", self.reactor)
        tracker = Tracker(k)
        factory.tracker = tracker
        connect_started = time.perf_counter()
        clients = await connect_many(self.reactor, factory, self.daemon.port, k)
        connect_seconds = time.perf_counter() - connect_started
        try:
            # Quiet point: every client has heard presence say all K are online.
            settled: Deferred[None] = Deferred()
            everyone: set[LiveClient] = set()

            def heard(client: LiveClient) -> None:
                if client.online == k:
                    everyone.add(client)
                    if len(everyone) == k and not settled.called:
                        settled.callback(None)

            factory.presence = heard
            for client in clients:
                heard(client)
            try:
                await bounded(self.reactor, settled, 5, f"presence to say {k} online to all")
            except BenchError as e:  # presence is not what we measure: note it, go on
                self.warnings.append(f"{e} ({len(everyone)} heard it)")
            factory.presence = None

            for i in range(warmup):
                delivered = tracker.everyone_has(i + 1)
                await self.api.post(room, token, f"warm-up {i}")
                await bounded(self.reactor, delivered, DELIVERY_TIMEOUT, f"warm-up {i + 1}")

            gc.collect()
            latencies: list[float] = []
            first: list[float] = []
            replies: list[float] = []
            started = time.perf_counter()
            for i in range(p):
                seq = warmup + i + 1
                delivered = tracker.everyone_has(seq)
                t0 = time.perf_counter()
                message = await self.api.post(room, token, f"question {i}: is light a wave?")
                replies.append(time.perf_counter() - t0)
                check(message["seq"] == seq, f"fan-out post {i} got seq {message['seq']}")
                last = await bounded(self.reactor, delivered, DELIVERY_TIMEOUT,
                                     f"all {k} clients to receive seq {seq} "
                                     f"({tracker.count.get(seq, 0)} had it)")
                latencies.append(last - t0)
                first.append(tracker.first[seq] - t0)
            wall = time.perf_counter() - started

            expected = list(range(1, warmup + p + 1))
            wrong = [c for c in clients if c.seqs != expected or c.problems]
            if wrong:
                sample = wrong[0]
                raise BenchError(
                    f"{len(wrong)} of {k} clients did not get seqs 1..{warmup + p} once each, in "
                    f"order; one got {len(sample.seqs)} frames, problems {sample.problems[:3]}")
            await self.api.check_room(room, warmup + p)
        finally:
            await close_all(self.reactor, factory, clients)

        self.results[f"fanout_{k}"] = {
            "title": f"fan-out to {k} websockets (POST sent -> last client has it)",
            "clients": k, "posts": p, **summary(latencies),
            "first_client_p50_ms": summary(first)["p50_ms"],
            "post_reply_p50_ms": summary(replies)["p50_ms"],
            "frames_delivered": k * p,
            "frames_per_s": round(k * p / wall, 1),
            "frames_per_s_while_delivering": round(k * p / sum(latencies), 1),
            "connect_seconds": round(connect_seconds, 3),
        }

    async def ws_round_trip(self) -> None:
        n = self.sizes.ws_n
        room = await self.api.room(self.room_name("wspost"))
        token = await self.api.join(room, "socket")
        factory = LiveClientFactory(
            f"ws://127.0.0.1:{self.daemon.port}/api/v1/rooms/{room}/live?token={token}",
            self.reactor)
        tracker = Tracker(1)
        factory.tracker = tracker
        (client,) = await connect_many(self.reactor, factory, self.daemon.port, 1)
        try:
            welcome = client.welcome_frame
            check(welcome["you"] is not None and welcome["you"]["nickname"] == "socket",
                  f"welcome does not know us: {welcome['you']}")
            for i in range(WARMUP):
                await bounded(self.reactor, client.post(f"warm-up {i}", f"w{i}"),
                              REQUEST_TIMEOUT, "an ack")
            times = []
            started = time.perf_counter()
            for i in range(n):
                t0 = time.perf_counter()
                acked_at, seq = await bounded(self.reactor, client.post(f"post {i}", f"r{i}"),
                                              REQUEST_TIMEOUT, f"the ack of post {i}")
                times.append(acked_at - t0)
                check(seq == WARMUP + i + 1, f"ws post {i} acked with seq {seq}")
            wall = time.perf_counter() - started
            last = WARMUP + n
            if tracker.count.get(last, 0) < 1:
                await bounded(self.reactor, tracker.everyone_has(last), DELIVERY_TIMEOUT,
                              "our own last message frame")
            check(client.seqs == list(range(1, last + 1)) and not client.problems,
                  f"the poster's socket saw {len(client.seqs)} message frames, "
                  f"problems {client.problems[:3]}")
            await self.api.check_room(room, last)
        finally:
            await close_all(self.reactor, factory, [client])
        self.results["ws_round_trip"] = {
            "title": "websocket post -> ack (sequential)",
            "posts": n, **summary(times), "per_s": round(n / wall, 1)}

    async def cross_daemon(self) -> None:
        """
        A second daemon on the same database: each POST on the first (A) is timed until
        a websocket client of the second (B) has its frame, and, for reference, until a
        client of A itself has it.
        """
        n = self.sizes.cross_n
        other = Daemon(self.reactor, self.daemon.directory, None, self.daemon.database,
                       self.db_pool_size)
        self.others.append(other)
        other_api: Api | None = None
        factories: list[LiveClientFactory] = []
        clients: list[LiveClient] = []
        try:
            await other.start()
            other_api = Api(self.reactor, other.url, 2)
            room = await self.api.room(self.room_name("cross"))
            token = await self.api.join(room, "speaker")
            trackers = []
            for daemon in (other, self.daemon):  # B, then A
                factory = LiveClientFactory(
                    f"ws://127.0.0.1:{daemon.port}/api/v1/rooms/{room}/live?since=0",
                    self.reactor)
                factory.tracker = Tracker(1)
                trackers.append(factory.tracker)
                clients += await connect_many(self.reactor, factory, daemon.port, 1)
                factories.append(factory)
            at_b, at_a = trackers
            for i in range(WARMUP):
                delivered = at_b.everyone_has(i + 1)
                await self.api.post(room, token, f"warm-up {i}")
                await bounded(self.reactor, delivered, DELIVERY_TIMEOUT,
                              f"warm-up {i + 1} on the other daemon")
            cross: list[float] = []
            local: list[float] = []
            replies: list[float] = []
            other_cpu = other.cpu_seconds()
            started = time.perf_counter()
            for i in range(n):
                seq = WARMUP + i + 1
                on_b, on_a = at_b.everyone_has(seq), at_a.everyone_has(seq)
                t0 = time.perf_counter()
                message = await self.api.post(room, token, f"question {i}: is light a wave?")
                replies.append(time.perf_counter() - t0)
                check(message["seq"] == seq, f"cross-daemon post {i} got seq {message['seq']}")
                cross.append(await bounded(self.reactor, on_b, DELIVERY_TIMEOUT,
                                           f"seq {seq} on the other daemon") - t0)
                local.append(await bounded(self.reactor, on_a, DELIVERY_TIMEOUT,
                                           f"seq {seq} on the posting daemon") - t0)
            wall = time.perf_counter() - started
            other_cpu = other.cpu_seconds() - other_cpu
            expected = list(range(1, WARMUP + n + 1))
            for client, where in zip(clients, ("the other", "the posting"), strict=True):
                check(client.seqs == expected and not client.problems,
                      f"the client on {where} daemon got {len(client.seqs)} message frames, "
                      f"not seqs 1..{WARMUP + n} once each, in order; {client.problems[:3]}")
            await other_api.check_room(room, WARMUP + n)  # B reads what A wrote
        finally:
            for factory, client in zip(factories, clients, strict=False):
                await close_all(self.reactor, factory, [client])
            if other_api is not None:
                await other_api.close()
            status = await other.stop()
        check(status in ((0, None), (None, signal.SIGTERM)),
              f"the second daemon exited uncleanly: {status}")
        check(not other.problems(), f"the second daemon logged problems: {other.problems()[:3]}")
        self.results[self.key("cross_daemon")] = {
            "title": "cross-daemon delivery (POST on A -> websocket on B)",
            "engine": self.engine, "posts": n, **summary(cross),
            "same_daemon": {k: v for k, v in summary(local).items() if k != "n"},
            "post_reply_p50_ms": summary(replies)["p50_ms"],
            "per_s": round(n / wall, 1),
            "other_daemon_cpu_s": round(other_cpu, 3),
        }

    async def replay(self) -> None:
        """
        The reflektor: a daemon replaying C{/replay/...} to one fast downstream (its own
        process), with the outbox off, then on (SQLite): the 202's latency, paced and
        at saturation, and how fast the deliveries reach the downstream.
        """
        downstream = Downstream(self.reactor, self.daemon.directory)
        counter: Api | None = None
        try:
            await downstream.start()
            counter = Api(self.reactor, downstream.url, 2)
            for outbox in (False, True):
                await self.replay_daemon(downstream, counter, outbox)
            seen = await counter.call("GET", "/count", 200)
            check(seen["unexpected"] == 0, f"the downstream got {seen['unexpected']} requests "
                                           "that were not replays")
        finally:
            if counter is not None:
                await counter.close()
            status = await downstream.stop()
        check(status in ((0, None), (None, signal.SIGTERM)),
              f"the downstream exited uncleanly: {status}")
        check(not downstream.problems(), f"the downstream logged problems: "
                                         f"{downstream.problems()[:3]}")

    async def replay_daemon(self, downstream: Downstream, counter: Api, outbox: bool) -> None:
        """A daemon with C{[replay]} to C{downstream} (outbox on or off), and its scenarios."""
        name = "replay-outbox" if outbox else "replay"
        directory = self.daemon.directory
        token = secrets.token_urlsafe(24)
        (directory / f"{name}.token").write_text(token + "\n")
        (directory / f"{name}.toml").write_text(
            "[replay]\n"
            f"token_file = {json.dumps(str(directory / f'{name}.token'))}\n"
            f"downstreams = [{json.dumps(downstream.url + '/in')}]\n"
            f"outbox = {'true' if outbox else 'false'}\n"
            "max_length = 10000000\n")  # a saturating client must not overflow the queue
        daemon = Daemon(self.reactor, directory, None,
                        f"sqlite:{directory / (name + '.sqlite3')}",
                        extra=["--config", str(directory / f"{name}.toml")])
        api: Api | None = None
        try:
            await daemon.start()
            api = Api(self.reactor, daemon.url, 2 * self.sizes.concurrency + 2)
            sender = ReplaySender(api, token)
            sender.base = (await counter.call("GET", "/count", 200))["count"]
            for _ in range(WARMUP):
                await sender.send()
            await self.replay_drained(counter, sender.expected)
            for scenario in (self.replay_paced, self.replay_saturation, self.replay_throughput):
                cpu = daemon.cpu_seconds()
                key, result = await scenario(sender, counter, outbox)
                result["replay_daemon_cpu_s"] = round(daemon.cpu_seconds() - cpu, 3)
                self.results[key] = result
        finally:
            if api is not None:
                await api.close()
            status = await daemon.stop()
            (directory / f"daemon-{name}.log").write_text("\n".join(daemon.log) + "\n")
        check(status in ((0, None), (None, signal.SIGTERM)),
              f"the replay daemon exited uncleanly: {status}")
        check(not daemon.problems(), f"the replay daemon logged problems: {daemon.problems()[:3]}")

    async def replay_drained(self, counter: Api, total: int) -> dict[str, Any]:
        """Wait until the downstream has C{total} deliveries, each once; its /count."""
        deadline = time.perf_counter() + DRAIN_TIMEOUT
        while True:
            seen = await counter.call("GET", "/count", 200)
            if seen["count"] >= total:
                break
            if time.perf_counter() > deadline:
                raise BenchError(f"the downstream has {seen['count']} of {total} replays "
                                 f"after {DRAIN_TIMEOUT:.0f} s")
            await task.deferLater(self.reactor, DRAIN_POLL, lambda: None)
        check(seen["count"] == total and seen["distinct"] == total,
              f"the downstream got {seen['count']} requests ({seen['distinct']} distinct), "
              f"not {total} once each")
        return dict(seen)

    async def replay_paced(self, sender: ReplaySender, counter: Api,
                           outbox: bool) -> tuple[str, dict[str, Any]]:
        """Open loop: a request every 1/REPLAY_RATE s on schedule, not awaiting the answers."""
        n = int(REPLAY_RATE * self.sizes.replay_paced_s)
        gc.collect()
        times: list[float] = []
        lags: list[float] = []
        sends: list[Deferred[None]] = []
        started = time.perf_counter()
        for i in range(n):
            due = started + i / REPLAY_RATE
            wait = due - time.perf_counter()
            if wait > 0:
                await task.deferLater(self.reactor, wait, lambda: None)
            lags.append(time.perf_counter() - due)
            sends.append(Deferred.fromCoroutine(sender.send(times)))
        await gather(sends, "a paced replay request")
        wall = time.perf_counter() - started
        await self.replay_drained(counter, sender.expected)
        return replay_key("paced", outbox), {
            "title": f"replay 202, paced {REPLAY_RATE}/s open loop{outbox_title(outbox)}",
            "outbox": outbox, "requests": n, **summary(times), "per_s": round(n / wall, 1),
            "send_lag_p99_ms": summary(lags)["p99_ms"]}

    async def replay_saturation(self, sender: ReplaySender, counter: Api,
                                outbox: bool) -> tuple[str, dict[str, Any]]:
        """Closed loop: C{concurrency} clients, each sending again as soon as answered."""
        c = self.sizes.concurrency
        gc.collect()
        times: list[float] = []
        started = time.perf_counter()
        until = started + self.sizes.replay_saturation_s

        async def client() -> None:
            while time.perf_counter() < until:
                await sender.send(times)

        await gather([Deferred.fromCoroutine(client()) for _ in range(c)],
                     "a saturating replay client")
        wall = time.perf_counter() - started
        drain_started = time.perf_counter()
        await self.replay_drained(counter, sender.expected)
        return replay_key("saturation", outbox), {
            "title": f"replay 202, {c} concurrent closed loops{outbox_title(outbox)}",
            "outbox": outbox, "requests": len(times), "concurrency": c, **summary(times),
            "per_s": round(len(times) / wall, 1),
            "backlog_drain_s": round(time.perf_counter() - drain_started, 3)}

    async def replay_throughput(self, sender: ReplaySender, counter: Api,
                                outbox: bool) -> tuple[str, dict[str, Any]]:
        """
        C{replay_total} requests by C{concurrency} closed loops; deliveries per second from
        the first 202 until the downstream has the last one.
        """
        m = self.sizes.replay_total
        c = self.sizes.concurrency
        target = sender.expected + m
        gc.collect()
        times: list[float] = []
        accepted: list[float] = []
        remaining = [m]

        async def client() -> None:
            while remaining[0] > 0:
                remaining[0] -= 1
                await sender.send(times)
                if not accepted:
                    accepted.append(time.monotonic())  # the downstream's clock

        started = time.perf_counter()
        await gather([Deferred.fromCoroutine(client()) for _ in range(c)],
                     "a replay throughput client")
        accept_wall = time.perf_counter() - started
        seen = await self.replay_drained(counter, target)
        delivering = seen["last"] - accepted[0]
        return replay_key("throughput", outbox), {
            "title": f"replay throughput, {m} reqs to 1 downstream{outbox_title(outbox)}",
            "outbox": outbox, "requests": m, "concurrency": c, **summary(times),
            "accepted_per_s": round(m / accept_wall, 1),
            "delivering_s": round(delivering, 3),
            "deliveries_per_s": round(m / delivering, 1)}

    async def paced_post(self) -> None:
        """HTTP posts at PACED_RATE/s on a schedule (open loop), from the load generator."""
        assert self.loadgen is not None
        target = Target("tmd", self.daemon, self.api)
        (room,) = await target.rooms(self, 1, "paced")
        for i in range(WARMUP):
            await self.api.post(room["name"], room["token"], f"warm-up {i}")
        seconds = self.sizes.paced_s
        await self.loadgen.command("connect", CONNECT_TIMEOUT, rooms=[room], per_room=0)
        try:
            cpu = self.daemon.cpu_seconds()
            gc.collect()
            done = await self.loadgen.command("post", seconds + self.sizes.load_drain_s + 10,
                                              rate=PACED_RATE, duration=seconds,
                                              drain=self.sizes.load_drain_s)
            cpu = self.daemon.cpu_seconds() - cpu
        finally:
            await self.loadgen.command("close", CONNECT_TIMEOUT)
        check(done["failed"] == 0 and not done["problems"],
              f"paced posts failed: {done['failed']}, {done['problems'][:3]}")
        await self.api.check_room(room["name"], WARMUP + done["posts"])
        self.results[self.key("paced_post")] = {
            "title": self.title(f"post at {PACED_RATE}/s (HTTP, open loop, load generator)"),
            "engine": self.engine, "posts": done["posts"], **done["reply"],
            "per_s": round(done["posts_per_s"], 1),
            "send_lag_p99_ms": done["send_lag_p99_ms"],
            "daemon_cpu_s": round(cpu, 3), "loadgen_cpu_s": round(done["cpu_s"], 3)}

    async def load_suite(self) -> None:
        """
        The load generator's scenarios (idle connections, fan-out at rates and at
        saturation, many rooms) against a fresh tmd daemon on SQLite, then the same
        against each reference server; tmd's figures as ratios to theirs.
        """
        assert self.loadgen is not None
        directory = self.daemon.directory
        servers: dict[str, Any] = {}
        daemon = Daemon(self.reactor, directory, self.profile,
                        f"sqlite:{directory / 'load.sqlite3'}")
        daemon.what = "the load daemon"
        references = [Reference(self.reactor, directory, "autobahn")]
        if NODE is not None:
            references.append(Reference(self.reactor, directory, "node_ws"))
        for server in (daemon, *references):
            name = "tmd" if server is daemon else cast(Reference, server).kind
            api: Api | None = None
            try:
                await server.start()
                if server is daemon:
                    api = Api(self.reactor, daemon.url, 4)
                progress(f" {name}")
                servers[name] = await self.load_target(Target(name, server, api))
            finally:
                if api is not None:
                    await api.close()
                status = await server.stop()
                (directory / f"{name}.log").write_text("\n".join(server.log) + "\n")
            check(status in ((0, None), (None, signal.SIGTERM)),
                  f"{server.what} exited uncleanly: {status}")
            check(not server.problems(), f"{server.what} logged problems: {server.problems()[:3]}")
        self.results["load"] = {
            "title": "load generator: tmd against the reference servers",
            "loadgen": f"node {self.loadgen.node}, ws {ws_version()}",
            "servers": servers, "ratios": ratios(servers)}

    async def load_target(self, target: Target) -> dict[str, Any]:
        """Idle connections, fan-out at each rate and at saturation, many rooms: one server."""
        assert self.loadgen is not None
        sizes = self.sizes
        result: dict[str, Any] = {}

        # Idle first, on the fresh server: RSS before, halfway and after opening the
        # connections, in two halves. The second half's growth is the marginal cost of a
        # connection, without the memory a server freed at start and reuses first.
        per_room = min(IDLE_PER_ROOM, sizes.load_idle)
        rooms = await target.rooms(self, max(1, sizes.load_idle // per_room), "idle",
                                   posting=False)
        middle = len(rooms) // 2
        halves = [rooms[:middle], rooms[middle:]] if middle else [rooms]
        rss = [target.process.memory()["rss_kib"]]
        cpu = target.process.cpu_seconds()
        sockets: list[int] = []
        seconds = 0.0
        for half in halves:
            opened = await self.loadgen.command(
                "connect", CONNECT_TIMEOUT + sizes.load_idle / 100, rooms=half, per_room=per_room)
            check(not opened["problems"], f"idle connections: {opened['problems'][:3]}")
            await task.deferLater(self.reactor, IDLE_SETTLE, lambda: None)
            rss.append(target.process.memory()["rss_kib"])
            sockets.append(opened["sockets"])
            seconds += opened["seconds"]
        result["idle"] = {
            "connections": sum(sockets), "connect_s": round(seconds, 3),
            "rss_before_kib": rss[0], "rss_after_kib": rss[-1],
            "rss_per_connection_kib": round((rss[-1] - rss[0]) / sum(sockets), 2),
            "rss_per_connection_second_half_kib": round(
                (rss[-1] - rss[-2]) / sockets[-1], 2) if len(halves) == 2 else None,
            "server_cpu_s": round(target.process.cpu_seconds() - cpu, 3),
            "loadgen_rss_kib": opened["rss_kib"]}
        await self.loadgen.command("close", CONNECT_TIMEOUT + sizes.load_idle / 100)

        # Fan-out: one room, its subscribers, posts at each rate, then at saturation.
        rooms = await target.rooms(self, 1, "fanout")
        await self.loadgen.command("connect", CONNECT_TIMEOUT + sizes.load_fanout / 100,
                                   rooms=rooms, per_room=sizes.load_fanout)
        try:
            phases: list[dict[str, Any]] = [{"rate": rate, "duration": sizes.load_rate_s}
                                            for rate in sizes.load_rates]
            phases.append({"rate": None, "duration": sizes.load_saturation_s,
                           "window": LOAD_WINDOW})
            runs = []
            for phase in phases:
                runs.append(await self.load_phase(target, phase))
        finally:
            await self.loadgen.command("close", CONNECT_TIMEOUT)
        result["fanout"] = {"subscribers": sizes.load_fanout, "rates": runs[:-1],
                            "saturation": runs[-1]}

        # Many rooms, a few subscribers each, posts spread over them.
        count, each = sizes.load_rooms
        rooms = await target.rooms(self, count, "rooms")
        await self.loadgen.command("connect", CONNECT_TIMEOUT + count * each / 100, rooms=rooms,
                                   per_room=each)
        try:
            result["rooms"] = {"rooms": count, "subscribers": each, **await self.load_phase(
                target, {"rate": sizes.load_rooms_rate, "duration": sizes.load_rooms_s})}
        finally:
            await self.loadgen.command("close", CONNECT_TIMEOUT)
        return result

    async def load_phase(self, target: Target, phase: dict[str, Any]) -> dict[str, Any]:
        """One C{post} of the load generator, checked, with the server's CPU and RSS."""
        assert self.loadgen is not None
        drain = self.sizes.load_drain_s
        cpu = target.process.cpu_seconds()
        gc.collect()
        done = await self.loadgen.command("post", phase["duration"] + drain + 10, drain=drain,
                                          **phase)
        server_cpu = target.process.cpu_seconds() - cpu
        memory = target.process.memory()
        what = f"{target.name}, {phase}"
        check(done["failed"] == 0, f"{what}: {done['failed']} posts failed: {done['problems'][:3]}")
        check(done["lost"] == 0 and done["gaps"] == 0 and done["closed_by_server"] == 0,
              f"{what}: {done['lost']} deliveries lost (of {done['expected']}), {done['gaps']} "
              f"out of order, {done['closed_by_server']} sockets closed; {done['problems'][:3]}")
        wall = max(done["delivery_wall_s"], done["post_seconds"])
        return {
            "rate": phase["rate"], "window": phase.get("window"), "posts": done["posts"],
            "posts_per_s": round(done["posts"] / done["post_seconds"], 1),
            "deliveries": done["deliveries"], "lost": done["lost"],
            "deliveries_per_s": round(done["deliveries_per_s"] or 0, 1),
            "delivery": done["delivery"], "reply": done["reply"],
            "send_lag_p99_ms": done["send_lag_p99_ms"],
            "server_cpu_s": round(server_cpu, 3),
            "server_cpu_share": round(server_cpu / wall, 3),
            "server_cpu_us_per_delivery": per_delivery(server_cpu, done["deliveries"]),
            "loadgen_cpu_us_per_delivery": per_delivery(done["cpu_s"], done["deliveries"]),
            "server_rss_kib": memory["rss_kib"], "server_peak_rss_kib": memory["peak_rss_kib"],
            "loadgen_cpu_s": round(done["cpu_s"], 3),
            "loadgen_cpu_share": round(done["cpu_s"] / wall, 3),
            "loadgen_event_loop_utilization": round(done["event_loop_utilization"], 3),
            "wall_s": round(wall, 3)}

    async def run(self) -> None:
        steps: list[tuple[str, str, Callable[[], Awaitable[None]]]]
        if self.engine == "postgresql":
            steps = [
                ("latency", "post latency", self.post_latency),
                ("paced", f"posts at {PACED_RATE}/s", self.paced_post),
                ("throughput", "post throughput", self.post_throughput),
                ("cross", "cross-daemon delivery", self.cross_daemon),
            ]
        else:
            steps = [
                ("floor", "HTTP floor", self.http_floor),
                ("latency", "post latency", self.post_latency),
                ("paced", f"posts at {PACED_RATE}/s", self.paced_post),
                ("throughput", "post throughput", self.post_throughput),
            ]
            for k, p in self.sizes.fanout:
                steps.append(("fanout", f"fan-out to {k}",
                              lambda k=k, p=p: self.fanout(k, p)))  # type: ignore[misc]
            steps.append(("ws", "websocket post round trip", self.ws_round_trip))
            steps.append(("replay", "replay to a downstream", self.replay))
            steps.append(("load", "load generator: tmd, then the references", self.load_suite))
        for key, name, step in steps:
            if self.only and key not in self.only:
                continue
            if key in LOADGEN_SCENARIOS and self.loadgen is None:
                continue
            before = set(self.results)
            started = time.perf_counter()
            daemon_cpu = self.daemon.cpu_seconds()
            client_cpu = client_cpu_seconds()
            loadgen_cpu = self.loadgen.cpu_seconds() if self.loadgen is not None else math.nan
            progress(f"  {name}{'' if self.engine == 'sqlite' else ', ' + self.engine} ...")
            await step()
            wall = time.perf_counter() - started
            progress(f" {wall:.1f} s\n")
            for result in set(self.results) - before:  # whole step, set-up and checks included
                self.results[result]["step"] = {
                    "wall_s": round(wall, 3),
                    "daemon_cpu_s": round(self.daemon.cpu_seconds() - daemon_cpu, 3),
                    "client_cpu_s": round(client_cpu_seconds() - client_cpu, 3)}
                if self.loadgen is not None and key in LOADGEN_SCENARIOS:
                    self.results[result]["step"]["loadgen_cpu_s"] = round(
                        self.loadgen.cpu_seconds() - loadgen_cpu, 3)


class ReplaySender:
    """C{POST /replay/bench/hook?n=...} to a reflektor, each answer checked (202 and an id)."""

    def __init__(self, api: Api, token: str) -> None:
        self.api = api
        self.token = token
        self.sent = 0
        """Requests accepted so far."""
        self.base = 0
        """What the downstream had counted before the first."""
        self._issued = 0

    @property
    def expected(self) -> int:
        """The downstream's count once it has every request accepted so far."""
        return self.base + self.sent

    async def send(self, times: list[float] | None = None) -> None:
        n = self._issued
        self._issued += 1
        t0 = time.perf_counter()
        answer = await self.api.call("POST", f"/replay/bench/hook?n={n}", 202,
                                     {"n": n, "text": "is light a wave?"}, self.token)
        if times is not None:
            times.append(time.perf_counter() - t0)
        check(isinstance(answer, dict) and bool(answer.get("id")), f"replay answered {answer}")
        self.sent += 1


def replay_key(what: str, outbox: bool) -> str:
    return f"replay_{'outbox_' if outbox else ''}{what}"


def outbox_title(outbox: bool) -> str:
    return ", outbox on" if outbox else ", outbox off"


async def gather(deferreds: list[Deferred[None]], what: str) -> None:
    """Wait for all of C{deferreds}; a L{BenchError} naming C{what} if any failed."""
    results = await DeferredList(deferreds, consumeErrors=True)
    for ok, value in results:
        if not ok:
            raise BenchError(f"{what} failed: {cast(Failure, value).getErrorMessage()}")


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def progress(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


# -- the machine and the report ---------------------------------------------------------------

def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding C{path} (the SQLite fsync cost depends on it)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def machine(directory: Path) -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, timeout=5,
                                capture_output=True, text=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "database_filesystem": filesystem_of(directory),
        "versions": {name: metadata.version(name) for name in ("Twisted", "treq", "autobahn")},
        "commit": commit,
    }


ROWS = [  # (result key, rate key, rate unit)
    ("http_floor", "per_s", "req/s"),
    ("post_latency", "per_s", "posts/s"),
    ("paced_post", "per_s", "posts/s"),
    ("post_throughput", "per_s", "posts/s"),
    ("fanout_*", "frames_per_s", "frames/s"),
    ("ws_round_trip", "per_s", "posts/s"),
    ("replay_paced", "per_s", "req/s"),
    ("replay_saturation", "per_s", "req/s"),
    ("replay_throughput", "deliveries_per_s", "deliveries/s"),
    ("replay_outbox_paced", "per_s", "req/s"),
    ("replay_outbox_saturation", "per_s", "req/s"),
    ("replay_outbox_throughput", "deliveries_per_s", "deliveries/s"),
    ("pg_post_latency", "per_s", "posts/s"),
    ("pg_paced_post", "per_s", "posts/s"),
    ("pg_post_throughput", "per_s", "posts/s"),
    ("pg_cross_daemon", "per_s", "posts/s"),
]


def table(results: dict[str, Any]) -> str:
    lines = [f"{'scenario':<58} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
             f"{'max ms':>8}  rate"]
    lines.append("-" * len(lines[0]) + "-" * 14)
    for key, rate, unit in ROWS:
        keys = [k for k in results if k.startswith(key[:-1])] if key.endswith("*") else [key]
        for k in keys:
            r = results.get(k)
            if r is None:
                continue
            lines.append(f"{r['title']:<58} {r['n']:>6} {r['p50_ms']:>8.2f} {r['p90_ms']:>8.2f} "
                         f"{r['p99_ms']:>8.2f} {r['max_ms']:>8.2f}  {r[rate]:,.0f} {unit}")
    lines.append(f"(TodaysMeet's post: {TODAYSMEET['p50_ms']:.0f} ms median, "
                 f"{TODAYSMEET['p90_ms']:.0f} ms p90)")
    return "\n".join(lines)


def per_delivery(cpu_seconds: float, deliveries: int) -> float | None:
    """CPU microseconds per frame delivered: steadier than rates on a shared machine."""
    return round(cpu_seconds / deliveries * 1e6, 2) if deliveries else None


def ws_version() -> str:
    try:
        package = HERE / "node_modules" / "ws" / "package.json"
        return str(json.loads(package.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "?"


def ratios(servers: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """tmd's load figures divided by each reference server's."""
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    tmd = servers.get("tmd")
    found: dict[str, dict[str, float | None]] = {}
    for name, other in servers.items():
        if name == "tmd" or tmd is None:
            continue
        found[name] = {
            "saturation_deliveries_per_s": ratio(tmd["fanout"]["saturation"]["deliveries_per_s"],
                                                 other["fanout"]["saturation"]["deliveries_per_s"]),
            "idle_rss_per_connection": ratio(tmd["idle"]["rss_per_connection_kib"],
                                             other["idle"]["rss_per_connection_kib"]),
            "idle_rss_per_connection_second_half": ratio(
                tmd["idle"].get("rss_per_connection_second_half_kib"),
                other["idle"].get("rss_per_connection_second_half_kib")),
            "rooms_delivery_p99": ratio(tmd["rooms"]["delivery"]["p99_ms"],
                                        other["rooms"]["delivery"]["p99_ms"]),
            **{f"fanout_{mine['rate']}_delivery_p99": ratio(mine["delivery"]["p99_ms"],
                                                             theirs["delivery"]["p99_ms"])
               for mine, theirs in zip(tmd["fanout"]["rates"], other["fanout"]["rates"],
                                       strict=True)},
        }
    return found


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 9's targets, each with the figure measured and whether it was met."""
    found: list[dict[str, Any]] = []

    def target(what: str, figure: float | None, goal: str, met: bool | None) -> None:
        found.append({"target": what, "figure": figure, "goal": goal, "met": met})

    load = results.get("load", {})
    servers, measured = load.get("servers", {}), load.get("ratios", {})
    for name, least in (("autobahn", 1.0), ("node_ws", 0.8)):
        value = measured.get(name, {}).get("saturation_deliveries_per_s")
        target(f"fan-out saturation, deliveries/s, tmd / {name}", value, f">= {least}x",
               None if value is None else value >= least)
    tmd = servers.get("tmd")
    if tmd is not None:
        fastest = max(tmd["fanout"]["rates"], key=lambda run: run["rate"])
        p99 = fastest["delivery"]["p99_ms"]
        target(f"1 room x {tmd['fanout']['subscribers']} at {fastest['rate']} posts/s: "
               "delivery p99 ms (nothing lost)", p99, "< 50 ms, 0 lost",
               p99 is not None and p99 < 50 and fastest["lost"] == 0)
        rooms = tmd["rooms"]
        p99 = rooms["delivery"]["p99_ms"]
        target(f"{rooms['rooms']} rooms x {rooms['subscribers']} at {rooms['rate']} posts/s: "
               "delivery p99 ms", p99, "< 20 ms", p99 is not None and p99 < 20)
    idle = measured.get("autobahn", {})
    figures = [idle[key] for key in ("idle_rss_per_connection",
                                     "idle_rss_per_connection_second_half")
               if idle.get(key) is not None]
    value = max(figures) if figures else None  # the less flattering of the whole and the marginal
    target("idle RSS per connection, tmd / autobahn", value, "<= 1.1x",
           None if value is None else value <= 1.1)
    paced = results.get("paced_post")
    if paced is not None:
        target(f"HTTP post at {PACED_RATE}/s, SQLite: p50 ms", paced["p50_ms"], "< 1.5 ms",
               paced["p50_ms"] < 1.5)
        target(f"HTTP post at {PACED_RATE}/s, SQLite: p99 ms", paced["p99_ms"], "< 5 ms",
               paced["p99_ms"] < 5)
    return found


def load_table(results: dict[str, Any]) -> str:
    """The load generator's figures, one line per server and scenario, then the targets."""
    load = results.get("load")
    lines: list[str] = []
    if load is not None:
        lines.append(f"load generator: {load['loadgen']}. CPU: share of one core over the "
                     "phase, and microseconds per delivery, of the server (srv) and the load "
                     "generator (gen)")
        header = (f"{'server':<9} {'scenario':<32} {'posts/s':>8} {'deliv/s':>9} {'lost':>5} "
                  f"{'p50 ms':>8} {'p99 ms':>8} {'srv CPU':>7} {'srv us':>6} {'gen CPU':>7} "
                  f"{'gen us':>6} {'RSS MB':>7}")
        lines += [header, "-" * len(header)]
        for name, server in load["servers"].items():
            idle = server["idle"]
            second = idle.get("rss_per_connection_second_half_kib")
            lines.append(f"{name:<9} {'idle: ' + str(idle['connections']) + ' websockets':<32} "
                         f"{idle['rss_per_connection_kib']:>8.2f} KiB of RSS per connection "
                         f"({'-' if second is None else f'{second:.2f}'} in the second half)"
                         f"{'':>20} {idle['rss_after_kib'] / 1024:>7.1f}")
            fanout = server["fanout"]
            runs = [(f"1 room x {fanout['subscribers']}, {run['rate']}/s", run)
                    for run in fanout["rates"]]
            runs.append((f"1 room x {fanout['subscribers']}, saturation",
                         fanout["saturation"]))
            rooms = server["rooms"]
            runs.append((f"{rooms['rooms']} rooms x {rooms['subscribers']}, {rooms['rate']}/s",
                         rooms))
            for title, run in runs:
                lines.append(
                    f"{name:<9} {title:<32} {run['posts_per_s']:>8,.0f} "
                    f"{run['deliveries_per_s']:>9,.0f} {run['lost']:>5} "
                    f"{run['delivery']['p50_ms']:>8.2f} {run['delivery']['p99_ms']:>8.2f} "
                    f"{run['server_cpu_share']:>7.0%} {run['server_cpu_us_per_delivery']:>6.1f} "
                    f"{run['loadgen_cpu_share']:>7.0%} {run['loadgen_cpu_us_per_delivery']:>6.1f} "
                    f"{run['server_rss_kib'] / 1024:>7.1f}")
        for name, measured in load["ratios"].items():
            lines.append(f"tmd / {name}: " + ", ".join(
                f"{key} {value:.2f}" for key, value in measured.items() if value is not None))
    found = targets(results)
    if found:
        lines.append("targets (issue 9):")
        for each in found:
            met = {True: "met", False: "MISSED", None: "not measured"}[each["met"]]
            figure = "-" if each["figure"] is None else f"{each['figure']:g}"
            lines.append(f"  {each['target']:<62} {figure:>8}  goal {each['goal']:<16} {met}")
    return "\n".join(lines)


def raise_file_limit(needed: int) -> dict[str, int]:
    """Room for C{needed} descriptors here and in the daemon (which inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        raise BenchError(f"the open-file limit is {soft}; the fan-out needs about {needed}")
    return {"soft": soft, "hard": hard}


# -- main -------------------------------------------------------------------------------------

async def main(reactor: Any, options: argparse.Namespace) -> int:
    sizes = QUICK if options.quick else FULL
    mode = "quick" if options.quick else "full"
    directory = Path(tempfile.mkdtemp(prefix="tmd-bench-", dir=options.tmpdir))
    errors: list[str] = []
    report: dict[str, Any] = {
        "mode": mode,
        "command": " ".join(["python", "bench/run.py", *(
            arg.replace(options.postgres, describe(options.postgres))
            if options.postgres and options.postgres in arg else arg for arg in sys.argv[1:])]),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(directory),
        "sizes": {k: v for k, v in sizes.__dict__.items()},
        "todaysmeet": TODAYSMEET,
    }
    m = report["machine"]
    print(f"tmd bench ({mode}): {m['nproc']} CPUs ({m['cpu']}), {m['python']}, "
          f"Twisted {m['versions']['Twisted']}, load {m['loadavg_at_start']}, "
          f"SQLite on {m['database_filesystem']}", flush=True)
    report["file_limit"] = raise_file_limit(
        max(2 * max(k for k, _ in sizes.fanout), sizes.load_idle + 2000) + 256)

    daemon = Daemon(reactor, directory, options.profile)
    bench: Bench | None = None
    api: Api | None = None
    loadgen: LoadGen | None = None
    setup_warnings: list[str] = []
    try:
        if not options.only or not options.only.isdisjoint(LOADGEN_SCENARIOS):
            why_not = await deferToThread(node_ready)
            if why_not is None:
                loadgen = LoadGen(reactor, directory)
                await loadgen.start()
                report["loadgen"] = {"node": loadgen.node, "ws": ws_version()}
            else:
                setup_warnings.append(why_not)
        await daemon.start()
        report["daemon"] = {"pid": daemon.pid, "port": daemon.port,
                            "start_seconds": round(daemon.start_seconds, 3),
                            "profile": str(options.profile) if options.profile else None}
        progress(f"daemon pid {daemon.pid} listening on {daemon.url} "
                 f"after {daemon.start_seconds:.2f} s\n")
        api = Api(reactor, daemon.url, sizes.concurrency + 2)
        bench = Bench(reactor, daemon, api, sizes, options.only, loadgen=loadgen,
                      profile=options.profile and options.profile.with_name(
                          options.profile.name + ".load"))
        await bounded(reactor, Deferred.fromCoroutine(bench.run()), sizes.deadline,
                      "the whole benchmark")
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
    finally:
        if api is not None:
            await api.close()
        try:
            report.setdefault("daemon", {}).update(daemon.memory())
            status = await daemon.stop()
            report.setdefault("daemon", {})["exit"] = list(status)
            if status not in ((0, None), (None, signal.SIGTERM)):
                errors.append(f"the daemon exited uncleanly: code {status[0]}, signal {status[1]}")
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
    problems = daemon.problems()
    if problems:
        errors.append(f"the daemon logged {len(problems)} problem lines, e.g. {problems[0]!r}")
    report["results"] = bench.results if bench is not None else {}
    report["warnings"] = setup_warnings + (bench.warnings if bench is not None else [])

    logs = {"daemon.log": daemon}
    if options.postgres and not errors and not (options.only and options.only.isdisjoint(
            POSTGRES_SCENARIOS)):
        pg_bench, pg_daemons = await postgres(reactor, options, sizes, directory, report, errors,
                                              loadgen)
        if pg_bench is not None:
            report["results"].update(pg_bench.results)
            report["warnings"] += pg_bench.warnings
        for i, pg_daemon in enumerate(pg_daemons):
            logs[f"daemon-postgresql-{'ab'[i] if i < 2 else i}.log"] = pg_daemon

    if loadgen is not None:
        await loadgen.stop()
    report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["targets"] = targets(report["results"])
    report["errors"] = errors
    report["ok"] = not errors
    print(table(report["results"]))
    if report["targets"]:
        print(load_table(report["results"]))
    options.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {options.output}")
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    if errors or options.keep:
        for name, logged in logs.items():
            (directory / name).write_text("\n".join(logged.log) + "\n")
    if errors:
        print("FAILED:\n  " + "\n  ".join(errors), file=sys.stderr)
        print(f"daemon logs and SQLite database kept in {directory}", file=sys.stderr)
        return 1
    if options.keep:
        print(f"daemon logs and SQLite database kept in {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


# -- PostgreSQL -------------------------------------------------------------------------------

def describe(url: str) -> str:
    """C{url} without its password: C{user@host:port/db}."""
    from psycopg2.extensions import parse_dsn

    try:
        dsn = parse_dsn(url)
    except Exception:
        return "(an invalid URL)"
    user = dsn.get("user", "")
    return (f"{user + '@' if user else ''}{dsn.get('host', 'localhost')}:{dsn.get('port', 5432)}"
            f"/{dsn.get('dbname', user)}")


def _sql(url: str, *statements: str) -> list[Any]:
    """Run C{statements} on a connection of their own (in a thread: they block); each's row."""
    import psycopg2

    rows = []
    with closing(psycopg2.connect(url, connect_timeout=10)) as db:
        db.autocommit = True
        with db.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
                rows.append(cursor.fetchone() if cursor.description is not None else None)
    return rows


def create_schema(url: str) -> tuple[str, dict[str, Any]]:
    """A new schema for the run: the URL that uses it, and what the server is."""
    schema = f"tmd_bench_{secrets.token_hex(5)}"
    (settings, _) = _sql(
        url,
        "SELECT current_setting('server_version'), current_setting('fsync'),"
        " current_setting('synchronous_commit'), current_setting('wal_sync_method'),"
        " current_setting('shared_buffers'), current_setting('max_connections')",
        f"CREATE SCHEMA {schema}")
    info: dict[str, Any] = dict(zip(
        ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "shared_buffers",
         "max_connections"), settings, strict=True))
    try:  # readable by superusers (and pg_read_all_settings), useful when the server is local
        [(data_directory,)] = _sql(url, "SELECT current_setting('data_directory')")
        if Path(data_directory).is_dir():
            info["data_filesystem"] = filesystem_of(Path(data_directory))
    except Exception:
        pass
    separator = "&" if "?" in url else "?"
    schema_url = (f"{url}{separator}options={quote(f'-csearch_path={schema}')}"
                  f"&application_name={schema}")
    return schema_url, {"where": describe(url), "schema": schema, **info}


async def postgres(reactor: Any, options: argparse.Namespace, sizes: Sizes, directory: Path,
                   report: dict[str, Any], errors: list[str], loadgen: LoadGen | None,
                   ) -> tuple[Bench | None, list[Daemon]]:
    """
    The post scenarios again, and cross-daemon delivery, on a fresh schema of
    C{options.postgres}, dropped afterwards. The bench, and every daemon it ran.
    """
    where = describe(options.postgres)
    try:
        url, info = await deferToThread(create_schema, options.postgres)
    except Exception as e:
        errors.append(f"PostgreSQL at {where}: {type(e).__name__}: {str(e).strip()}")
        return None, []
    info["db_pool_size"] = options.db_pool_size
    report["postgres"] = info
    progress(f"PostgreSQL {info['server_version']} at {where}, schema {info['schema']}, "
             f"fsync {info['fsync']}, synchronous_commit {info['synchronous_commit']}\n")
    bench: Bench | None = None
    if info["fsync"] != "on" or info["synchronous_commit"] == "off":
        report["warnings"].append("PostgreSQL's commits are not durable (fsync "
                                  f"{info['fsync']}, synchronous_commit "
                                  f"{info['synchronous_commit']}): posts/s is flattered")
    daemon = Daemon(reactor, directory, None, url, options.db_pool_size)
    api: Api | None = None
    try:
        await daemon.start()
        info["daemon"] = {"pid": daemon.pid, "port": daemon.port,
                          "start_seconds": round(daemon.start_seconds, 3)}
        progress(f"daemon pid {daemon.pid} on PostgreSQL listening on {daemon.url} "
                 f"after {daemon.start_seconds:.2f} s\n")
        api = Api(reactor, daemon.url, sizes.concurrency + 2)
        bench = Bench(reactor, daemon, api, sizes, options.only, engine="postgresql",
                      db_pool_size=options.db_pool_size, loadgen=loadgen)
        await bounded(reactor, Deferred.fromCoroutine(bench.run()), sizes.deadline,
                      "the PostgreSQL benchmark")
    except Exception as e:
        errors.append(f"PostgreSQL: {type(e).__name__}: {e}")
    finally:
        if api is not None:
            await api.close()
        daemons = [daemon, *(bench.others if bench is not None else [])]
        for i, each in enumerate(daemons):
            try:
                memory = each.memory()
                status = await each.stop()
                if i == 0:
                    info.setdefault("daemon", {}).update({**memory, "exit": list(status)})
                if status not in ((0, None), (None, signal.SIGTERM)):
                    errors.append(f"a PostgreSQL daemon exited uncleanly: code {status[0]}, "
                                  f"signal {status[1]}")
            except Exception as e:
                errors.append(f"{type(e).__name__}: {e}")
            problems = each.problems()
            if problems:
                errors.append(f"a PostgreSQL daemon logged {len(problems)} problem lines, "
                              f"e.g. {problems[0]!r}")
        try:
            await deferToThread(_sql, options.postgres, f"DROP SCHEMA {info['schema']} CASCADE")
        except Exception as e:
            errors.append(f"dropping the schema {info['schema']}: {type(e).__name__}: {e}")
    return bench, daemons


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--quick", action="store_true", help="small sizes: under ~20 s")
    parser.add_argument("--output", type=Path, default=HERE / "results.json",
                        help="where to write the JSON results [bench/results.json]")
    parser.add_argument("--tmpdir", default=None,
                        help="where to make the daemon's temporary directory (and SQLite file)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the daemon's directory (database, log) after a good run")
    parser.add_argument("--profile", type=Path, default=None,
                        help="run the daemon under cProfile (twistd --profiler=cprofile), "
                             "writing pstats to this file")
    parser.add_argument("--postgres", metavar="URL", default=os.environ.get(POSTGRES_ENVIRONMENT),
                        help="also bench PostgreSQL (post latency and throughput, cross-daemon"
                             " delivery) on a fresh schema of this database, e.g."
                             " postgresql://postgres@127.0.0.1:5432/test"
                             f" [default: ${POSTGRES_ENVIRONMENT}]")
    parser.add_argument("--db-pool-size", type=int, default=4,
                        help="the PostgreSQL daemons' --db-pool-size [4]")
    parser.add_argument("--only", default="",
                        help="comma-separated scenarios to run, of: " + ", ".join(SCENARIOS))
    options = parser.parse_args(argv)
    options.only = frozenset(filter(None, options.only.split(",")))
    if options.only - set(SCENARIOS):
        parser.error(f"unknown scenarios {sorted(options.only - set(SCENARIOS))}")
    if "cross" in options.only and not options.postgres:
        parser.error(f"the cross scenario needs PostgreSQL: --postgres URL or "
                     f"${POSTGRES_ENVIRONMENT}")
    if options.profile is not None:
        options.profile = options.profile.resolve()
    return options


def run() -> None:
    options = parse(sys.argv[1:])

    async def go(reactor: Any) -> None:
        code = await main(reactor, options)
        if code:
            raise SystemExit(code)

    task.react(lambda reactor: Deferred.fromCoroutine(go(reactor)))


if __name__ == "__main__":
    run()
