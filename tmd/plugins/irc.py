"""
The IRC gateway plugin: a room is the channel C{#<room name>}, for people whose client
speaks IRC (RFC 2812).

It only translates (STYLE.md section 5): NICK is the nickname a user joins rooms with,
through L{Chat.join} so every rule holds; PRIVMSG to a channel posts with L{Chat.post},
rate-limited by the client's address; each joined channel follows its room with a
L{Follower}. What IRC users and operators should know:

 - A JOIN starts at the room's last message: no backlog, since IRC cannot mark old
   lines as old (the transcript is on the web). Messages come as PRIVMSG from their
   author (a social post's nick ends in C{|network}); system messages as NOTICE; a
   deleted room KICKs its users; pauses and closes come as NOTICE, a new title as TOPIC.
 - A nickname is held in a room for the room's life, as on the web: PART then JOIN on the
   same connection rejoins as the same participant, but no one else (on the web, or on
   a later IRC connection) can join that room under it (433). NICK changes only while on
   no channel (447), since one's name in a room never changes.
 - NAMES, WHO and JOIN/PART/QUIT lines show the IRC users of this daemon only.
 - Flood control is RFC 2812's: each line costs 2 s of a 10 s allowance, so a burst of 5
   lines is handled at once, then one every 2 s, while the socket is not read. Lines
   before registration and PONGs are free, so a client's opening burst goes through. A
   client with more than L{RECVQ} bytes of lines waiting is disconnected (C{ERROR :Excess
   Flood}); one that does not read what it is sent (L{SENDQ} bytes stuck) too. Lines are
   handled one after another, in order, each after the previous one has finished.
 - Lines over 512 bytes (with CRLF) are refused with 417; bytes that are not UTF-8
   become U+FFFD; unknown commands get 421; anything unexpected is logged and answered
   with 400. A silent client is PINGed after 90 s and disconnected 90 s later; one that
   has not registered after 90 s is disconnected.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import deque
from collections.abc import Coroutine, Mapping
from string import ascii_letters, digits
from typing import Any, cast
from urllib.parse import urlparse

from twisted.application.service import IService
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.words.protocols.irc import (
    ERR_ALREADYREGISTRED,
    ERR_BADCHANNELKEY,
    ERR_CANNOTSENDTOCHAN,
    ERR_CHANOPRIVSNEEDED,
    ERR_ERRONEUSNICKNAME,
    ERR_NEEDMOREPARAMS,
    ERR_NICKNAMEINUSE,
    ERR_NOMOTD,
    ERR_NONICKNAMEGIVEN,
    ERR_NOORIGIN,
    ERR_NORECIPIENT,
    ERR_NOSUCHCHANNEL,
    ERR_NOSUCHNICK,
    ERR_NOTEXTTOSEND,
    ERR_NOTONCHANNEL,
    ERR_NOTREGISTERED,
    ERR_UNAVAILRESOURCE,
    ERR_UNKNOWNCOMMAND,
    ERR_USERSDONTMATCH,
    IRC,
    RPL_CHANNELMODEIS,
    RPL_CREATED,
    RPL_ENDOFBANLIST,
    RPL_ENDOFNAMES,
    RPL_ENDOFWHO,
    RPL_ISUPPORT,
    RPL_MYINFO,
    RPL_NAMREPLY,
    RPL_TOPIC,
    RPL_UMODEIS,
    RPL_WELCOME,
    RPL_WHOREPLY,
    RPL_YOURHOST,
    stripFormatting,
)
from zope.interface import implementer

from tmd import __version__
from tmd.chat import MAX_NICKNAME, MAX_TITLE, Chat
from tmd.errors import (
    ApiError,
    NameTaken,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from tmd.follow import Follower
from tmd.hub import Hub
from tmd.interfaces import IPluginContext, ITmdPlugin
from tmd.limits import address_key
from tmd.model import Event, Message, Participant, Room, nickname_key
from tmd.service import Listener
from tmd.wire import timestamp

MAX_LINE = 512
"""Bytes in a line, CRLF included (RFC 2812)."""
LINE_COST = 2.0
FLOOD_ALLOWANCE = 10.0
"""RFC 2812 flood control: each line costs 2 s; a client may be 10 s ahead of the clock."""
RECVQ = 8192
"""Bytes of lines waiting to be handled before a client is disconnected for flooding."""
SENDQ = 512 * 1024
"""Bytes written beyond a full transport buffer before a client is dropped as too slow."""
PING_AFTER = 90.0
PING_TIMEOUT = 90.0
CHANNEL_LENGTH = 64  # "#" and a room name
OPEN_COMMANDS = frozenset({"CAP", "NICK", "USER", "PASS", "PING", "PONG", "QUIT"})
"""The commands a client may send before it has registered."""
STATE_NOTICES = {
    "open": "This room is open again: post away",
    "paused": "This room is paused: posting is off for now",
    "closed": "This room is closed: it is read-only for good",
}

ERR_INPUTTOOLONG = "417"
ERR_NONICKCHANGE = "447"
ERR_UNKNOWNERROR = "400"

_NICK_FIRST = frozenset(ascii_letters + "[]\\`_^{|}")
_NICK_REST = _NICK_FIRST | frozenset(digits + "-")
_NICK = re.compile(rf"[A-Za-z\[\]\\`_^{{|}}][A-Za-z0-9\[\]\\`_^{{|}}-]{{0,{MAX_NICKNAME - 1}}}")
_USER = re.compile(r"[^A-Za-z0-9_.-]")
_NOT_IN_PARAM = re.compile(r"[\s\0]")
_LINE_BREAK = re.compile(r"[\r\n\0]")
_SERVER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")


def irc_nick(name: str) -> str:
    """C{name} as a valid IRC nickname: accents dropped, other characters as C{_}."""
    letters = unicodedata.normalize("NFKD", name)
    nick = "".join(c if c in _NICK_REST else "_" for c in letters if not unicodedata.combining(c))
    if not nick or nick[0] not in _NICK_FIRST:
        nick = "_" + nick
    return nick[:MAX_NICKNAME]


def author_mask(message: Message, server: str) -> str:
    """Whom a room message comes from on IRC: C{nick!chat@server}, C{nick|network!social@...}."""
    author = message.author or "unknown"
    if message.kind != "social":
        return f"{irc_nick(author)}!chat@{server}"
    network = (message.source or {}).get("network")
    suffix = "|" + irc_nick(network)[:12] if isinstance(network, str) else ""
    return f"{irc_nick(author.lstrip('@'))[:MAX_NICKNAME - len(suffix)]}{suffix}!social@{server}"


def split_utf8(text: str, budget: int) -> list[str]:
    """
    C{text} in pieces of at most C{budget} UTF-8 bytes, cut between characters, after a
    space if there is one in the second half of the piece.
    """
    pieces = []
    data = text.encode("utf-8")
    while len(data) > budget:
        cut = budget
        while data[cut] & 0xC0 == 0x80:  # a continuation byte: the character started earlier
            cut -= 1
        space = data.rfind(b" ", cut // 2, cut)
        if space > 0:
            cut = space + 1
        pieces.append(data[:cut].decode("utf-8"))
        data = data[cut:]
    pieces.append(data.decode("utf-8"))
    return pieces


def clip(text: str, budget: int) -> str:
    """C{text} cut to at most C{budget} UTF-8 bytes, between characters."""
    return text.encode("utf-8")[:max(budget, 0)].decode("utf-8", "ignore")


def parse_line(line: str) -> tuple[str, list[str]] | None:
    """A client's line as (command, parameters), None if it has none; tags and prefix dropped."""
    if line.startswith("@"):
        line = line.partition(" ")[2]
    line = line.lstrip(" ")
    if line.startswith(":"):
        line = line.partition(" ")[2]
    head, colon, trailing = line.partition(" :")
    if head.startswith(":"):  # the trailing parameter right after the command is impossible
        return None
    words = [word for word in head.split(" ") if word]
    if not words:
        return None
    if colon:
        words.append(trailing)
    return words[0].upper(), words[1:]


class FloodTimer:
    """RFC 2812's message timer for one client: how long before its next line may be read."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._timer = 0.0

    def wait(self) -> float:
        """Seconds to wait before the next line; 0 if it may be handled now."""
        ahead = max(self._timer, self._clock.seconds()) + LINE_COST - self._clock.seconds()
        return max(0.0, ahead - FLOOD_ALLOWANCE)

    def charge(self) -> None:
        """A line is being handled: the timer moves on."""
        self._timer = max(self._timer, self._clock.seconds()) + LINE_COST


@implementer(IPushProducer)
class SendQueue:
    """Told by the transport when its write buffer is full; counts what is written meanwhile."""

    def __init__(self) -> None:
        self.full = False
        self.stuck = 0

    def pauseProducing(self) -> None:
        self.full = True

    def resumeProducing(self) -> None:
        self.full = False
        self.stuck = 0

    def stopProducing(self) -> None:
        self.full = False


class Channel:
    """A channel one connection is on: the room, who it is there, and its Follower's client."""

    def __init__(self, connection: IrcProtocol, room: Room, participant: Participant,
                 state: str, chat: Chat) -> None:
        self.connection = connection
        self.room = room
        self.name = "#" + room.name
        self.participant = participant
        self.title = room.title
        self.state = state
        self.follower = Follower(chat, room, room.last_seq, self)
        """Follows the room from its last message at the JOIN: no backlog."""

    def can_send(self) -> bool:
        return self.connection.is_on(self)

    def send_message(self, message: Message) -> None:
        self.connection.relay(self, message)

    def send_event(self, event: Event) -> None:
        if event.gone:
            self.connection.room_gone(self)
        elif event.message is not None:
            self.connection.relay(self, event.message)
        else:
            frame = json.loads(event.frame)
            if frame.get("type") == "room":
                self.connection.room_changed(self, frame["room"])

    def run(self, work: Coroutine[Any, Any, None], what: str) -> None:
        self.connection.run(work, what)


class IrcProtocol(IRC):
    """One IRC client: its lines in, in order and throttled; its rooms' messages out."""

    factory: IrcFactory
    log = Logger()

    def __init__(self) -> None:
        self.nick: str | None = None
        self._user: str | None = None
        self._negotiating = False
        self._registered = False
        self._live = False
        self._channels: dict[str, Channel] = {}
        self._held: dict[tuple[int, str], tuple[Participant, str]] = {}
        self._received = b""
        self._overlong = False
        self._lines: deque[bytes | None] = deque()
        self._waiting_bytes = 0
        self._reading = False
        self._paused = False
        self._flood_wait: Deferred[None] | None = None
        self._sendq = SendQueue()
        self._quit_reason = "Connection closed"

    # The connection

    def connectionMade(self) -> None:
        # A TCP or TLS transport: a producer we pause, a consumer that pauses our SendQueue.
        self.socket = cast(Any, self.transport)
        self._live = True
        self.server = self.factory.server_name
        self._address = address_key(self.socket.getPeer())
        self._flood = FloodTimer(self.factory.clock)
        self.socket.registerProducer(self._sendq, True)
        self._pinged = False
        self._idle: IDelayedCall = self.factory.clock.callLater(PING_AFTER, self._idle_check)
        self.factory.connections.add(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._live = False
        if self._idle.active():
            self._idle.cancel()
        if self._flood_wait is not None:
            self._flood_wait.cancel()
        self._lines.clear()
        told: dict[IrcProtocol, None] = {}
        for channel in list(self._channels.values()):
            told.update(dict.fromkeys(self._leave(channel)))
        for member in told:
            member.send("QUIT", self._quit_reason, source=self.mask)
        if self.nick is not None and self.factory.nicks.get(nickname_key(self.nick)) is self:
            del self.factory.nicks[nickname_key(self.nick)]
        self.factory.connections.discard(self)

    def close(self, reason: str) -> None:
        """Say why in an ERROR line, then disconnect."""
        if self._live:
            self.send("ERROR", f"Closing link: {reason}", source=None)
            self._live = False
            self._quit_reason = reason
            self.socket.loseConnection()

    def _idle_check(self) -> None:
        if not self._registered:
            self.close("Registration timed out")
        elif self._lines or not self._pinged:
            self._pinged = not self._lines
            if self._pinged:
                self.send("PING", self.server, source=None)
            self._idle = self.factory.clock.callLater(PING_TIMEOUT, self._idle_check)
        else:
            self.close("Ping timeout")

    @property
    def mask(self) -> str:
        return f"{self.nick}!{self._user or 'irc'}@{self.server}"

    # Lines in

    def dataReceived(self, data: bytes) -> None:
        if not self._live:
            return
        self._pinged = False
        self._idle.reset(PING_AFTER)
        *lines, rest = (self._received + data).split(b"\n")
        for line in lines:
            line = line[:-1] if line.endswith(b"\r") else line
            if self._overlong or len(line) > MAX_LINE - 2:
                self._overlong = False
                self._lines.append(None)
                self._waiting_bytes += MAX_LINE
            elif line.strip():
                self._lines.append(line)
                self._waiting_bytes += len(line)
        if len(rest) > MAX_LINE:  # too long already: drop it up to its end
            self._overlong, rest = True, b""
        self._received = rest
        if self._waiting_bytes > RECVQ:
            self.close("Excess Flood")
            return
        if self._lines and not self._reading:
            self.run(self._read_lines(), "reading lines")
        if self._lines and self._live and not self._paused:
            self._paused = True
            self.socket.pauseProducing()

    async def _read_lines(self) -> None:
        self._reading = True
        try:
            while self._lines and self._live:
                wait = self._flood.wait() if self._registered else 0
                if wait > 0:
                    self._flood_wait = deferLater(self.factory.clock, wait)
                    try:
                        await self._flood_wait
                    except CancelledError:
                        return
                    finally:
                        self._flood_wait = None
                    continue
                line = self._lines.popleft()
                self._waiting_bytes -= len(line) if line is not None else MAX_LINE
                counted = self._registered
                if await self._handle(line) != "PONG" and counted:
                    self._flood.charge()
        finally:
            self._reading = False
            if self._paused and self._live:
                self._paused = False
                self.socket.resumeProducing()

    async def _handle(self, line: bytes | None) -> str | None:
        """Handle one line; returns its command, if it has one."""
        if line is None:
            self.reply(ERR_INPUTTOOLONG, "Input line was too long: at most 512 bytes with CRLF")
            return None
        parsed = parse_line(line.decode("utf-8", "replace").replace("\r", "").replace("\0", ""))
        if parsed is None:
            return None
        command, params = parsed
        handler = None
        if command.isascii() and command.isalpha():
            handler = getattr(self, f"irc_{command}", None)
        if handler is None:
            self.reply(ERR_UNKNOWNCOMMAND, clip(command, 32), "Unknown command")
        elif not self._registered and command not in OPEN_COMMANDS:
            self.reply(ERR_NOTREGISTERED, "You have not registered: send NICK and USER first")
        else:
            try:
                await handler(params)
            except Unavailable as e:
                self.log.info("IRC {command}: the database is unavailable", command=command)
                self.reply(ERR_UNKNOWNERROR, command, e.message)
            except Exception:
                self.log.failure("IRC {command} failed", command=command)
                self.reply(ERR_UNKNOWNERROR, command, "The server failed to do that; try again")
        return command

    def run(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run C{work}; log an unexpected failure and tell the user."""
        def failed(failure: Failure) -> None:
            if failure.check(Unavailable):  # the Bus resyncs the followers when it is back
                self.log.info("IRC {what}: the database is unavailable", what=what)
                return
            self.log.failure("IRC {what} failed", failure, what=what)
            self.send("NOTICE", self.nick or "*", f"The server failed at {what}; rejoin")

        Deferred.fromCoroutine(work).addErrback(failed)

    # Lines out

    def sendLine(self, line: str) -> None:
        if not self._live:
            return
        data = line.encode("utf-8") + b"\r\n"
        if self._sendq.full:
            self._sendq.stuck += len(data)
            if self._sendq.stuck > SENDQ:
                self._live = False
                self._quit_reason = "SendQ exceeded"
                self.socket.abortConnection()
                return
        self.socket.write(data)

    def send(self, command: str, *params: str, source: str | None = "") -> None:
        """
        One line, from C{source} (this server if empty, no prefix if None); its last
        parameter is cut so that the line fits in 512 bytes.
        """
        prefix = f":{source or self.server} " if source is not None else ""
        *middle, last = params
        # A client's words come back in some replies: never let them break the line.
        middle = [_NOT_IN_PARAM.sub("_", param).lstrip(":") or "*" for param in middle]
        last = _LINE_BREAK.sub(" ", last)
        head = prefix + " ".join([command, *middle]) + " :"
        self.sendLine(head + clip(last, MAX_LINE - 2 - len(head.encode("utf-8"))))

    def reply(self, numeric: str, *params: str) -> None:
        self.send(numeric, self.nick or "*", *params)

    def is_on(self, channel: Channel) -> bool:
        return self._live and self._channels.get(channel.room.name) is channel

    def relay(self, channel: Channel, message: Message) -> None:
        """A room message: PRIVMSG from its author, a line at a time; not our own."""
        if message.participant_id is not None and message.participant_id == channel.participant.id:
            return
        command, source = "PRIVMSG", author_mask(message, self.server)
        if message.kind not in ("chat", "social"):
            command, source = "NOTICE", self.server
        head = f":{source} {command} {channel.name} :"
        for line in message.body.replace("\r", "").replace("\0", "").split("\n"):
            if line.strip():
                for piece in split_utf8(line, MAX_LINE - 2 - len(head.encode("utf-8"))):
                    self.sendLine(head + piece)

    def room_changed(self, channel: Channel, room: dict[str, Any]) -> None:
        if room["title"] != channel.title:
            channel.title = room["title"]
            self.send("TOPIC", channel.name, channel.title)
        if room["state"] != channel.state:
            channel.state = room["state"]
            self.send("NOTICE", channel.name, STATE_NOTICES.get(channel.state, channel.state))

    def room_gone(self, channel: Channel) -> None:
        self.send("KICK", channel.name, self.nick or "*", "This room was deleted")
        self._leave(channel)
        self._held = {key: held for key, held in self._held.items() if key[0] != channel.room.id}

    # Registration

    async def irc_CAP(self, params: list[str]) -> None:
        sub = params[0].upper() if params else ""
        if sub in ("LS", "LIST"):
            self._negotiating = not self._registered
            self.send("CAP", self.nick or "*", sub, "")
        elif sub == "REQ":
            self._negotiating = not self._registered
            self.send("CAP", self.nick or "*", "NAK", params[1] if len(params) > 1 else "")
        elif sub == "END":
            self._negotiating = False
            self._welcome()
        else:
            self.reply("410", sub or "*", "Invalid CAP command")

    async def irc_PASS(self, params: list[str]) -> None:
        if self._registered:
            self.reply(ERR_ALREADYREGISTRED, "You may not reregister")

    async def irc_USER(self, params: list[str]) -> None:
        if self._registered:
            self.reply(ERR_ALREADYREGISTRED, "You may not reregister")
        elif len(params) < 4:
            self.reply(ERR_NEEDMOREPARAMS, "USER", "Not enough parameters")
        else:
            self._user = _USER.sub("", params[0])[:10] or "irc"
            self._welcome()

    async def irc_NICK(self, params: list[str]) -> None:
        if not params or not params[0]:
            self.reply(ERR_NONICKNAMEGIVEN, "No nickname given")
            return
        nick = params[0]
        if not _NICK.fullmatch(nick):
            self.reply(ERR_ERRONEUSNICKNAME, clip(nick, 64),
                       f"A nickname is 1 to {MAX_NICKNAME} letters, digits or []\\`_^{{|}}-,"
                       " not starting with a digit or -")
            return
        key = nickname_key(nick)
        holder = self.factory.nicks.get(key)
        if holder is not None and holder is not self:
            self.reply(ERR_NICKNAMEINUSE, nick, "Nickname is already in use")
            return
        if self._channels:
            self.reply(ERR_NONICKCHANGE, nick, "Your nickname in a room is for the room's life:"
                       " leave your channels to change it")
            return
        if self.nick is not None:
            del self.factory.nicks[nickname_key(self.nick)]
            if self._registered:
                self.send("NICK", nick, source=self.mask)
        self.factory.nicks[key] = self
        self.nick = nick
        self._welcome()

    def _welcome(self) -> None:
        if self._registered or self.nick is None or self._user is None or self._negotiating:
            return
        self._registered = True
        self.reply(RPL_WELCOME, f"Welcome to tmd, {self.mask}: a room is the channel"
                   " #<room name>; /join it")
        self.reply(RPL_YOURHOST, f"Your host is {self.server}, running tmd {__version__}")
        self.reply(RPL_CREATED, f"This server was created {self.factory.created}")
        self.reply(RPL_MYINFO, self.server, f"tmd-{__version__}", "i", "nt")
        self.reply(RPL_ISUPPORT, "CASEMAPPING=ascii", "CHANTYPES=#", "CHANMODES=,,,nt",
                   f"CHANNELLEN={CHANNEL_LENGTH}", f"NICKLEN={MAX_NICKNAME}", "PREFIX=",
                   f"TOPICLEN={MAX_TITLE}", "NETWORK=tmd", "are supported by this server")
        self.reply(ERR_NOMOTD, "No MOTD here: /join #<room name> to chat")

    # Channels

    async def irc_JOIN(self, params: list[str]) -> None:
        if not params:
            self.reply(ERR_NEEDMOREPARAMS, "JOIN", "Not enough parameters")
            return
        if params[0] == "0":
            for channel in list(self._channels.values()):
                self._part(channel, "Left all channels")
            return
        keys = params[1].split(",") if len(params) > 1 else []
        for i, name in enumerate(params[0].split(",")):
            if self._live:
                await self._join(name, keys[i] if i < len(keys) and keys[i] else None)

    async def _join(self, name: str, key: str | None) -> None:
        assert self.nick is not None
        shown = clip(name, CHANNEL_LENGTH)
        if not name.startswith("#"):
            self.reply(ERR_NOSUCHCHANNEL, shown, "Channels are #<room name>")
            return
        if name[1:].lower() in self._channels:
            return
        try:
            room = await self.factory.chat.room(name[1:])
        except NotFound:
            self.reply(ERR_NOSUCHCHANNEL, shown, "No such channel: there is no room by that name")
            return
        state = room.state_at(self.factory.chat.now_ms())
        if state == "closed":
            self.reply(ERR_NOSUCHCHANNEL, shown, "No such channel: this room is closed")
            return
        held = self._held.get((room.id, nickname_key(self.nick)))
        if held is None:
            try:
                held = await self.factory.chat.join(
                    room, {"nickname": self.nick, "password": key}, self._address)
            except NameTaken:
                self.reply(ERR_NICKNAMEINUSE, self.nick, f"Nickname is already in use in {shown}:"
                           " nicknames are held in a room for its life; change nick to join")
                return
            except Unauthorized:
                self.reply(ERR_BADCHANNELKEY, shown, "Cannot join channel (+k): give the room's"
                           " password as the channel key")
                return
            except RateLimited as e:
                self.reply(ERR_UNAVAILRESOURCE, shown, e.message)
                return
            except ApiError as e:
                self.reply(ERR_NOSUCHCHANNEL, shown, e.message)
                return
            self._held[(room.id, nickname_key(self.nick))] = held
        if self._live and room.name not in self._channels:
            self._enter(Channel(self, room, held[0], state, self.factory.chat))

    def _enter(self, channel: Channel) -> None:
        self._channels[channel.room.name] = channel
        members = self.factory.members.setdefault(channel.room.id, {})
        members[self] = None
        self.factory.hub.subscribe(channel.room.id, channel.follower)
        for member in members:
            member.send("JOIN", channel.name, source=self.mask)
        self.reply(RPL_TOPIC, channel.name, channel.title)
        self._names(channel)
        if channel.state != "open":
            self.send("NOTICE", channel.name, STATE_NOTICES[channel.state])
        self.run(channel.follower.catch_up(), f"following {channel.name}")

    def _leave(self, channel: Channel) -> list[IrcProtocol]:
        """Stop following C{channel}; returns the other IRC users still in it."""
        del self._channels[channel.room.name]
        self.factory.hub.unsubscribe(channel.room.id, channel.follower)
        members = self.factory.members.get(channel.room.id, {})
        members.pop(self, None)
        if not members:
            self.factory.members.pop(channel.room.id, None)
        return list(members)

    def _part(self, channel: Channel, reason: str) -> None:
        for member in [self, *self._leave(channel)]:
            member.send("PART", channel.name, reason, source=self.mask)

    def _channel(self, name: str) -> Channel | None:
        return self._channels.get(name[1:].lower()) if name.startswith("#") else None

    async def irc_PART(self, params: list[str]) -> None:
        if not params:
            self.reply(ERR_NEEDMOREPARAMS, "PART", "Not enough parameters")
            return
        for name in params[0].split(","):
            channel = self._channel(name)
            if channel is None:
                self.reply(ERR_NOTONCHANNEL, clip(name, CHANNEL_LENGTH),
                           "You're not on that channel")
            else:
                self._part(channel, params[1] if len(params) > 1 else "Leaving")

    async def irc_PRIVMSG(self, params: list[str]) -> None:
        if not params:
            self.reply(ERR_NORECIPIENT, "No recipient given (PRIVMSG)")
            return
        if len(params) < 2 or not params[1].strip():
            self.reply(ERR_NOTEXTTOSEND, "No text to send")
            return
        text = params[1]
        if text.startswith("\x01"):  # CTCP: an ACTION (/me) is posted, queries are not answered
            ctcp = text.strip("\x01")
            if not ctcp.upper().startswith("ACTION "):
                return
            text = "* " + ctcp[7:]
        body = stripFormatting(text)
        for target in params[0].split(","):
            channel = self._channel(target)
            if channel is not None:
                await self._post(channel, body)
            elif target.startswith("#"):
                self.reply(ERR_CANNOTSENDTOCHAN, clip(target, CHANNEL_LENGTH),
                           "Cannot send to channel: JOIN it first")
            else:
                self.reply(ERR_NOSUCHNICK, clip(target, 64),
                           "No such nick: there are no private messages here, talk in a channel")

    async def _post(self, channel: Channel, body: str) -> None:
        assert self.nick is not None
        _, token = self._held[(channel.room.id, nickname_key(self.nick))]
        try:
            await self.factory.chat.post(channel.room.name, token, {"body": body}, self._address)
        except Unavailable:
            raise
        except ApiError as e:
            self.reply(ERR_CANNOTSENDTOCHAN, channel.name, f"Cannot send to channel: {e.message}")

    async def irc_TOPIC(self, params: list[str]) -> None:
        if not params:
            self.reply(ERR_NEEDMOREPARAMS, "TOPIC", "Not enough parameters")
            return
        channel = self._channel(params[0])
        if channel is None:
            self.reply(ERR_NOTONCHANNEL, clip(params[0], CHANNEL_LENGTH),
                       "You're not on that channel")
        elif len(params) > 1:
            self.reply(ERR_CHANOPRIVSNEEDED, channel.name,
                       "Only the room's owner changes its title, on the web")
        else:
            self.reply(RPL_TOPIC, channel.name, channel.title)

    async def irc_NAMES(self, params: list[str]) -> None:
        for name in (params[0].split(",") if params else []):
            channel = self._channel(name)
            if channel is not None:
                self._names(channel)
            else:
                self.reply(RPL_ENDOFNAMES, clip(name, CHANNEL_LENGTH), "End of /NAMES list")
        if not params:
            self.reply(RPL_ENDOFNAMES, "*", "End of /NAMES list")

    def _names(self, channel: Channel) -> None:
        """353 lines of the IRC users in C{channel}, each within 512 bytes, then 366."""
        head = f":{self.server} {RPL_NAMREPLY} {self.nick} = {channel.name} :"
        names: list[str] = []
        for member in self.factory.members.get(channel.room.id, {}):
            if len(head) + len(" ".join([*names, str(member.nick)])) > MAX_LINE - 2:
                self.sendLine(head + " ".join(names))
                names = []
            names.append(str(member.nick))
        if names:
            self.sendLine(head + " ".join(names))
        self.reply(RPL_ENDOFNAMES, channel.name, "End of /NAMES list")

    async def irc_WHO(self, params: list[str]) -> None:
        channel = self._channel(params[0]) if params else None
        if channel is not None:
            for member in self.factory.members.get(channel.room.id, {}):
                self.reply(RPL_WHOREPLY, channel.name, member._user or "irc", self.server,
                           self.server, str(member.nick), "H", "0 IRC gateway user")
        self.reply(RPL_ENDOFWHO, params[0] if params else "*", "End of /WHO list")

    async def irc_MODE(self, params: list[str]) -> None:
        if not params:
            self.reply(ERR_NEEDMOREPARAMS, "MODE", "Not enough parameters")
        elif params[0].startswith("#"):
            channel = self._channel(params[0])
            if channel is None:
                self.reply(ERR_NOTONCHANNEL, clip(params[0], CHANNEL_LENGTH),
                           "You're not on that channel")
            elif len(params) == 1:
                self.reply(RPL_CHANNELMODEIS, channel.name, "+nt")
            elif params[1].lstrip("+") == "b":
                self.reply(RPL_ENDOFBANLIST, channel.name, "End of channel ban list")
            else:
                self.reply(ERR_CHANOPRIVSNEEDED, channel.name,
                           "The room's owner moderates it, on the web")
        elif nickname_key(params[0]) != nickname_key(str(self.nick)):
            self.reply(ERR_USERSDONTMATCH, "Cannot change mode for other users")
        else:
            self.reply(RPL_UMODEIS, "+")

    async def irc_PING(self, params: list[str]) -> None:
        if not params:
            self.reply(ERR_NOORIGIN, "No origin specified")
        else:
            self.send("PONG", self.server, params[0])

    async def irc_PONG(self, params: list[str]) -> None:
        """Nothing to do: any line shows the client is there."""

    async def irc_MOTD(self, params: list[str]) -> None:
        self.reply(ERR_NOMOTD, "No MOTD here: /join #<room name> to chat")

    async def irc_QUIT(self, params: list[str]) -> None:
        self.close(f"Quit: {params[0]}" if params else "Quit")


class IrcFactory(ServerFactory):
    """The gateway's shared state: who holds which nickname, who is on which channel."""

    protocol = IrcProtocol  # type: ignore[assignment]
    noisy = False

    def __init__(self, chat: Chat, hub: Hub, clock: IReactorTime, server_name: str) -> None:
        self.chat = chat
        self.hub = hub
        self.clock = clock
        self.server_name = server_name
        self.created = "at start"
        """When the gateway started listening, for 003."""
        self.nicks: dict[str, IrcProtocol] = {}
        """The connections by nickname (L{nickname_key}): one nickname per connection."""
        self.members: dict[int, dict[IrcProtocol, None]] = {}
        """The connections on each room's channel, by room id, in joining order."""
        self.connections: set[IrcProtocol] = set()


class IrcService(Listener):
    """Listens for IRC clients; at stop, refuses new ones and closes the others with ERROR."""

    def __init__(self, endpoint: IStreamServerEndpoint, factory: IrcFactory,
                 context: IPluginContext) -> None:
        super().__init__(endpoint, factory, "IRC gateway listening")
        self.factory = factory
        self._context = context

    async def _listen(self) -> None:
        await super()._listen()
        self.factory.created = timestamp(int(self.factory.clock.seconds() * 1000))
        self._context.set_status("running", f"listening on {self.where}")

    async def _stop(self) -> None:
        await super()._stop()
        for connection in list(self.factory.connections):
            connection.close("The server is shutting down")


class IrcOptions(usage.Options):
    optParameters = [
        ["listen", None, "tcp:6667",
         "Where to listen for IRC clients: a Twisted server endpoint string such as tcp:6667,"
         " tcp:6667:interface=127.0.0.1 or ssl:6697:privateKey=key.pem:certKey=cert.pem"],
        ["server-name", None, None,
         "The server's name in IRC lines [default: the host of public_url, else tmd]"],
    ]

    def postOptions(self) -> None:
        name = self["server-name"]
        if name is not None and not _SERVER_NAME.fullmatch(name):
            raise usage.UsageError(
                f"server-name {name!r}: a host name, letters, digits, dots and dashes.")


@implementer(IPlugin, ITmdPlugin)
class IrcPlugin:
    name = "irc"
    description = "An IRC gateway: each room is the channel #<room name>."
    options = IrcOptions

    def makeService(self, context: IPluginContext, options: object) -> IService:
        settings = cast("Mapping[str, Any]", options)  # an IrcOptions, parsed
        try:
            endpoint = serverFromString(context.reactor, settings["listen"])
        except (ValueError, OSError) as e:
            raise usage.UsageError(
                f"[irc] listen {settings['listen']!r} is not an endpoint to listen on: {e}."
                " Examples: tcp:6667, tcp:6667:interface=127.0.0.1") from None
        public_host = urlparse(context.config.public_url or "").hostname
        server_name = settings["server-name"] or public_host or "tmd"
        service = IrcService(endpoint, IrcFactory(
            context.chat, context.hub, context.reactor, server_name), context)
        service.setName("irc")
        return service


irc = IrcPlugin()
