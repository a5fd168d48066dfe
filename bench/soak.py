"""
The resource soak: many clients connecting, posting and reconnecting at random against
one daemon for minutes on end; the daemon's resident memory (RSS) and open file
descriptors, read from /proc before, during and after, must come back to their
baseline once every client has gone.

    python bench/soak.py                          # 1000 clients for 10 minutes
    python bench/soak.py --minutes 1 --clients 200

It starts C{twistd -n tmd} on a fresh SQLite file (as C{bench/run.py} does, rate
limits off, connection limits raised), makes C{--rooms} rooms, and each client joins
one. Then every client, until the time is up: opens a websocket resuming with
C{since} = the last seq it saw, stays a random while (exponential, mean
C{--session} seconds), posting at random (mean C{--post-every} seconds; one post in
ten over HTTP), then leaves, with a closing handshake or by dropping the TCP connection
(one in three), and comes back after a random pause. Each client checks that every
message frame is the one after the last it saw, across reconnections: no gap, no
duplicate. At the end every client leaves; the daemon is sampled until its
descriptors are back to the baseline (at most C{--settle} seconds).

The baseline is taken once the rooms exist and every client has joined, before any
websocket opens. It prints a table and writes C{bench/soak.json}; it exits non-zero if
the descriptors do not come back, a client saw a gap or duplicate, a post went
unanswered, or the daemon logged a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import task
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ClientEndpoint

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import Api, BenchError, Daemon, raise_file_limit  # noqa: E402

CONNECT_TIMEOUT = 15.0
ANSWER_TIMEOUT = 15.0
SAMPLE_EVERY = 5.0


def sample(pid: int | None) -> dict[str, Any]:
    """The daemon's RSS (KiB) and open file descriptors, now."""
    rss = -1
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return {"t": round(time.monotonic(), 1), "rss_kib": rss,
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


class Counts:
    """What happened, over all clients."""

    def __init__(self) -> None:
        self.sessions = 0
        self.aborted = 0
        self.posts_ws = 0
        self.posts_http = 0
        self.acks = 0
        self.frames = 0
        self.connect_failures: list[str] = []
        self.problems: list[str] = []
        self.open = 0
        self.most_open = 0


class SoakClient(WebSocketClientProtocol):
    """One session of one client: checks each message is the next seq; answers acks."""

    factory: SoakFactory

    def __init__(self) -> None:
        super().__init__()
        self.welcome: Deferred[None] = Deferred()
        self.gone: Deferred[None] = Deferred()
        self.acks: dict[str, Deferred[int]] = {}
        self.leaving = False

    def onOpen(self) -> None:
        counts = self.factory.counts
        counts.open += 1
        counts.most_open = max(counts.most_open, counts.open)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        frame = json.loads(payload)
        kind = frame["type"]
        owner = self.factory.owner
        if kind == "message":
            self.factory.counts.frames += 1
            seq = frame["message"]["seq"]
            if seq != owner.last_seq + 1:
                self.factory.counts.problems.append(
                    f"{owner.nickname}: seq {seq} after {owner.last_seq}")
            owner.last_seq = max(owner.last_seq, seq)
        elif kind == "welcome":
            self.welcome.callback(None)
        elif kind in ("ack", "error"):
            waiting = self.acks.pop(frame.get("ref"), None)
            if kind == "error":
                self.factory.counts.problems.append(f"{owner.nickname}: {frame}")
            if waiting is not None:
                waiting.callback(frame.get("seq", 0))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.welcome.called or self.state == self.STATE_OPEN:
            self.factory.counts.open -= 1
        if not self.welcome.called:
            self.welcome.errback(BenchError(f"closed before its welcome: {code} {reason}"))
        if not self.leaving:
            self.factory.counts.problems.append(
                f"{self.factory.owner.nickname}: closed by the server: {code} {reason}")
        for waiting in self.acks.values():
            waiting.errback(BenchError(f"closed awaiting an ack: {code}"))
        self.acks.clear()
        self.gone.callback(None)

    def post(self, body: str, ref: str) -> Deferred[int]:
        d: Deferred[int] = Deferred()
        self.acks[ref] = d
        self.sendMessage(json.dumps({"type": "post", "body": body, "ref": ref}).encode())
        return d


class SoakFactory(WebSocketClientFactory):
    protocol = SoakClient  # type: ignore[assignment]

    def __init__(self, url: str, reactor: Any, owner: Client, counts: Counts) -> None:
        super().__init__(url, reactor=reactor)
        self.setProtocolOptions(openHandshakeTimeout=CONNECT_TIMEOUT, closeHandshakeTimeout=5)
        self.owner = owner
        self.counts = counts


class Client:
    """One simulated person: joins a room once, then comes and goes until the end."""

    def __init__(self, reactor: Any, options: argparse.Namespace, daemon: Daemon, api: Api,
                 counts: Counts, room: str, nickname: str, rng: random.Random) -> None:
        self._reactor = reactor
        self._options = options
        self._daemon = daemon
        self._api = api
        self._counts = counts
        self.room = room
        self.nickname = nickname
        self._rng = rng
        self.token = ""
        self.last_seq = 0
        self._posted = 0

    async def run(self, deadline: float) -> None:
        await self._sleep(self._rng.uniform(0, self._options.ramp))
        while self._reactor.seconds() < deadline:
            try:
                await self._session(deadline)
            except Exception as e:
                self._counts.connect_failures.append(f"{self.nickname}: {e}")
            await self._sleep(self._rng.uniform(0.5, self._options.pause))

    async def _session(self, deadline: float) -> None:
        url = (f"ws://127.0.0.1:{self._daemon.port}/api/v1/rooms/{self.room}/live"
               f"?since={self.last_seq}&token={self.token}")
        factory = SoakFactory(url, self._reactor, self, self._counts)
        endpoint = TCP4ClientEndpoint(self._reactor, "127.0.0.1", self._daemon.port,
                                      timeout=CONNECT_TIMEOUT)
        client = cast(SoakClient, await endpoint.connect(factory))
        await client.welcome.addTimeout(CONNECT_TIMEOUT, self._reactor)
        self._counts.sessions += 1
        leave_at = min(deadline, self._reactor.seconds()
                       + self._rng.expovariate(1 / self._options.session))
        try:
            while not client.gone.called:
                wait = self._rng.expovariate(1 / self._options.post_every)
                if self._reactor.seconds() + wait >= leave_at:
                    await self._sleep(max(0.0, leave_at - self._reactor.seconds()))
                    break
                await self._sleep(wait)
                if client.gone.called:
                    break
                await self._post(client)
        finally:
            client.leaving = True
            if not client.gone.called:
                if self._rng.random() < 1 / 3:
                    self._counts.aborted += 1
                    assert client.transport is not None
                    client.transport.abortConnection()  # type: ignore[attr-defined]
                else:
                    client.sendClose(1000)
            await client.gone.addTimeout(CONNECT_TIMEOUT, self._reactor)

    async def _post(self, client: SoakClient) -> None:
        self._posted += 1
        body = f"{self.nickname} says {self._posted}"
        if self._rng.random() < 0.1:
            self._counts.posts_http += 1
            await self._api.call("POST", f"/api/v1/rooms/{self.room}/messages", 201,
                                 {"body": body}, self.token)
        else:
            self._counts.posts_ws += 1
            await client.post(body, f"{self.nickname}-{self._posted}").addTimeout(
                ANSWER_TIMEOUT, self._reactor)
        self._counts.acks += 1

    def _sleep(self, seconds: float) -> Deferred[None]:
        return task.deferLater(self._reactor, seconds, lambda: None)


async def main(reactor: Any, options: argparse.Namespace) -> int:
    limits = raise_file_limit(4 * options.clients + 1024)
    directory = Path(tempfile.mkdtemp(prefix="tmd-soak-"))
    daemon = Daemon(reactor, directory, None, extra=[
        "--max-connections", str(10 * options.clients + 1000),
        "--max-connections-per-address", str(10 * options.clients + 1000)])
    await daemon.start()
    api = Api(reactor, daemon.url, 16)
    counts = Counts()
    rng = random.Random(options.seed)
    samples: dict[str, Any] = {"during": []}
    try:
        rooms = [await api.room(f"soak-{n}") for n in range(options.rooms)]
        clients = [Client(reactor, options, daemon, api, counts, rooms[i % len(rooms)],
                          f"c{i}", random.Random(rng.random())) for i in range(options.clients)]
        for client in clients:
            client.token = await api.join(client.room, client.nickname)
        await api.close()
        await task.deferLater(reactor, 2.0, lambda: None)
        samples["before"] = sample(daemon.pid)
        print(f"baseline: {samples['before']}; {options.clients} clients, {options.rooms}"
              f" rooms, {options.minutes:g} minutes", flush=True)

        def during() -> None:
            now = sample(daemon.pid)
            now["open_sockets"] = counts.open
            samples["during"].append(now)
            print(f"  {now} sessions={counts.sessions} acks={counts.acks}", flush=True)

        sampler = task.LoopingCall(during)
        sampler.clock = reactor
        sampler.start(SAMPLE_EVERY, now=False)
        deadline = reactor.seconds() + options.minutes * 60
        await DeferredList([Deferred.fromCoroutine(c.run(deadline)) for c in clients],
                           consumeErrors=True)
        sampler.stop()
        await api.close()

        settle_until = reactor.seconds() + options.settle
        after = sample(daemon.pid)
        while after["fds"] > samples["before"]["fds"] and reactor.seconds() < settle_until:
            await task.deferLater(reactor, 1.0, lambda: None)
            after = sample(daemon.pid)
        samples["after"] = after
    finally:
        status = await daemon.stop()
    problems = daemon.problems()
    during_rss = [s["rss_kib"] for s in samples["during"]] or [-1]
    half = len(during_rss) // 2
    during_fds = [s["fds"] for s in samples["during"]] or [-1]
    result = {
        "clients": options.clients, "rooms": options.rooms, "minutes": options.minutes,
        "seed": options.seed, "file_limit": limits,
        "rss_kib": {"before": samples["before"]["rss_kib"], "peak_during": max(during_rss),
                    "peak_first_half": max(during_rss[:half] or [-1]),
                    "peak_second_half": max(during_rss[half:]),
                    "after": samples["after"]["rss_kib"]},
        "fds": {"before": samples["before"]["fds"], "peak_during": max(during_fds),
                "after": samples["after"]["fds"]},
        "most_open_sockets": counts.most_open, "sessions": counts.sessions,
        "aborted_sessions": counts.aborted, "posts_ws": counts.posts_ws,
        "posts_http": counts.posts_http, "answered": counts.acks,
        "message_frames": counts.frames, "connect_failures": len(counts.connect_failures),
        "client_problems": len(counts.problems), "daemon_problems": len(problems),
        "daemon_exit": list(status), "samples": samples,
    }
    Path(options.json).write_text(json.dumps(result, indent=1) + "\n")
    rss, fds = result["rss_kib"], result["fds"]
    print(f"\n| | before | peak during | after |\n| --- | --- | --- | --- |\n"
          f"| RSS (MiB) | {rss['before'] / 1024:.1f} | {rss['peak_during'] / 1024:.1f}"
          f" | {rss['after'] / 1024:.1f} |\n"
          f"| open fds | {fds['before']} | {fds['peak_during']} | {fds['after']} |\n")
    print(f"RSS peak in the first half of the run {rss['peak_first_half'] / 1024:.1f} MiB, in"
          f" the second half {rss['peak_second_half'] / 1024:.1f} MiB")
    print(f"{counts.sessions} sessions ({counts.aborted} dropped without a close),"
          f" at most {counts.most_open} open at once; {counts.posts_ws} posts over websockets,"
          f" {counts.posts_http} over HTTP, {counts.acks} answered; {counts.frames} message"
          f" frames; {len(counts.connect_failures)} failed sessions,"
          f" {len(counts.problems)} client problems, {len(problems)} daemon problems")
    for line in (counts.connect_failures[:5] + counts.problems[:5] + problems[:5]):
        print("  " + line)
    failed = (fds["after"] > fds["before"] or counts.problems or problems
              or counts.connect_failures or counts.acks != counts.posts_ws + counts.posts_http)
    return 1 if failed else 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--session", type=float, default=30.0,
                        help="mean seconds a client stays connected")
    parser.add_argument("--post-every", type=float, default=20.0,
                        help="mean seconds between a connected client's posts")
    parser.add_argument("--pause", type=float, default=5.0,
                        help="longest pause, in seconds, before a client comes back")
    parser.add_argument("--ramp", type=float, default=20.0,
                        help="seconds over which the clients first arrive")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds allowed after the end for descriptors to come back")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--json", default=str(HERE / "soak.json"))
    return parser.parse_args(argv)


def run() -> None:
    options = parse(sys.argv[1:])
    task.react(lambda reactor: Deferred.fromCoroutine(main(reactor, options)))


if __name__ == "__main__":
    run()
