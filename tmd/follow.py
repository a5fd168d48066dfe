"""
Following a room for one live client: every message once, in seq order.

A L{Follower} is the Hub subscriber of one client (a websocket, an event stream, an
IRC channel). It keeps the highest seq sent and catches up from the store whenever it
is behind (at the start, on a gap, or when the Bus says the room moved on while it was
away), so the client sees every message of the room once, in order, whatever order
the events arrive in.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from twisted.internet.defer import Deferred

from tmd.chat import Chat
from tmd.model import Event, Message, Room

PAGE = 1000
"""Messages read from the store at a time when catching up."""


class Client(Protocol):
    """What a Follower sends to."""

    def can_send(self) -> bool:
        """False once the client is closing: nothing more is sent."""

    def send_message(self, message: Message) -> None:
        """A message read from the store (catching up)."""

    def send_event(self, event: Event) -> None:
        """A live event, in order: a message, or a room, deleted or gone frame."""

    def run(self, work: Coroutine[Any, Any, None], what: str) -> None:
        """Run C{work} (a catch-up) and deal with its failure."""


def _always_ready() -> None:
    return None


class Follower:
    def __init__(self, chat: Chat, room: Room, since: int, client: Client,
                 ready: Callable[[], Deferred[None] | None] = _always_ready) -> None:
        self._chat = chat
        self._room = room
        self._client = client
        self._ready = ready
        """None if the client takes more now, else a Deferred firing once it does."""
        self.last_seq = since
        """The highest seq sent."""
        self._catching_up = True
        self._pending: list[Event] = []

    async def catch_up(self) -> None:
        """Send from the store what came after the last seq sent, then what waited."""
        self._catching_up = True
        try:
            while self._client.can_send():
                messages, last_seq = await self._chat.messages(self._room, self.last_seq, PAGE)
                for message in messages:
                    waiting = self._ready()
                    if waiting is not None:  # its buffer is full: go at the client's pace
                        await waiting
                    if self._client.can_send():
                        self._client.send_message(message)
                        self.last_seq = message.seq
                if len(messages) < PAGE:
                    self.last_seq = max(self.last_seq, last_seq)
                    break
        finally:
            self._catching_up = False  # on failure too: the next event or resync tries again
        pending, self._pending = self._pending, []
        for event in pending:
            self.deliver(event)

    def deliver(self, event: Event) -> None:
        """A Hub event: send it in order, at most once, or catch up first."""
        if event.last_seq is not None:
            if not self._catching_up and event.last_seq > self.last_seq:
                self._client.run(self.catch_up(), "catching up")
            return
        if event.gone:
            if self._client.can_send():
                self._client.send_event(event)
            return
        if self._catching_up:
            self._pending.append(event)
            return
        if not self._client.can_send():
            return
        seq = event.seq
        if seq is not None:
            if seq <= self.last_seq:
                return
            if seq > self.last_seq + 1:
                self._pending.append(event)
                self._client.run(self.catch_up(), "catching up")
                return
            self.last_seq = seq
        self._client.send_event(event)
