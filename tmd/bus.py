"""
The Bus: how a room's events reach the subscribers of every daemon.

With SQLite there is one daemon, and L{LocalBus} hands events straight to the Hub.
With PostgreSQL, L{PostgresBus} LISTENs on the database's channel: a post's
NOTIFY comes from the post's own statement (see L{tmd.store.postgres}), so other
daemons hear of a message only once it is committed. Each daemon publishes its
own posts at once and ignores its own notices.

Notices are small JSON objects: C{o} (the origin daemon), C{k} (the kind) and
what the kind needs. A message notice carries the whole message when it fits in
PostgreSQL's 8000-byte payload, otherwise just its seq, and the row is fetched.
Presence travels as each daemon's own counts per room; every daemon adds them up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from tmd.errors import NotFound, Unavailable
from tmd.hub import Hub
from tmd.model import Event, Held, Message, NewMessage, Room
from tmd.wire import (
    deleted_frame,
    error_frame,
    held_events,
    message_frame,
    released_event,
    room_frame,
    updated_event,
)

if TYPE_CHECKING:
    from txpostgres.txpostgres import Connection

    from tmd.store.postgres import PostgresStore

NOTIFY_LIMIT = 7999
"""PostgreSQL's largest NOTIFY payload, in bytes."""

HOLD = 0.5
"""Seconds a message that came before its predecessor waits for it before going out anyway."""

PRESENCE_REFRESH = 20.0
"""Seconds between each daemon's reminders of its presence counts."""

PRESENCE_EXPIRY = 3 * PRESENCE_REFRESH
"""Seconds after which the counts of a daemon that went silent are dropped."""


class Bus(Protocol):
    def publish(self, event: Event) -> None: ...

    def start(self) -> Any: ...

    def stop(self) -> Any: ...


class LocalBus:
    """One daemon alone: every event goes to the local Hub at once."""

    def __init__(self, hub: Hub) -> None:
        self.publish = hub.publish

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def _dump(notice: dict[str, Any]) -> str:
    return json.dumps(notice, ensure_ascii=False, separators=(",", ":"))


def message_notice(origin: str, room: Room, new: NewMessage) -> tuple[str, str]:
    """
    The notice of C{new}, split around its seq, which the database fills in:
    the post's statement sends C{head || seq || tail}.
    """
    head = _dump({"o": origin, "k": "m", "r": room.id, "n": room.name})[:-1] + ',"s":'
    fields = {
        "kind": new.kind, "author": new.author, "body": new.body,
        "created_at": new.created_at, "source": new.source,
        "participant_id": new.participant_id,
    }
    fields.update({flag: True for flag in ("question", "host", "edited") if getattr(new, flag)})
    tail = ',"m":' + _dump(fields) + "}"
    if len(head.encode()) + 20 + len(tail.encode()) > NOTIFY_LIMIT:
        tail = "}"  # too big to carry: receivers fetch the row by its seq
    return head, tail


def held_notice(origin: str, held: Held) -> str:
    """The notice of a post put in the approval queue, whole (its body is short enough)."""
    return _dump({"o": origin, "k": "h", "r": held.room_id, "n": held.room, "h": {
        "id": held.id, "participant_id": held.participant_id, "author": held.author,
        "body": held.body, "question": held.question, "created_at": held.created_at,
        "reason": held.reason, "matched": list(held.matched)}})


def released_notice(origin: str, room: Room, held_id: str, participant_id: str) -> str:
    """The head of the notice of an approval: the statement appends the seq and a C{}}."""
    return _dump({"o": origin, "k": "a", "r": room.id, "n": room.name, "h": held_id,
                  "p": participant_id})[:-1] + ',"s":'


def room_gone(room_id: int) -> Event:
    """The event of a room's deletion: a last error frame, then its sockets close."""
    return Event(room_id=room_id, frame=error_frame(NotFound("This room was deleted."), None),
                 gone=True)


def room_notice(origin: str, kind: str, room: Room, **more: Any) -> str:
    """The notice of a change to C{room}: C{r} (settings), C{d} (a message deleted), C{x} (gone)."""
    return _dump({"o": origin, "k": kind, "r": room.id, "n": room.name, **more})


class Orderer:
    """
    Gives the Hub each room's messages in seq order, at most once.

    Daemons commit a room's posts in seq order, but their messages arrive here by
    different paths (our own posts at once, others' through NOTIFY). One that comes
    before its predecessor waits up to L{HOLD} seconds for it; if it is still
    missing, the rest go out and subscribers fetch the gap from the store.
    """

    def __init__(self, hub: Hub, clock: IReactorTime) -> None:
        self._hub = hub
        self._clock = clock
        self._last: dict[int, int] = {}
        self._held: dict[int, dict[int, Event]] = {}
        self._timers: dict[int, IDelayedCall] = {}

    def publish(self, event: Event) -> None:
        seq, room = event.seq, event.room_id
        if seq is None:
            self._hub.publish(event)
            return
        if not self._hub.local_online(room):
            self._forget(room)
            return
        last = self._last.get(room)
        if last is not None and seq <= last:
            return
        if last is None or seq == last + 1:
            self._release(event)
            self._flush(room)
        else:
            self._held.setdefault(room, {})[seq] = event
            if room not in self._timers:
                self._timers[room] = self._clock.callLater(HOLD, self._give_up, room)

    def sync(self, room: int, last_seq: int) -> None:
        """The room's last seq, read after notices were lost: subscribers behind catch up."""
        self._give_up(room)
        self._last[room] = max(self._last.get(room, 0), last_seq)
        self._hub.publish(Event(room_id=room, frame=b"", last_seq=last_seq))

    def _release(self, event: Event) -> None:
        assert event.seq is not None
        self._last[event.room_id] = event.seq
        self._hub.publish(event)

    def _flush(self, room: int) -> None:
        held = self._held.get(room)
        while held and self._last[room] + 1 in held:
            self._release(held.pop(self._last[room] + 1))
        if not held:
            self._held.pop(room, None)
            self._cancel_timer(room)

    def _give_up(self, room: int) -> None:
        self._cancel_timer(room)
        held = self._held.pop(room, {})
        for seq in sorted(held):
            self._release(held[seq])

    def _forget(self, room: int) -> None:
        self._last.pop(room, None)
        self._held.pop(room, None)
        self._cancel_timer(room)

    def _cancel_timer(self, room: int) -> None:
        timer = self._timers.pop(room, None)
        if timer is not None and timer.active():
            timer.cancel()

    def stop(self) -> None:
        for room in list(self._timers):
            self._forget(room)


class PostgresBus:
    """Fan-out between the daemons that share one PostgreSQL database."""

    log = Logger()

    def __init__(self, store: PostgresStore, hub: Hub, clock: IReactorTime) -> None:
        self._store = store
        self._hub = hub
        self._clock = clock
        self._origin = store.origin
        self._order = Orderer(hub, clock)
        self._link = store.link(self._listen)
        self._listened = False
        self._refresh = LoopingCall(self._send_presence)
        self._refresh.clock = clock
        self._refresh_soon: IDelayedCall | None = None
        self._room_kinds: dict[str, Callable[[dict[str, Any]], object]] = {
            "m": self._message, "r": self._room_changed, "d": self._deleted, "x": self._gone,
            "u": self._updated, "h": self._held, "a": self._released,
        }
        self._kinds: dict[str, Callable[[dict[str, Any]], object]] = {
            "p": self._presence, "hello": self._hello, "bye": self._bye,
        }
        self._turns: dict[int, Deferred[None]] = {}
        hub.on_local_presence = self._local_presence

    def publish(self, event: Event) -> None:
        self._order.publish(event)

    @property
    def listening(self) -> bool:
        """Whether the connection that LISTENs is up."""
        return self._link.up

    async def start(self) -> None:
        await self._link.start()
        self._refresh.start(PRESENCE_REFRESH, now=False)

    async def stop(self) -> None:
        if self._refresh.running:
            self._refresh.stop()
        if self._refresh_soon is not None and self._refresh_soon.active():
            self._refresh_soon.cancel()
        self._order.stop()
        try:
            await self._send({"k": "bye"})
        except Unavailable:
            pass
        self._link.stop()

    async def _listen(self, connection: Connection) -> None:
        """On each new connection: LISTEN, say hello, and catch up on what was missed."""
        connection.addNotifyObserver(self._notified)
        channel = self._store.channel.replace('"', '""')
        await connection.runOperation(f'LISTEN "{channel}"')
        await connection.runQuery("SELECT pg_notify(%s, %s)", (
            self._store.channel, _dump({"o": self._origin, "k": "hello"})))
        if self._listened:  # notices were lost while we were away
            await self._resync(connection)
            self._clock.callLater(0, self._send_presence)  # others may have expired us
        self._listened = True

    async def _resync(self, connection: Connection) -> None:
        """
        Tell subscribers their rooms' last seqs, read after LISTEN: what came earlier is
        below them, what comes later will be notified.
        """
        rooms = self._hub.rooms()
        if rooms:
            rows = await connection.runQuery(
                "SELECT id, last_seq FROM rooms WHERE id = ANY(%s)", (rooms,))
            for room, last_seq in rows:
                self._order.sync(room, last_seq)

    def _notified(self, notify: Any) -> None:
        try:
            notice = json.loads(notify.payload)
            if notice["o"] == self._origin:
                return
            kind = notice["k"]
            room = notice.get("r")
        except (ValueError, KeyError, TypeError, AttributeError):
            self.log.warn("ignoring a malformed notice on {channel}", channel=notify.channel)
            return
        if kind in self._room_kinds:
            if self._hub.local_online(room):
                self._in_turn(room, lambda: self._room_kinds[kind](notice))
        elif kind in self._kinds:
            try:
                self._kinds[kind](notice)
            except Exception:
                self.log.failure("handling a {kind!r} notice failed", kind=kind)
        # Any other kind is a newer daemon's: ignored.

    def _in_turn(self, room: int, handle: Callable[[], object]) -> None:
        """
        Handle a room's notices one after another, in the order they came, even when
        one has to read the database first: a deletion never overtakes a change.
        """
        done: Deferred[None] = Deferred()
        previous = self._turns.get(room)
        self._turns[room] = done

        def run(_: object = None) -> None:
            handled = maybeDeferred(handle)
            handled.addErrback(self._failed, "handling a notice")

            def finished(_: object) -> None:
                if self._turns.get(room) is done:
                    del self._turns[room]
                done.callback(None)

            handled.addCallback(finished)

        if previous is None:
            run()
        else:
            previous.addCallback(run)

    def _message(self, notice: dict[str, Any]) -> Deferred[None] | None:
        room, seq = notice["r"], notice["s"]
        if "m" not in notice:  # too big for a notice: read it
            return self._store.message(room, seq).addCallback(self._publish_message, room)
        self._publish_message(Message(seq=seq, room=notice["n"], **notice["m"]), room)
        return None

    def _publish_message(self, message: Message | None, room: int) -> None:
        if message is not None:
            self._order.publish(Event(room_id=room, frame=message_frame(message),
                                      message=message))

    def _room_changed(self, notice: dict[str, Any]) -> Deferred[None]:
        """Settings changed elsewhere: read them, and tell our subscribers (with our count)."""
        room_id = notice["r"]

        def read(room: Room | None) -> None:
            if room is not None and room.id == room_id:
                now_ms = int(self._clock.seconds() * 1000)
                self._order.publish(Event(room_id=room_id, frame=room_frame(
                    room, self._hub.online(room_id), now_ms)))

        return self._store.room(notice["n"]).addCallback(read)

    def _deleted(self, notice: dict[str, Any]) -> None:
        self._order.publish(Event(room_id=notice["r"], frame=deleted_frame(int(notice["seq"]))))

    def _updated(self, notice: dict[str, Any]) -> Deferred[None]:
        """A message changed elsewhere (votes, answered): read it as it is now."""
        room_id = notice["r"]

        def read(message: Message | None) -> None:
            if message is not None:
                self._order.publish(updated_event(room_id, message))

        return self._store.message(room_id, int(notice["s"])).addCallback(read)

    def _held(self, notice: dict[str, Any]) -> None:
        fields = notice["h"]
        held = Held(room_id=notice["r"], room=notice["n"], **{
            **fields, "matched": tuple(fields["matched"])})
        for event in held_events(held):
            self._order.publish(event)

    def _released(self, notice: dict[str, Any]) -> None:
        seq = notice["s"]
        self._order.publish(released_event(notice["r"], notice["h"], notice["p"],
                                           int(seq) if seq is not None else None))

    def _gone(self, notice: dict[str, Any]) -> None:
        self._order.publish(room_gone(notice["r"]))

    def _presence(self, notice: dict[str, Any]) -> None:
        counts = {int(room): int(count) for room, count in notice["c"].items()}
        self._hub.remote_presence(notice["o"], counts, complete=bool(notice.get("all")))

    def _hello(self, notice: dict[str, Any]) -> None:
        """A daemon (re)joined: tell it our counts, soon and once for a burst of hellos."""
        if self._refresh_soon is None or not self._refresh_soon.active():
            self._refresh_soon = self._clock.callLater(0, self._send_presence)

    def _bye(self, notice: dict[str, Any]) -> None:
        self._hub.forget(notice["o"])

    def _local_presence(self, room: int, count: int) -> None:
        self._sending({"k": "p", "c": {str(room): count}})

    def _send_presence(self) -> None:
        """All our counts (a reminder that we are alive), in notices that fit; drop the silent."""
        self._hub.expire(PRESENCE_EXPIRY)
        notice: dict[str, Any] = {"k": "p", "c": {}, "all": True}
        for room in self._hub.rooms():
            notice["c"][str(room)] = self._hub.local_online(room)
            if len(notice["c"]) == 400:  # about 6 KB
                self._sending(notice)
                notice = {"k": "p", "c": {}}
        if notice["c"] or notice.get("all"):
            self._sending(notice)

    def _sending(self, notice: dict[str, Any]) -> None:
        Deferred.fromCoroutine(self._send(notice)).addErrback(self._failed, "sending a notice")

    async def _send(self, notice: dict[str, Any]) -> None:
        payload = _dump({"o": self._origin, **notice})
        await self._link.run(lambda c: c.runQuery(
            "SELECT pg_notify(%s, %s)", (self._store.channel, payload)))

    def _failed(self, failure: Failure, what: str) -> None:
        if failure.check(Unavailable):
            self.log.debug("{what}: the database is unavailable", what=what)
        else:
            self.log.failure("{what} failed", failure, what=what)
