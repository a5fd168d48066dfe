"""
A long-lived HTTP stream kept open, shared by the social sources (Twitter/X, Mastodon).

The X API's guidance, which suits Mastodon too: declare a stall after a silence
(keep-alives count as data) and reconnect; back off linearly after network errors,
exponentially after HTTP errors, longer after a 429 (until the rate limit resets);
stop for good on 401/403, since only the operator can fix credentials. The delays
are pure functions of the attempt. Bodies are parsed as they arrive, line by line
(newline-delimited JSON) or event by event (server-sent events), never buffered
whole. What the stream is doing is reported through a status callback, which the
sources hand to C{IPluginContext.set_status} for C{/healthz}.
"""

from __future__ import annotations

import email.utils
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterator
from datetime import datetime
from typing import Any, Protocol

from attrs import frozen
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol as BodyProtocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

STALL_AFTER = 30.0
"""Seconds of silence after which a stream is declared stalled (X sends a keep-alive every 20 s)."""
MAX_LINE = 1 << 20
"""The longest line (or server-sent event) taken, in bytes: a longer one is a broken stream."""
MAX_ERROR_BODY = 2000
"""How much of an error response's body is kept for the log."""


def network_delay(attempt: int) -> float:
    """Seconds to wait after the C{attempt}th network error in a row: 0.25 s steps up to 16 s."""
    return min(0.25 * attempt, 16.0)


def http_delay(attempt: int) -> float:
    """Seconds to wait after the C{attempt}th HTTP error in a row: 5 s doubling up to 320 s."""
    return min(5.0 * 2 ** min(attempt - 1, 16), 320.0)


def rate_limit_delay(attempt: int, reset_in: float | None = None) -> float:
    """
    Seconds to wait after the C{attempt}th 429 in a row: until the limit resets if the
    server said when, else 60 s doubling up to 15 minutes.
    """
    if reset_in is not None and 0 < reset_in <= 3600:
        return float(reset_in)
    return min(60.0 * 2 ** min(attempt - 1, 16), 900.0)


def reset_in(headers: Headers, now: float) -> float | None:
    """
    Seconds until a rate limit resets, from X's C{x-rate-limit-reset} (epoch seconds),
    Mastodon's C{X-RateLimit-Reset} (an ISO 8601 time) or C{Retry-After}; None if unsaid.
    """
    for name in (b"x-rate-limit-reset", b"x-ratelimit-reset", b"retry-after"):
        value = (headers.getRawHeaders(name) or [b""])[0].decode("ascii", "replace").strip()
        if not value:
            continue
        try:
            number = float(value)
        except ValueError:
            at = _time(value)
            if at is not None:
                return max(at - now, 0.0)
            continue
        return max(number, 0.0) if name == b"retry-after" else max(number - now, 0.0)
    return None


def _time(value: str) -> float | None:
    """An ISO 8601 or HTTP date as epoch seconds, or None."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


class BrokenStream(Exception):
    """The stream sent something no parser can take (a line too long, say)."""


class Lines:
    """Newline-delimited records, split as bytes arrive; blank lines (keep-alives) dropped."""

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> Iterator[bytes]:
        *complete, self._partial = (self._partial + data).split(b"\n")
        if len(self._partial) > MAX_LINE:
            raise BrokenStream(f"a line longer than {MAX_LINE} bytes")
        for line in complete:
            line = line.strip(b"\r")
            if line.strip():
                yield line


@frozen
class ServerSentEvent:
    event: str
    data: str
    id: str | None = None


class ServerSentEvents:
    """
    The server-sent events format (HTML's C{text/event-stream}), parsed as bytes arrive:
    C{event:}, C{data:} (lines joined by newlines) and C{id:} fields, dispatched at a
    blank line; comments (C{:thump}) and unknown fields ignored.
    """

    def __init__(self) -> None:
        self._lines = b""
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._size = 0

    def feed(self, data: bytes) -> Iterator[ServerSentEvent]:
        *complete, self._lines = (self._lines + data).replace(b"\r\n", b"\n").split(b"\n")
        if len(self._lines) > MAX_LINE:
            raise BrokenStream(f"a line longer than {MAX_LINE} bytes")
        for raw in complete:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                if self._data:
                    yield ServerSentEvent(self._event or "message", "\n".join(self._data),
                                          self._id)
                self._event, self._data, self._size = "", [], 0
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                self._event = value
            elif field == "data":
                self._size += len(value)
                if self._size > MAX_LINE:
                    raise BrokenStream(f"an event longer than {MAX_LINE} bytes")
                self._data.append(value)
            elif field == "id":
                self._id = value


class Reader(Protocol):
    """What a stream's body goes to: one per connection, made by the source."""

    def data(self, chunk: bytes) -> None:
        """Some bytes of the body, as they arrived; raise to drop the connection."""

    def end(self) -> None:
        """The body ended cleanly (for a poll: the whole answer is in)."""


class Unrecoverable(Exception):
    """The server refused the credentials (401/403): retrying cannot help."""


Status = Callable[[str, "str | None"], None]


_DONE = Failure(ResponseDone())


class _Body(BodyProtocol):
    """Hands a response body's bytes on as they arrive; C{done} fails with why it ended."""

    def __init__(self, received: Callable[[bytes], None]) -> None:
        self.received = received
        self.done: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if not self.done.called:
            self.received(data)

    def connectionLost(self, reason: Failure = _DONE) -> None:
        if not self.done.called:
            self.done.errback(reason)

    def drop(self, why: Exception) -> None:
        """Stop reading: the connection is closed and C{done} fires with C{why}."""
        if self.transport is not None:
            self.transport.stopProducing()  # type: ignore[attr-defined]
        if not self.done.called:
            self.done.errback(why)


class Stream:
    """
    Keeps one HTTP stream open: C{connect()} makes the request, each connection's body
    goes to a new C{reader()}. With C{pause}, it polls instead: a body that ends is a
    complete answer, and the next request follows C{pause} seconds later.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, name: str,
                 connect: Callable[[], Deferred[IResponse]], reader: Callable[[], Reader],
                 status: Status, *, pause: float | None = None,
                 stall_after: float = STALL_AFTER) -> None:
        self._clock = clock
        self.name = name
        self._connect = connect
        self._reader = reader
        self._status = status
        self._pause = pause
        self._stall_after = stall_after
        self._running = False
        self._waiting: Deferred[Any] | None = None
        self._body: _Body | None = None
        self._stall: IDelayedCall | None = None
        self._done: Deferred[None] | None = None
        self.connections = 0
        """How many times it has connected (a 200 answer)."""
        self.reconnects = 0
        """How many times it has tried again, after an error or a dropped stream."""

    def start(self) -> None:
        self._running = True
        self._done = Deferred.fromCoroutine(self._run())
        self._done.addErrback(lambda f: self.log.failure("stream {name} failed", f, name=self.name))

    def stop(self) -> Deferred[None]:
        """Close the stream and stop trying; fires once all is quiet."""
        self._running = False
        if self._waiting is not None:
            self._waiting.cancel()
        if self._body is not None:
            self._body.drop(CancelledError())
        done, self._done = self._done, None
        return done if done is not None else succeed(None)

    def drop(self, why: str) -> None:
        """Close this connection (the server said to reconnect, say); a new one follows."""
        if self._body is not None:
            self._body.drop(ConnectionError(why))

    async def _run(self) -> None:
        failures = {"network": 0, "http": 0, "rate": 0}
        trouble: str | None = "starting"
        while self._running:
            if trouble is not None:
                self._status("connecting", None)
            try:
                wait, trouble = await self._once(failures)
            except Unrecoverable as e:
                self.log.error("stream {name} stopped: {why}", name=self.name, why=str(e))
                self._status("stopped", str(e))
                return
            if not self._running:
                return
            if trouble is not None:
                self.reconnects += 1
                self._status("backing off", f"{trouble}, retry in {wait:g} s")
                self.log.warn("stream {name}: {why}; retrying in {wait} s", name=self.name,
                              why=trouble, wait=wait)
            try:
                await self._wait(deferLater(self._clock, wait))
            except CancelledError:
                return

    async def _once(self, failures: dict[str, int]) -> tuple[float, str | None]:
        """One request and its body: how long to wait before the next, and what went wrong."""
        try:
            response = await self._wait(
                self._connect().addTimeout(self._stall_after, self._clock))
        except Exception as e:
            failures["network"] += 1
            return network_delay(failures["network"]), f"cannot connect ({_why(e)})"
        if response.code != 200:
            return await self._refused(response, failures)
        self.connections += 1
        reader = self._reader()
        self._status(*self._connected_status())
        ended = await self._read(response, lambda chunk: self._received(reader, chunk, failures))
        if isinstance(ended, ResponseDone):
            if self._pause is not None:
                reader.end()
                return self._pause, None
            ended = ConnectionError("the server ended the stream")
        failures["network"] += 1
        return network_delay(failures["network"]), f"stream lost ({_why(ended)})"

    async def _read(self, response: IResponse, received: Callable[[bytes], None]) -> Exception:
        """Hand C{response}'s body to C{received} until it ends or stalls; why it ended."""
        body = self._body = _Body(received)
        self._stall = self._clock.callLater(
            self._stall_after, body.drop, TimeoutError(f"no data for {self._stall_after:g} s"))
        response.deliverBody(body)
        try:
            await body.done
        except Exception as e:
            ended = e
        self._body = None
        if self._stall.active():
            self._stall.cancel()
        return ended

    def _connected_status(self) -> tuple[str, str | None]:
        if self._pause is not None:
            return "polling", f"every {self._pause:g} s"
        return "connected", None

    def _received(self, reader: Reader, chunk: bytes, failures: dict[str, int]) -> None:
        assert self._stall is not None and self._body is not None
        self._stall.reset(self._stall_after)
        for kind in failures:  # data flows: the next trouble starts the back-off over
            failures[kind] = 0
        try:
            reader.data(chunk)
        except Exception as e:
            self.log.failure("stream {name}: dropping the connection", name=self.name)
            self._body.drop(e)

    async def _refused(self, response: IResponse,
                       failures: dict[str, int]) -> tuple[float, str | None]:
        kept = bytearray()
        await self._read(response, lambda chunk: kept.extend(chunk[:MAX_ERROR_BODY - len(kept)]))
        said = f"{response.code} {response.phrase.decode('ascii', 'replace')}"
        self.log.warn("stream {name}: {said} {body}", name=self.name, said=said,
                      body=kept.decode("utf-8", "replace"))
        if response.code in (401, 403):
            raise Unrecoverable(f"{said}: the credentials were refused; fix them and restart")
        if response.code == 429:
            failures["rate"] += 1
            when = reset_in(response.headers, self._clock.seconds())
            return rate_limit_delay(failures["rate"], when), "429"
        failures["http"] += 1
        return http_delay(failures["http"]), str(response.code)

    def _wait(self, waiting: Deferred[Any]) -> Deferred[Any]:
        """C{waiting}, cancelled if the stream is stopped meanwhile."""
        self._waiting = waiting

        def done(result: object) -> object:
            self._waiting = None
            return result

        return waiting.addBoth(done)


def _why(error: BaseException) -> str:
    reasons = getattr(error, "reasons", None)  # twisted.web's ResponseFailed and kin
    if reasons:
        error = reasons[0].value
    return f"{error.__class__.__name__}: {error}".rstrip(": ")


class Seen:
    """The last C{size} keys seen, to drop duplicates in bounded memory."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._keys: OrderedDict[object, None] = OrderedDict()

    def add(self, key: object) -> bool:
        """Remember C{key}; False if it was seen already."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True


class RoomCap:
    """
    At most C{limit} posts into each room in any C{window} seconds (0: no cap): every
    ingested post costs the operator money on today's X API, and a flood drowns a room.
    """

    def __init__(self, limit: int, window: float = 3600.0) -> None:
        self._limit = limit
        self._window = window
        self._taken: dict[str, deque[float]] = {}

    def allow(self, room: str, now: float) -> bool:
        """Count one post into C{room} at C{now}, unless the room is at its cap."""
        if not self._limit:
            return True
        taken = self._taken.setdefault(room, deque())
        while taken and taken[0] <= now - self._window:
            taken.popleft()
        if len(taken) >= self._limit:
            return False
        taken.append(now)
        return True

    def keep(self, rooms: Collection[str]) -> None:
        """Forget the rooms not in C{rooms} (closed, say)."""
        for room in set(self._taken) - set(rooms):
            del self._taken[room]
