"""
The IRC gateway on StringTransports: registration, channels as rooms, posting both
ways, line splitting, flood control and bad input, with a real Chat on SQLite.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.plugin import IPlugin, getPlugins
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from twisted.words.protocols.irc import parsemsg

import tmd.plugins
from tests.helpers import in_thread_now, open_store
from tmd.chat import Chat
from tmd.config import Config
from tmd.errors import NotFound
from tmd.hub import Hub
from tmd.interfaces import ITmdPlugin
from tmd.limits import NO_LIMITS, Limits, Rate, RateLimiter
from tmd.model import Message
from tmd.pluginhost import PluginContext
from tmd.plugins.irc import (
    LINE_COST,
    PING_AFTER,
    PING_TIMEOUT,
    IrcOptions,
    IrcProtocol,
    IrcService,
    author_mask,
    irc,
    irc_nick,
    parse_line,
    split_utf8,
)

Reply = tuple[str, str, list[str]]


class Client:
    """One IRC connection to the gateway, on a StringTransport."""

    def __init__(self, protocol: IrcProtocol, transport: StringTransport,
                 clock: MemoryReactorClock) -> None:
        self.protocol = protocol
        self.transport = transport
        self.clock = clock

    def send(self, *lines: str | bytes) -> None:
        """Send C{lines} at once, then wait for flood control to let them all through."""
        self.protocol.dataReceived(b"".join(
            (line if isinstance(line, bytes) else line.encode("utf-8")) + b"\r\n"
            for line in lines))
        self.clock.advance(LINE_COST * len(lines))

    def raw(self) -> list[bytes]:
        """The lines received since last asked, CRLF included."""
        data = self.transport.value()
        self.transport.clear()
        return data.splitlines(keepends=True)

    def replies(self) -> list[Reply]:
        """(prefix, command, params) of each line received since last asked."""
        return [parsemsg(line.decode("utf-8").rstrip("\r\n")) for line in self.raw()]

    def commands(self) -> list[str]:
        return [command for _, command, _ in self.replies()]

    def register(self, nick: str) -> None:
        self.send(f"NICK {nick}", f"USER {nick} 0 * :Real {nick}")
        self.raw()

    @property
    def closed(self) -> bool:
        return self.transport.disconnecting


class Gateway:
    """The plugin's service on a memory reactor, over a real Chat on a SQLite file."""

    def __init__(self, test: SynchronousTestCase, limits: Limits = NO_LIMITS,
                 *args: str) -> None:
        self.test = test
        self.reactor = MemoryReactorClock()
        self.store = open_store(test)
        self.hub = Hub(self.reactor)
        self.chat = Chat(self.store, self.hub, self.reactor, in_thread_now,
                         limiter=RateLimiter(limits, self.reactor))
        self.context = PluginContext(self.chat, self.hub, self.store, Config(), self.reactor)
        options = IrcOptions()
        options.parseOptions(list(args))
        service = irc.makeService(self.context, options)
        assert isinstance(service, IrcService)
        self.service = service
        test.successResultOf(service.startService())
        self.factory = service.factory

    def connect(self, host: str = "192.0.2.1") -> Client:
        address = IPv4Address("TCP", host, 40000)
        protocol = self.factory.buildProtocol(address)
        assert isinstance(protocol, IrcProtocol)
        transport = StringTransport(peerAddress=address)
        protocol.makeConnection(transport)
        return Client(protocol, transport, self.reactor)

    def user(self, nick: str, *channels: str) -> Client:
        """A registered client, on C{channels}."""
        client = self.connect()
        client.register(nick)
        for channel in channels:
            client.send(f"JOIN {channel}")
        client.raw()
        return client

    def room(self, name: str, *nicknames: str, **settings: Any) -> dict[str, str]:
        """Room C{name} with web participants C{nicknames}: their tokens and the owner's."""
        room, owner = self.test.successResultOf(
            Deferred.fromCoroutine(self.chat.create_room({"name": name, **settings})))
        tokens = {"owner": owner}
        for nickname in nicknames:
            _, tokens[nickname] = self.test.successResultOf(Deferred.fromCoroutine(
                self.chat.join(room, {"nickname": nickname, **(
                    {"password": settings["password"]} if "password" in settings else {})})))
        return tokens

    def post(self, name: str, token: str, body: str) -> Message:
        return self.test.successResultOf(Deferred.fromCoroutine(
            self.chat.post(name, token, {"body": body})))

    def messages(self, name: str) -> list[tuple[str | None, str]]:
        room = self.test.successResultOf(Deferred.fromCoroutine(self.chat.room(name)))
        messages, _ = self.test.successResultOf(Deferred.fromCoroutine(
            self.chat.messages(room, 0, 100)))
        return [(m.author, m.body) for m in messages]

    def participants(self, name: str, owner: str) -> list[str]:
        return [p.nickname for p in self.test.successResultOf(Deferred.fromCoroutine(
            self.chat.participants(name, owner)))]

    def online(self, name: str) -> int:
        room = self.test.successResultOf(Deferred.fromCoroutine(self.chat.room(name)))
        return self.hub.local_online(room.id)


def numerics(replies: list[Reply]) -> list[str]:
    return [command for _, command, _ in replies if command.isdigit()]


class PluginTests(SynchronousTestCase):
    def test_discovered(self) -> None:
        """The plugin is found in tmd.plugins, providing both plugin interfaces."""
        found = [p for p in getPlugins(ITmdPlugin, tmd.plugins) if p.name == "irc"]
        self.assertEqual(found, [irc])
        self.assertTrue(IPlugin.providedBy(irc) and ITmdPlugin.providedBy(irc))

    def test_options(self) -> None:
        """C{listen} defaults to tcp:6667; a bad endpoint or server name is refused clearly."""
        options = IrcOptions()
        options.parseOptions([])
        self.assertEqual(options["listen"], "tcp:6667")
        self.assertRaises(usage.UsageError, IrcOptions().parseOptions, ["--server-name", "a b"])
        options.parseOptions(["--listen", "nonsense:1"])
        context = PluginContext(None, None, None, Config(), MemoryReactorClock())  # type: ignore
        error = self.assertRaises(usage.UsageError, irc.makeService, context, options)
        self.assertIn("nonsense:1", str(error))

    def test_service(self) -> None:
        """The service listens where told, says so in its status, and closes clients at stop."""
        gateway = Gateway(self, NO_LIMITS, "--listen", "tcp:6697:interface=127.0.0.1",
                          "--server-name", "chat.example.org")
        port, _, _, interface = gateway.reactor.tcpServers[0]
        self.assertEqual((port, interface), (6697, "127.0.0.1"))
        self.assertEqual(gateway.context.state, "running")
        self.assertTrue(IService.providedBy(gateway.service))
        client = gateway.connect()
        client.send("PING :x")
        self.assertEqual(client.replies(),
                         [("chat.example.org", "PONG", ["chat.example.org", "x"])])
        self.successResultOf(gateway.service.stopService())
        self.assertEqual(client.replies(),
                         [("", "ERROR", ["Closing link: The server is shutting down"])])
        self.assertTrue(client.closed)


class HelperTests(SynchronousTestCase):
    def test_irc_nick(self) -> None:
        """Any nickname becomes a valid IRC one."""
        self.assertEqual([irc_nick(n) for n in ["ada", "José Ü", "1st", "-x", "李", "", "a" * 40]],
                         ["ada", "Jose_U", "_1st", "_-x", "_", "_", "a" * 32])

    def test_author_mask(self) -> None:
        """Social posts come from C{handle|network}, chat messages from their author."""
        def message(kind: str, author: str, source: dict[str, Any] | None) -> Message:
            return Message(seq=1, room="r", kind=kind, author=author, body="b", created_at=0,
                           source=source)

        self.assertEqual(author_mask(message("chat", "Zoë", None), "tmd"), "Zoe!chat@tmd")
        self.assertEqual(author_mask(message("social", "@ada", {"network": "mastodon"}), "tmd"),
                         "ada|mastodon!social@tmd")

    def test_split_utf8(self) -> None:
        """Pieces fit the budget, cut between characters, after a space when one is near."""
        text = "é" * 7
        pieces = split_utf8(text, 5)
        self.assertEqual(pieces, ["éé", "éé", "éé", "é"])
        self.assertEqual(split_utf8("hello world again", 12), ["hello world ", "again"])
        self.assertEqual(split_utf8("short", 10), ["short"])

    def test_parse_line(self) -> None:
        """Tags and prefixes are dropped; no command is None."""
        self.assertEqual(parse_line("@t=1 :me!u@h privmsg #a :hi there"),
                         ("PRIVMSG", ["#a", "hi there"]))
        self.assertEqual(parse_line("JOIN  #a   key"), ("JOIN", ["#a", "key"]))
        self.assertEqual(parse_line("PRIVMSG #a :"), ("PRIVMSG", ["#a", ""]))
        for nothing in [":prefix", "   ", ":only :x", "@tags"]:
            self.assertIsNone(parse_line(nothing), nothing)


class RegistrationTests(SynchronousTestCase):
    def test_welcome(self) -> None:
        """NICK and USER get 001 to 005 and 422, addressed to the nick."""
        client = Gateway(self).connect()
        client.send("NICK ada", "USER ada 0 * :Ada Lovelace")
        replies = client.replies()
        self.assertEqual(numerics(replies), ["001", "002", "003", "004", "005", "422"])
        self.assertEqual({params[0] for _, _, params in replies}, {"ada"})
        isupport = replies[4][2]
        for token in ["CHANTYPES=#", "NICKLEN=32", "CHANNELLEN=64", "CASEMAPPING=ascii"]:
            self.assertIn(token, isupport)

    def test_cap_negotiation(self) -> None:
        """A client that asks for capabilities gets none, and its welcome after CAP END."""
        client = Gateway(self).connect()
        client.send("CAP LS 302", "NICK ada", "USER ada 0 * :Ada")
        self.assertEqual(client.replies(), [("tmd", "CAP", ["*", "LS", ""])])
        client.send("CAP REQ :multi-prefix", "CAP END")
        replies = client.replies()
        self.assertEqual(replies[0], ("tmd", "CAP", ["ada", "NAK", "multi-prefix"]))
        self.assertEqual(numerics(replies)[0], "001")

    def test_before_registration(self) -> None:
        """Only registration commands, PING and QUIT work before registering: else 451."""
        client = Gateway(self).connect()
        client.send("JOIN #a", "PRIVMSG #a :hi", "PING :t")
        self.assertEqual(client.commands(), ["451", "451", "PONG"])

    def test_bad_nicknames(self) -> None:
        """No nickname: 431; an invalid one: 432; one another connection holds: 433."""
        gateway = Gateway(self)
        gateway.user("ada")
        client = gateway.connect()
        client.send("NICK", "NICK 1ada", "NICK a:b", "NICK " + "a" * 33, "NICK ADA", "NICK bob")
        self.assertEqual(client.commands(), ["431", "432", "432", "432", "433"])
        client.send("USER bob 0 * :Bob")
        self.assertEqual(client.commands()[0], "001")

    def test_nick_change(self) -> None:
        """A nick changes while on no channel, freeing the old one; on a channel: 447."""
        gateway = Gateway(self)
        gateway.room("physics")
        client = gateway.user("ada")
        client.send("NICK ada2")
        self.assertEqual(client.replies(), [("ada!ada@tmd", "NICK", ["ada2"])])
        gateway.user("ada")  # free again
        client.send("JOIN #physics")
        client.raw()
        client.send("NICK ada3")
        self.assertEqual(client.commands(), ["447"])

    def test_user_twice(self) -> None:
        """USER after registration: 462; USER with too few parameters: 461."""
        client = Gateway(self).connect()
        client.send("NICK ada", "USER ada")
        self.assertEqual(client.commands(), ["461"])
        client.send("USER ada 0 * :Ada")
        client.raw()
        client.send("USER ada 0 * :Ada", "PASS secret")
        self.assertEqual(client.commands(), ["462", "462"])


class JoinTests(SynchronousTestCase):
    def test_join(self) -> None:
        """
        JOIN of an open room: the JOIN, the title as 332, NAMES of the IRC users; the
        user is a participant of the room and is online.
        """
        gateway = Gateway(self)
        tokens = gateway.room("physics-101", "webby", title="Physics 101")
        client = gateway.user("ada")
        client.send("JOIN #Physics-101")
        self.assertEqual(client.replies(), [
            ("ada!ada@tmd", "JOIN", ["#physics-101"]),
            ("tmd", "332", ["ada", "#physics-101", "Physics 101"]),
            ("tmd", "353", ["ada", "=", "#physics-101", "ada"]),
            ("tmd", "366", ["ada", "#physics-101", "End of /NAMES list"]),
        ])
        self.assertEqual(gateway.participants("physics-101", tokens["owner"]), ["webby", "ada"])
        self.assertEqual(gateway.online("physics-101"), 1)
        client.send("JOIN #physics-101")  # again: nothing happens
        self.assertEqual(client.raw(), [])

    def test_missing_room(self) -> None:
        """JOIN of a channel with no room: 403, and no room is made."""
        gateway = Gateway(self)
        client = gateway.user("ada")
        client.send("JOIN #nowhere", "JOIN nohash", "JOIN #x")
        self.assertEqual(client.commands(), ["403", "403", "403"])
        self.failureResultOf(Deferred.fromCoroutine(gateway.chat.room("nowhere")), NotFound)

    def test_closed_room(self) -> None:
        """A closed room is no channel to join: 403."""
        gateway = Gateway(self)
        tokens = gateway.room("physics")
        self.successResultOf(Deferred.fromCoroutine(
            gateway.chat.update_room("physics", tokens["owner"], {"state": "closed"})))
        client = gateway.user("ada")
        client.send("JOIN #physics")
        replies = client.replies()
        self.assertEqual(numerics(replies), ["403"])
        self.assertIn("closed", replies[0][2][-1])

    def test_password(self) -> None:
        """A password room wants the password as the channel key: 475 otherwise."""
        gateway = Gateway(self)
        gateway.room("secret", password="sesame")
        client = gateway.user("ada")
        client.send("JOIN #secret", "JOIN #secret wrong")
        self.assertEqual(client.commands(), ["475", "475"])
        client.send("JOIN #secret,#other sesame")
        self.assertEqual(client.commands(), ["JOIN", "332", "353", "366", "403"])

    def test_nickname_of_a_web_participant(self) -> None:
        """A nickname a web participant holds in the room: 433, and no new participant."""
        gateway = Gateway(self)
        tokens = gateway.room("physics", "Ada")
        client = gateway.user("ada")
        client.send("JOIN #physics")
        replies = client.replies()
        self.assertEqual(numerics(replies), ["433"])
        self.assertIn("#physics", replies[0][2][-1])
        self.assertEqual(gateway.participants("physics", tokens["owner"]), ["Ada"])

    def test_nickname_held_for_the_room(self) -> None:
        """A nickname an earlier IRC connection joined with stays held: 433 for the next one."""
        gateway = Gateway(self)
        gateway.room("physics")
        first = gateway.user("ada", "#physics")
        first.send("QUIT :bye")
        first.protocol.connectionLost()
        second = gateway.user("ada")
        second.send("JOIN #physics")
        self.assertEqual(second.commands(), ["433"])

    def test_part_and_join_again(self) -> None:
        """PART then JOIN on one connection rejoins as the same participant."""
        gateway = Gateway(self)
        tokens = gateway.room("physics")
        client = gateway.user("ada", "#physics")
        client.send("PART #physics :brb")
        self.assertEqual(client.replies(), [("ada!ada@tmd", "PART", ["#physics", "brb"])])
        self.assertEqual(gateway.online("physics"), 0)
        client.send("JOIN #physics")
        self.assertEqual(client.commands(), ["JOIN", "332", "353", "366"])
        self.assertEqual(gateway.participants("physics", tokens["owner"]), ["ada"])
        client.send("PART #nowhere", "PART")
        self.assertEqual(client.commands(), ["442", "461"])

    def test_join_zero(self) -> None:
        """JOIN 0 leaves every channel."""
        gateway = Gateway(self)
        gateway.room("physics")
        gateway.room("chemistry")
        client = gateway.user("ada", "#physics", "#chemistry")
        client.send("JOIN 0")
        self.assertEqual(client.commands(), ["PART", "PART"])

    def test_names_and_who(self) -> None:
        """NAMES and WHO list the IRC users on the channel; the others see JOIN, PART, QUIT."""
        gateway = Gateway(self)
        gateway.room("physics", "webby")
        ada = gateway.user("ada", "#physics")
        bob = gateway.user("bob", "#physics")
        self.assertEqual(ada.replies(), [("bob!bob@tmd", "JOIN", ["#physics"])])
        bob.send("NAMES #physics", "WHO #physics", "NAMES")
        replies = bob.replies()
        self.assertEqual(replies[0][2], ["bob", "=", "#physics", "ada bob"])
        self.assertEqual([params[5] for _, c, params in replies if c == "352"], ["ada", "bob"])
        self.assertEqual(numerics(replies), ["353", "366", "352", "352", "315", "366"])
        bob.send("PART #physics")
        self.assertEqual(ada.replies(), [("bob!bob@tmd", "PART", ["#physics", "Leaving"])])
        bob.send("JOIN #physics")
        ada.raw()
        bob.send("QUIT :gone fishing")
        bob.protocol.connectionLost()
        self.assertEqual(ada.replies(), [("bob!bob@tmd", "QUIT", ["Quit: gone fishing"])])

    def test_topic_and_mode(self) -> None:
        """TOPIC shows the title and is the owner's to change; MODE answers what clients ask."""
        gateway = Gateway(self)
        gateway.room("physics", title="Waves")
        client = gateway.user("ada", "#physics")
        client.send("TOPIC #physics", "TOPIC #physics :mine", "TOPIC #other", "MODE #physics",
                    "MODE #physics b", "MODE #physics +o ada", "MODE ada +i", "MODE bob")
        self.assertEqual(client.commands(),
                         ["332", "482", "442", "324", "368", "482", "221", "502"])

    def test_join_rate_limited(self) -> None:
        """Joins from one address beyond its limit: 437 saying when to try again."""
        gateway = Gateway(self, Limits(address_joins=Rate(1, 60)))
        gateway.room("physics")
        gateway.room("chemistry")
        client = gateway.user("ada", "#physics")
        client.send("JOIN #chemistry")
        replies = client.replies()
        self.assertEqual(numerics(replies), ["437"])
        self.assertIn("try again", replies[0][2][-1])


class PostingTests(SynchronousTestCase):
    def test_privmsg_posts(self) -> None:
        """PRIVMSG to the channel posts to the room as the nick; it is not echoed back."""
        gateway = Gateway(self)
        tokens = gateway.room("physics", "webby")
        client = gateway.user("ada", "#physics")
        client.send("PRIVMSG #physics :Is light a \x02wave\x02?",
                    "PRIVMSG #physics :\x01ACTION waves\x01", "PRIVMSG #physics :\x01VERSION\x01")
        self.assertEqual(gateway.messages("physics"),
                         [("ada", "Is light a wave?"), ("ada", "* waves")])
        self.assertEqual(client.raw(), [])
        gateway.post("physics", tokens["webby"], "Both!")
        self.assertEqual(client.replies(),
                         [("webby!chat@tmd", "PRIVMSG", ["#physics", "Both!"])])

    def test_privmsg_errors(self) -> None:
        """No target: 411; no text: 412; a channel not joined: 404; a nick: 401."""
        gateway = Gateway(self)
        gateway.room("physics")
        client = gateway.user("ada")
        client.send("PRIVMSG", "PRIVMSG #physics", "PRIVMSG #physics :  ", "PRIVMSG #physics :hi",
                    "PRIVMSG bob :hi")
        self.assertEqual(client.commands(), ["411", "412", "412", "404", "401"])

    def test_refused_posts(self) -> None:
        """A post the room refuses: 404 saying why (too long, paused, muted, rate limited)."""
        gateway = Gateway(self, Limits(participant_posts=Rate(2, 60)))
        tokens = gateway.room("physics", max_length=10)
        client = gateway.user("ada", "#physics")
        client.send("PRIVMSG #physics :far too long a message")
        reasons = [params[-1] for _, _, params in client.replies()]
        self.assertEqual(len(reasons), 1)
        self.assertIn("at most 10 characters", reasons[0])
        client.send("PRIVMSG #physics :one", "PRIVMSG #physics :two", "PRIVMSG #physics :three")
        replies = client.replies()
        self.assertEqual(numerics(replies), ["404"])
        self.assertIn("try again", replies[0][2][-1])
        self.successResultOf(Deferred.fromCoroutine(
            gateway.chat.update_room("physics", tokens["owner"], {"state": "paused"})))
        client.raw()
        gateway.reactor.advance(60)
        client.send("PRIVMSG #physics :paused?")
        replies = client.replies()
        self.assertEqual(numerics(replies), ["404"])
        self.assertIn("paused", replies[0][2][-1])
        self.assertEqual([body for _, body in gateway.messages("physics")], ["one", "two"])

    def test_room_messages_arrive(self) -> None:
        """
        Messages posted after the JOIN arrive as PRIVMSG from their author's IRC nick,
        nothing from before; social posts too; system messages as NOTICE.
        """
        gateway = Gateway(self)
        tokens = gateway.room("physics", "José Ü")
        gateway.post("physics", tokens["José Ü"], "before")
        client = gateway.user("ada", "#physics")
        gateway.post("physics", tokens["José Ü"], "after")
        room = self.successResultOf(Deferred.fromCoroutine(gateway.chat.room("physics")))
        channel = client.protocol._channels["physics"]
        channel.send_message(Message(seq=3, room="physics", kind="social", author="@ada",
                                     body="tweet", created_at=0, source={"network": "twitter"}))
        channel.send_message(Message(seq=4, room="physics", kind="system", author=None,
                                     body="The room was renamed", created_at=0))
        self.assertEqual(room.last_seq, 2)
        self.assertEqual(client.replies(), [
            ("Jose_U!chat@tmd", "PRIVMSG", ["#physics", "after"]),
            ("ada|twitter!social@tmd", "PRIVMSG", ["#physics", "tweet"]),
            ("tmd", "NOTICE", ["#physics", "The room was renamed"]),
        ])

    def test_long_and_multiline_messages(self) -> None:
        """
        A message of several lines is one PRIVMSG a line; a long line is cut into pieces
        that fit in 512 bytes with CRLF, each valid UTF-8, together the whole line.
        """
        gateway = Gateway(self)
        tokens = gateway.room("physics", "webby", max_length=1000)
        client = gateway.user("ada", "#physics")
        gateway.post("physics", tokens["webby"], "first\n\nsecond\nthird")
        self.assertEqual([params[1] for _, _, params in client.replies()],
                         ["first", "second", "third"])
        long_line = "é😀" * 300 + " tail"
        gateway.post("physics", tokens["webby"], long_line)
        lines = client.raw()
        self.assertGreater(len(lines), 1)
        self.assertTrue(all(len(line) <= 512 and line.endswith(b"\r\n") for line in lines))
        pieces = [parsemsg(line.decode("utf-8").rstrip("\r\n"))[2][1] for line in lines]
        self.assertEqual("".join(pieces), long_line)

    def test_own_messages_not_echoed(self) -> None:
        """A message by the user itself, however it arrives, is not sent back."""
        gateway = Gateway(self)
        gateway.room("physics")
        ada = gateway.user("ada", "#physics")
        bob = gateway.user("bob", "#physics")
        ada.raw()
        ada.send("PRIVMSG #physics :hello")
        self.assertEqual(ada.raw(), [])
        self.assertEqual(bob.replies(), [("ada!chat@tmd", "PRIVMSG", ["#physics", "hello"])])


class RoomEventTests(SynchronousTestCase):
    def test_title_and_state(self) -> None:
        """A new title is a TOPIC; a pause or close is a NOTICE; presence says nothing."""
        gateway = Gateway(self)
        tokens = gateway.room("physics", title="Waves")
        client = gateway.user("ada", "#physics")
        for change in [{"title": "Particles"}, {"state": "paused"}, {"state": "open"}]:
            self.successResultOf(Deferred.fromCoroutine(
                gateway.chat.update_room("physics", tokens["owner"], change)))
        gateway.reactor.advance(1)  # a presence frame
        replies = client.replies()
        self.assertEqual([(c, p[-1]) for _, c, p in replies], [
            ("TOPIC", "Particles"),
            ("NOTICE", "This room is paused: posting is off for now"),
            ("NOTICE", "This room is open again: post away"),
        ])

    def test_paused_room_joined(self) -> None:
        """Joining a paused room says so."""
        gateway = Gateway(self)
        tokens = gateway.room("physics")
        self.successResultOf(Deferred.fromCoroutine(
            gateway.chat.update_room("physics", tokens["owner"], {"state": "paused"})))
        client = gateway.user("ada")
        client.send("JOIN #physics")
        self.assertEqual(client.commands(), ["JOIN", "332", "353", "366", "NOTICE"])

    def test_room_deleted(self) -> None:
        """A deleted room KICKs its IRC users, who are no longer subscribed."""
        gateway = Gateway(self)
        tokens = gateway.room("physics")
        client = gateway.user("ada", "#physics")
        room = self.successResultOf(Deferred.fromCoroutine(gateway.chat.room("physics")))
        self.successResultOf(Deferred.fromCoroutine(
            gateway.chat.delete_room("physics", tokens["owner"])))
        self.assertEqual(client.replies(),
                         [("tmd", "KICK", ["#physics", "ada", "This room was deleted"])])
        self.assertEqual(gateway.hub.local_online(room.id), 0)
        client.send("PRIVMSG #physics :hello?")
        self.assertEqual(client.commands(), ["404"])


class ConnectionTests(SynchronousTestCase):
    def test_quit(self) -> None:
        """QUIT: an ERROR line, the connection closes, the rooms are left, the nick is free."""
        gateway = Gateway(self)
        gateway.room("physics")
        client = gateway.user("ada", "#physics")
        self.assertEqual(gateway.online("physics"), 1)
        client.send("QUIT :bye", "PRIVMSG #physics :after quit")
        self.assertEqual(client.replies(), [("", "ERROR", ["Closing link: Quit: bye"])])
        self.assertTrue(client.closed)
        client.protocol.connectionLost()
        self.assertEqual(gateway.online("physics"), 0)
        self.assertEqual(gateway.messages("physics"), [])
        self.assertEqual(gateway.factory.nicks, {})
        self.assertEqual(gateway.factory.connections, set())

    def test_garbage(self) -> None:
        """Bad lines never break the connection: unknown commands 421, others ignored or 417."""
        gateway = Gateway(self)
        gateway.room("physics")
        client = gateway.user("ada", "#physics")
        client.send(b"\xff\xfe\x00", b":prefix-only", b"   ", b"PRIVMSG #physics :caf\xe9",
                    b"\x01\x02", b"__CLASS__", b"WHOIS ada", b"X" * 600, b"LIST")
        self.assertEqual(client.commands(), ["421", "421", "421", "421", "417", "421"])
        self.assertEqual(gateway.messages("physics"), [("ada", "caf\ufffd")])
        client.send(b"\n\r\n", b"PING :still here")
        self.assertEqual(client.commands(), ["PONG"])

    def test_long_unterminated_line(self) -> None:
        """An endless line is dropped up to its end (417), and the next line works."""
        gateway = Gateway(self)
        client = gateway.user("ada")
        for _ in range(20):
            client.protocol.dataReceived(b"A" * 1000)
        client.send(b"tail", b"PING :x")
        self.assertEqual(client.commands(), ["417", "PONG"])
        self.assertFalse(client.closed)

    def test_unexpected_failure(self) -> None:
        """A failure in a command is logged and answered with 400; the connection goes on."""
        gateway = Gateway(self)
        gateway.room("physics")
        client = gateway.user("ada")
        gateway.factory.chat = None  # type: ignore[assignment]
        client.send("JOIN #physics")
        replies = client.replies()
        self.assertEqual(numerics(replies), ["400"])
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)
        client.send("PING :x")
        self.assertEqual(client.commands(), ["PONG"])

    def test_flood(self) -> None:
        """
        RFC 2812 flood control: 5 lines at once, then one every 2 s, the socket paused
        meanwhile; lines are handled in order.
        """
        gateway = Gateway(self)
        client = gateway.user("ada")
        gateway.reactor.advance(30)
        client.protocol.dataReceived(b"".join(b"PING :%d\r\n" % i for i in range(8)))
        self.assertEqual([p[-1] for _, _, p in client.replies()], ["0", "1", "2", "3", "4"])
        self.assertEqual(client.transport.producerState, "paused")
        gateway.reactor.advance(2)
        self.assertEqual([p[-1] for _, _, p in client.replies()], ["5"])
        gateway.reactor.advance(4)
        self.assertEqual([p[-1] for _, _, p in client.replies()], ["6", "7"])
        self.assertEqual(client.transport.producerState, "producing")

    def test_free_lines(self) -> None:
        """Lines before registration and PONGs do not count against the flood allowance."""
        gateway = Gateway(self)
        client = gateway.connect()
        client.protocol.dataReceived(b"".join(b"NICK ada%d\r\n" % i for i in range(8)) +
                                     b"USER ada 0 * :Ada\r\n" + b"PONG :x\r\n" * 8 +
                                     b"".join(b"PING :%d\r\n" % i for i in range(5)))
        replies = client.replies()
        self.assertEqual(numerics(replies)[0], "001")
        self.assertEqual([p[-1] for _, c, p in replies if c == "PONG"], ["0", "1", "2", "3", "4"])

    def test_excess_flood(self) -> None:
        """More than 8 KiB of lines waiting: ERROR :Excess Flood, and the connection closes."""
        gateway = Gateway(self)
        client = gateway.user("ada")
        client.send(*[f"PRIVMSG #nowhere :{'x' * 400}" for _ in range(30)])
        self.assertEqual(client.replies()[-1], ("", "ERROR", ["Closing link: Excess Flood"]))
        self.assertTrue(client.closed)

    def test_idle(self) -> None:
        """A silent client is PINGed, then disconnected if it stays silent."""
        gateway = Gateway(self)
        client = gateway.user("ada")
        gateway.reactor.advance(PING_AFTER)
        self.assertEqual(client.replies(), [("", "PING", ["tmd"])])
        client.send("PONG :tmd")
        gateway.reactor.advance(PING_AFTER)
        self.assertEqual(client.commands(), ["PING"])
        gateway.reactor.advance(PING_TIMEOUT)
        self.assertEqual(client.replies(), [("", "ERROR", ["Closing link: Ping timeout"])])
        self.assertTrue(client.closed)

    def test_registration_timeout(self) -> None:
        """A client that does not register in time is disconnected."""
        gateway = Gateway(self)
        client = gateway.connect()
        client.send("NICK ada")
        gateway.reactor.advance(PING_AFTER)
        self.assertEqual(client.replies(),
                         [("", "ERROR", ["Closing link: Registration timed out"])])
        self.assertTrue(client.closed)

    def test_slow_reader(self) -> None:
        """A client that reads nothing while its room talks on is dropped (SendQ exceeded)."""
        gateway = Gateway(self)
        gateway.room("physics")
        client = gateway.user("ada", "#physics")
        assert client.transport.producer is not None
        client.transport.producer.pauseProducing()  # the transport's buffer is full
        channel = client.protocol._channels["physics"]
        for seq in range(1, 600):
            channel.send_message(Message(seq=seq, room="physics", kind="chat", author="webby",
                                         body="x" * 1000, created_at=0))
        self.assertTrue(client.transport.disconnecting)
        client.protocol.connectionLost()
        self.assertEqual(gateway.online("physics"), 0)
