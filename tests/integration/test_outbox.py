"""
End to end, the durable outbox: a real C{twistd -n tmd} whose webhook and reflektor
downstreams do not answer, killed with SIGKILL or stopped with SIGTERM, delivers
every acknowledged event after its next start (at least once: a receiver drops
duplicates by C{X-Tmd-Delivery}).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.clients import Http
from tests.downstream import Downstream, Received, start_downstream
from tests.helpers import eventually
from tests.integration.daemon import CLEAN_STOP, Daemon

SECRET = "s"
TOKEN = "reflektor-token"
UNLIMITED_POSTS = ("--limit", "participant_posts=off", "--limit", "address_posts=off")


def unique(received: list[Received]) -> dict[str, Received]:
    """The requests by C{X-Tmd-Delivery}, as a receiver de-duplicates them (first kept)."""
    by_id: dict[str, Received] = {}
    for request in received:
        by_id.setdefault(request.headers["x-tmd-delivery"], request)
    return by_id


def events(received: list[Received], name: str) -> list[dict[str, Any]]:
    """The de-duplicated webhook events called C{name}."""
    bodies = [json.loads(r.body) for r in unique(received).values()]
    return [body for body in bodies if body["event"] == name]


def signed(request: Received) -> bool:
    """Whether C{X-Tmd-Signature} is C{sha256=} and the HMAC-SHA256 of the raw body."""
    expected = "sha256=" + hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request.headers.get("x-tmd-signature", ""), expected)


class OutboxTests(TestCase):
    timeout = 60

    async def _start(self, *extra: str) -> tuple[Daemon, Downstream, Downstream]:
        """
        A daemon with the outbox on, one webhook and one reflektor downstream, both
        holding every request (reachable, never answering) until told otherwise.
        """
        hook, hook_url = await start_downstream(self)
        reflected, reflected_url = await start_downstream(self)
        hook.hold = reflected.hold = True
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        (directory / "token").write_text(TOKEN + "\n")
        config = directory / "tmd.toml"
        config.write_text(
            "[[webhooks]]\n"
            f'url = "{hook_url}/hook"\n'
            f'secret = "{SECRET}"\n'
            "\n[replay]\n"
            "outbox = true\n"
            f'token_file = "{directory / "token"}"\n'
            f'downstreams = ["{reflected_url}"]\n')
        daemon = await Daemon.start(self, "--config", str(config), *UNLIMITED_POSTS, *extra,
                                    directory=directory)

        def healthy() -> None:  # runs before the daemon's stop: no request stays held
            for downstream in (hook, reflected):
                downstream.hold = False
                downstream.release()
        self.addCleanup(healthy)
        return daemon, hook, reflected

    async def _room(self, http: Http) -> str:
        """Create a room and join it; the participant's token."""
        code, _ = await http.call("POST", "/api/v1/rooms", {"name": "outbox"})
        self.assertEqual(code, 201)
        code, joined = await http.call("POST", "/api/v1/rooms/outbox/join", {"nickname": "ada"})
        self.assertEqual(code, 201)
        return str(joined["token"])

    async def _post(self, http: Http, token: str, n: int) -> list[int]:
        """Post C{n} messages; the seqs acknowledged (each with a 201)."""
        acknowledged = []
        for i in range(n):
            code, message = await http.call("POST", "/api/v1/rooms/outbox/messages",
                                            {"body": f"message {i}"}, token)
            self.assertEqual(code, 201)
            acknowledged.append(message["seq"])
        return acknowledged

    def test_kill_9_loses_nothing(self) -> Deferred[None]:
        """
        N posts and M reflektor requests acknowledged while both downstreams hang,
        then SIGKILL: after the next start, with the downstreams healthy, each
        receives every one of them (duplicates allowed), webhooks correctly signed.
        """
        return Deferred.fromCoroutine(self._kill_9_loses_nothing())

    async def _kill_9_loses_nothing(self) -> None:
        n, m = 30, 10
        daemon, hook, reflected = await self._start()
        http = Http(daemon.url)
        token = await self._room(http)
        acknowledged = await self._post(http, token, n)
        self.assertEqual(acknowledged, list(range(1, n + 1)))
        accepted = []
        for i in range(m):
            code, body = await http.call("POST", f"/replay/item/{i}", {"i": i},
                                         headers={"Authorization": [f"Bearer {TOKEN}"]})
            self.assertEqual(code, 202)
            accepted.append(body["id"])
        # Each queue sends one delivery at a time: the first is held, the rest wait.
        await eventually(lambda: hook.held and reflected.held)
        self.assertEqual((len(hook.received), len(reflected.received)), (1, 1))

        # The old process's queues are stuck on their held request (30 s timeout), so
        # nothing more reaches the downstreams before the kill; the new one finds them
        # answering at once. Its held requests went with its connections.
        hook.hold = reflected.hold = False
        await daemon.restart(kill=True)
        hook.release()
        reflected.release()

        def seqs() -> set[int]:
            return {e["data"]["seq"] for e in events(hook.received, "message.created")}

        def items() -> set[str]:
            return {r.uri for r in unique(reflected.received).values()}

        wanted = {f"/item/{i}" for i in range(m)}
        try:
            await eventually(lambda: seqs() >= set(acknowledged) and items() >= wanted)
        except AssertionError:
            pass  # the assertions below say what was lost
        hook_duplicates = len(hook.received) - len(unique(hook.received))
        reflected_duplicates = len(reflected.received) - len(unique(reflected.received))
        # Typically 1 duplicate each: the request held when the daemon was killed.
        summary = (f"webhook: {len(hook.received)} requests, {hook_duplicates} duplicates;"
                   f" reflektor: {len(reflected.received)} requests,"
                   f" {reflected_duplicates} duplicates")
        self.assertEqual(sorted(set(acknowledged) - seqs()), [], summary)  # acknowledged, lost
        self.assertEqual(sorted(wanted - items()), [], summary)
        self.assertEqual(set(unique(reflected.received)), set(accepted), summary)
        self.assertEqual(sorted(e["data"]["seq"] for e in events(hook.received,
                                                                 "message.created")),
                         acknowledged, summary)  # each seq under one delivery id only
        self.assertEqual([r for r in hook.received if not signed(r)], [], summary)
        self.assertEqual({r.uri for r in hook.received}, {"/hook"})
        self.assertEqual({r.method for r in reflected.received}, {"POST"})
        self.assertIn("replaying", daemon.output)
        self.assertNotIn("Traceback", daemon.output)

    def test_sigterm_drains(self) -> Deferred[None]:
        """
        SIGTERM with a webhook downstream that hangs: the daemon waits
        C{--shutdown-timeout}, exits cleanly and keeps what it could not deliver in
        the outbox; the next start delivers it.
        """
        return Deferred.fromCoroutine(self._sigterm_drains())

    async def _sigterm_drains(self) -> None:
        daemon, hook, _ = await self._start("--shutdown-timeout", "1")
        http = Http(daemon.url)
        token = await self._room(http)
        acknowledged = await self._post(http, token, 3)
        await eventually(lambda: hook.held)

        self.assertEqual(await daemon.stop(), CLEAN_STOP)
        # room.created (in flight, held) and the three posts.
        self.assertIn("4 undelivered deliveries stay in the outbox for the next start",
                      daemon.output)
        self.assertEqual([r.headers["x-tmd-event"] for r in hook.received], ["room.created"])

        hook.hold = False
        hook.release()  # its connection went with the process: nothing to answer
        await daemon.start_again()
        await eventually(lambda: len(events(hook.received, "message.created")) == 3)
        self.assertEqual([e["data"]["seq"] for e in events(hook.received, "message.created")],
                         acknowledged)
        self.assertEqual(len(events(hook.received, "room.created")), 1)
        self.assertEqual([r for r in hook.received if not signed(r)], [])
        self.assertIn("replaying 4 deliveries left in the outbox", daemon.output)
        self.assertEqual(await daemon.stop(), CLEAN_STOP)
        self.assertNotIn("Traceback", daemon.output)
