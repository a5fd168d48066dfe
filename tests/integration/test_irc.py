"""
End to end: a real C{twistd -n tmd} with the IRC gateway enabled by a TOML table, an
independent IRC client (jaraco's C{irc} from PyPI, blocking, on a thread) and a
websocket client in the same room.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import irc.client
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.clients import Http, connect
from tests.helpers import eventually
from tests.integration.daemon import Daemon

IRC_LISTENING = re.compile(r"IRC gateway listening on TCP [0-9.]+:(\d+)")
ROOM = "e2e-irc"
PASSWORD = "sesame"
TIMEOUT = 20.0

Seen = tuple[str, str, str, list[str]]
"""An IRC event: its type, source, target and arguments."""


class IrcSession:
    """Blocking IRC clients of one C{irc.client.Reactor}: run it only on its own thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reactor = irc.client.Reactor()
        self.seen: list[Seen] = []
        self.reactor.add_global_handler("all_events", self._record, -10)

    def _record(self, connection: irc.client.ServerConnection, event: irc.client.Event) -> None:
        if event.type != "all_raw_messages":
            self.seen.append((event.type, str(event.source or ""), str(event.target or ""),
                              [str(a) for a in event.arguments]))

    def connect(self, nick: str) -> irc.client.ServerConnection:
        connection = self.reactor.server().connect("127.0.0.1", self.port, nick)
        self.wait_for(lambda: self.saw("welcome", target=nick))
        return connection

    def saw(self, kind: str, source: str = "", target: str = "", text: str = "") -> bool:
        return any(seen[0] == kind and seen[1].startswith(source) and seen[2] == (
            target or seen[2]) and (not text or text in seen[3]) for seen in self.seen)

    def wait_for(self, condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"IRC: still waiting after {TIMEOUT} s; saw {self.seen}")
            self.reactor.process_once(0.05)

    def chat(self) -> list[Seen]:
        """
        The IRC side of the conversation: a wrong key first (475), then joins and posts,
        then waits for the web user's answer; a second client finds no room (403) and the
        web user's nickname taken (433).
        """
        ada = self.connect("ircada")
        ada.join(f"#{ROOM}")
        self.wait_for(lambda: self.saw("badchannelkey"))
        ada.join(f"#{ROOM}", PASSWORD)
        self.wait_for(lambda: self.saw("join", source="ircada!"))
        ada.privmsg(f"#{ROOM}", "hello from irc")
        self.wait_for(lambda: self.saw("pubmsg", source="webby!", text="hello from web"))
        other = self.connect("Webby")
        other.join("#no-such-room")
        self.wait_for(lambda: self.saw("nosuchchannel"))
        other.join(f"#{ROOM}", PASSWORD)
        self.wait_for(lambda: self.saw("nicknameinuse"))
        for connection in (ada, other):
            connection.quit("bye")
        self.wait_for(lambda: sum(seen[0] == "disconnect" for seen in self.seen) == 2)
        return self.seen


class IrcGatewayTests(TestCase):
    timeout = 120

    def test_irc_and_web_users_chat(self) -> Deferred[None]:
        """
        An IRC user and a websocket user in one password room see each other's
        messages; an IRC user's own message is not echoed to it; 475, 403 and 433
        reach a real client.
        """
        return Deferred.fromCoroutine(self._chat())

    async def _chat(self) -> None:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        config = directory / "tmd.toml"
        config.write_text('[irc]\nlisten = "tcp:0:interface=127.0.0.1"\nserver_name = "irc.test"\n')
        daemon = await Daemon.start(self, "--config", str(config), directory=directory)
        await eventually(lambda: IRC_LISTENING.search(daemon.output))
        match = IRC_LISTENING.search(daemon.output)
        assert match is not None
        irc_port = int(match.group(1))

        http = Http(daemon.url)
        code, _ = await http.call("POST", "/api/v1/rooms", {"name": ROOM, "password": PASSWORD})
        self.assertEqual(code, 201)
        code, joined = await http.call("POST", f"/api/v1/rooms/{ROOM}/join",
                                       {"nickname": "webby", "password": PASSWORD})
        self.assertEqual(code, 201)
        web = await connect(daemon.port, f"/api/v1/rooms/{ROOM}/live?token={joined['token']}")

        irc_side = deferToThread(IrcSession(irc_port).chat)
        frames = await web.wait_for(lambda frames: any(
            f["type"] == "message" and f["message"]["body"] == "hello from irc" for f in frames))
        said = [f["message"] for f in frames if f["type"] == "message"]
        self.assertEqual([(m["author"], m["body"]) for m in said], [("ircada", "hello from irc")])
        web.post("hello from web", ref="r1")
        seen = await irc_side

        messages = [(source.split("!")[0], target, args[0])
                    for kind, source, target, args in seen if kind == "pubmsg"]
        self.assertEqual(messages, [("webby", f"#{ROOM}", "hello from web")])
        self.assertTrue(any(kind == "currenttopic" for kind, _, _, _ in seen))
        self.assertIn(("welcome", "irc.test"), [(kind, source) for kind, source, _, _ in seen])
        code, page = await http.call("GET", f"/api/v1/rooms/{ROOM}/messages",
                                     token=joined["token"])
        self.assertEqual([(m["author"], m["body"]) for m in page["messages"]],
                         [("ircada", "hello from irc"), ("webby", "hello from web")])
        web.sendClose()
