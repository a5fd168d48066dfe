"""
The Klein application: the JSON API, the live endpoint, health, the OpenAPI
document and the browser page. Routes parse, call the chat core, serialise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Request
from twisted.web.static import File

from tmd import __version__
from tmd.chat import Chat, room_name
from tmd.errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from tmd.limits import NO_PROXIES, TrustedProxies
from tmd.metrics import Metrics
from tmd.model import Held, Restricted
from tmd.relay import Relay
from tmd.store import IStore
from tmd.transcript import stats_csv, transcript_format
from tmd.web.download import Download
from tmd.web.errors import add_error_handling, json_response
from tmd.web.events import EventStreams, query_token, resume_point
from tmd.web.metrics import metrics_page
from tmd.web.openapi import openapi_document
from tmd.web.present import join_url, qr_response
from tmd.web.request import RoutedKlein
from tmd.wire import (
    decode_object,
    encode,
    error_json,
    held_json,
    message_json,
    moderated_participant_json,
    participant_json,
    stats_json,
)
from tmd.words import available_lists

REPLAYED_METHODS = (b"POST", b"PUT", b"PATCH", b"DELETE")
MAX_PAGE = 1000
DEFAULT_PAGE = 100


def optional_json_body(request: IRequest) -> dict[str, Any]:
    """The request's JSON object body, or an empty one if it sent none."""
    if not getattr(request, "too_large", False) and not request.content.read().strip():
        return {}
    request.content.seek(0)
    return json_body(request)


def path_seq(seq: str) -> int:
    """A seq from a path, or the 400 saying what a seq is."""
    if not (seq.isascii() and seq.isdigit()) or not 0 < int(seq) < 2**62:
        raise BadRequest("A message's seq is a positive integer.")
    return int(seq)


def restricted_json(restricted: Restricted) -> dict[str, Any]:
    return {**restricted.to_json(), "available_lists": available_lists()}


def json_body(request: IRequest) -> dict[str, Any]:
    """The request's JSON object body, or the precise 4xx."""
    if getattr(request, "too_large", False):
        raise PayloadTooLarge("The body is over 64 KiB.")
    content_type = (request.getHeader(b"Content-Type") or b"").split(b";")[0].strip().lower()
    if content_type != b"application/json":
        raise UnsupportedMediaType("Send the body as Content-Type: application/json.")
    return decode_object(request.content.read())


def bearer_token(request: IRequest) -> str | None:
    header = request.getHeader(b"Authorization")
    if header is None:
        return None
    scheme, _, token = header.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Send your token as 'Authorization: Bearer <token>'.")
    return token.strip()


def query_int(request: IRequest, name: str, default: int, low: int, high: int) -> int:
    values = request.args.get(name.encode("ascii"))
    if not values:
        return default
    try:
        value = int(values[0].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise BadRequest(f"'{name}' must be an integer.") from None
    if not low <= value <= high:
        raise BadRequest(f"'{name}' must be from {low} to {high}.")
    return value


class StaticFiles(File):
    """Static files with the types browsers insist on, and no directory listings or indexes."""

    indexNames: list[str] = []

    contentTypes = {
        **File.contentTypes,
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".html": "text/html; charset=utf-8",
        ".svg": "image/svg+xml",
    }

    def directoryListing(self) -> IResource:
        return self.childNotFound

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        if b"\0" in path:  # no file has one; the OS refuses to look (ValueError)
            return self.childNotFound
        return super().getChild(path, request)

    def render(self, request: IRequest) -> bytes | int:
        # Revalidate every time (Last-Modified makes that cheap): upgrades reach browsers.
        request.setHeader(b"Cache-Control", b"no-cache")
        return super().render(request)


class MissingRoomPage(StaticFiles):
    """The room page, sent as a 404: it tells people, kindly, that no room has that name."""

    def makeProducer(self, request: IRequest, fileForReading: Any) -> Any:
        producer = super().makeProducer(request, fileForReading)
        request.setResponseCode(404)
        return producer


class WebApp:
    """Every HTTP route of the daemon, holding the collaborators it needs."""

    app = RoutedKlein()
    add_error_handling(app)

    def __init__(self, chat: Chat, store: IStore, live: IResource, static_dir: Path,
                 relay: Relay, plugins: Callable[[], Mapping[str, Any]] = dict, *,
                 events: EventStreams, metrics: Metrics | None = None,
                 trusted: TrustedProxies = NO_PROXIES, public_url: str | None = None) -> None:
        self._chat = chat
        self._public_url = public_url
        self._trusted = trusted
        self._metrics = metrics
        """None: /metrics is served elsewhere (--metrics-listen), or not at all."""
        self._events = events
        self._plugins = plugins
        self._store = store
        self._relay = relay
        self._live = live
        self._static_dir = static_dir
        self._openapi = encode(openapi_document(__version__))

    def _client(self, request: IRequest) -> str | None:
        """Whom the request's address stands for, for rate limits (behind trusted proxies too)."""
        forwarded = request.requestHeaders.getRawHeaders(b"x-forwarded-for")
        return self._trusted.key(request.getClientAddress(),
                                 b",".join(forwarded).decode("latin-1") if forwarded else None)

    @app.route("/api/v1/rooms", methods=["POST"])
    async def create_room(self, request: IRequest) -> bytes:
        room, owner_token = await self._chat.create_room(json_body(request), self._client(request))
        request.setHeader(b"Location", f"/api/v1/rooms/{room.name}".encode("ascii"))
        return json_response(request, 201, {
            "room": self._chat.room_json(room), "owner_token": owner_token})

    @app.route("/api/v1/rooms/<name>", methods=["GET"])
    async def get_room(self, request: IRequest, name: str) -> bytes:
        room = await self._chat.room(name)
        return json_response(request, 200, self._chat.room_json(room))

    @app.route("/api/v1/rooms/<name>", methods=["PATCH"])
    async def update_room(self, request: IRequest, name: str) -> bytes:
        token = bearer_token(request)
        room = await self._chat.update_room(name, token, json_body(request))
        return json_response(request, 200, self._chat.room_json(room))

    @app.route("/api/v1/rooms/<name>", methods=["DELETE"])
    async def delete_room(self, request: IRequest, name: str) -> bytes:
        await self._chat.delete_room(name, bearer_token(request))
        request.setResponseCode(204)
        return b""

    @app.route("/api/v1/rooms/<name>/messages/<seq>", methods=["DELETE"])
    async def delete_message(self, request: IRequest, name: str, seq: str) -> bytes:
        await self._chat.delete_message(name, bearer_token(request), path_seq(seq))
        request.setResponseCode(204)
        return b""

    @app.route("/api/v1/rooms/<name>/messages/<seq>", methods=["PATCH"])
    async def update_message(self, request: IRequest, name: str, seq: str) -> bytes:
        message = await self._chat.update_message(name, bearer_token(request), path_seq(seq),
                                                  json_body(request))
        return json_response(request, 200, message_json(message))

    @app.route("/api/v1/rooms/<name>/messages/<seq>/vote", methods=["PUT", "DELETE"])
    async def vote(self, request: IRequest, name: str, seq: str) -> bytes:
        on = request.method == b"PUT"
        number = path_seq(seq)
        votes = await self._chat.vote(name, bearer_token(request), number, on)
        return json_response(request, 200, {"seq": number, "votes": votes, "voted": on})

    @app.route("/api/v1/rooms/<name>/votes", methods=["GET"])
    async def votes(self, request: IRequest, name: str) -> bytes:
        seqs = await self._chat.voted(name, bearer_token(request))
        return json_response(request, 200, {"seqs": seqs})

    @app.route("/api/v1/rooms/<name>/questions", methods=["GET"])
    async def questions(self, request: IRequest, name: str) -> bytes:
        order = request.args.get(b"order", [b"top"])[0]
        if order not in (b"top", b"newest"):
            raise BadRequest("'order' is top or newest.")
        limit = query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        room = await self._chat.room(name)
        await self._chat.check_read(room, bearer_token(request))
        questions, last_seq = await self._chat.questions(room, order == b"top", limit)
        return json_response(request, 200, {
            "questions": [message_json(m) for m in questions], "last_seq": last_seq})

    @app.route("/api/v1/rooms/<name>/held", methods=["GET"])
    async def held(self, request: IRequest, name: str) -> bytes:
        found, owner = await self._chat.held_posts(name, bearer_token(request))
        return json_response(request, 200, {"held": [held_json(h, owner) for h in found]})

    @app.route("/api/v1/rooms/<name>/held/<held_id>/approve", methods=["POST"])
    async def approve(self, request: IRequest, name: str, held_id: str) -> bytes:
        token = bearer_token(request)
        message = await self._chat.approve(name, token, held_id, optional_json_body(request))
        return json_response(request, 201, message_json(message))

    @app.route("/api/v1/rooms/<name>/held/<held_id>", methods=["DELETE"])
    async def reject(self, request: IRequest, name: str, held_id: str) -> bytes:
        await self._chat.reject(name, bearer_token(request), held_id)
        request.setResponseCode(204)
        return b""

    @app.route("/api/v1/rooms/<name>/restricted-words", methods=["GET"])
    async def restricted_words(self, request: IRequest, name: str) -> bytes:
        restricted = await self._chat.restricted(name, bearer_token(request))
        return json_response(request, 200, restricted_json(restricted))

    @app.route("/api/v1/rooms/<name>/restricted-words", methods=["PUT"])
    async def set_restricted_words(self, request: IRequest, name: str) -> bytes:
        token = bearer_token(request)
        restricted = await self._chat.set_restricted(name, token, json_body(request))
        return json_response(request, 200, restricted_json(restricted))

    @app.route("/api/v1/rooms/<name>/stats", methods=["GET"])
    async def stats(self, request: IRequest, name: str) -> bytes:
        kind = request.args.get(b"format", [b"json"])[0]
        if kind not in (b"json", b"csv"):
            raise BadRequest("'format' is json or csv.")
        room = await self._chat.owned_room(name, bearer_token(request))
        stats = stats_json(await self._chat.room_stats(room), self._chat.online(room))
        if kind == b"json":
            return json_response(request, 200, stats)
        request.setHeader(b"Content-Type", b"text/csv; charset=utf-8")
        request.setHeader(b"Content-Disposition",
                          f'attachment; filename="{room.name}-stats.csv"'.encode("ascii"))
        return stats_csv(stats).encode("utf-8")

    @app.route("/api/v1/rooms/<name>/participants", methods=["GET"])
    async def participants(self, request: IRequest, name: str) -> bytes:
        found = await self._chat.participants(name, bearer_token(request))
        return json_response(request, 200, {
            "participants": [moderated_participant_json(p) for p in found]})

    @app.route("/api/v1/rooms/<name>/participants/<participant_id>/mute",
               methods=["POST", "DELETE"])
    async def mute(self, request: IRequest, name: str, participant_id: str) -> bytes:
        muted = request.method == b"POST"
        await self._chat.set_muted(name, bearer_token(request), participant_id, muted)
        request.setResponseCode(204)
        return b""

    @app.route("/api/v1/rooms/<name>/join", methods=["POST"])
    async def join(self, request: IRequest, name: str) -> bytes:
        room = await self._chat.room(name)
        participant, token = await self._chat.join(room, json_body(request), self._client(request))
        return json_response(request, 201, {
            "participant": participant_json(participant), "token": token})

    @app.route("/api/v1/rooms/<name>/messages", methods=["GET"])
    async def messages(self, request: IRequest, name: str) -> bytes:
        after = query_int(request, "after", 0, 0, 2**62 - 1)
        limit = query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        room = await self._chat.room(name)
        await self._chat.check_read(room, bearer_token(request))
        messages, last_seq = await self._chat.messages(room, after, limit)
        return json_response(request, 200, {
            "messages": [message_json(m) for m in messages], "last_seq": last_seq})

    @app.route("/api/v1/rooms/<name>/messages", methods=["POST"])
    async def post(self, request: IRequest, name: str) -> bytes:
        token = bearer_token(request)
        if token is None:  # before reading the body: an anonymous post is a 401, whatever it holds
            raise Unauthorized("Join the room to post: send your participant token.")
        posted = await self._chat.post(name, token, json_body(request), self._client(request))
        if isinstance(posted, Held):  # waits for the owner's approval: no seq yet
            return json_response(request, 202, {"held": held_json(posted, owner=False)})
        return json_response(request, 201, message_json(posted))

    @app.route("/api/v1/rooms/<name>/qr.svg", methods=["GET"])
    async def qr_code(self, request: IRequest, name: str) -> bytes:
        """The room's join link as a QR code, for the projector view."""
        room = await self._chat.room(name)
        url = join_url(request, self._public_url, room.name)
        return qr_response(request, url, varies_by_host=not self._public_url)

    @app.route("/api/v1/rooms/<name>/transcript", methods=["GET"])
    async def transcript(self, request: Request, name: str) -> None:
        download = Download(request)  # first: it must hear of a hang-up during the awaits
        kind = transcript_format(request.args.get(b"format", [b"txt"])[0].decode("latin-1"))
        room = await self._chat.room(name)
        token = bearer_token(request)
        await self._chat.check_read(room, token)
        stats = None
        flag = request.args.get(b"stats", [b"false"])[0]
        if flag not in (b"true", b"1", b"false", b"0"):
            raise BadRequest("'stats' must be true or false.")
        if flag in (b"true", b"1"):  # the owner's, who took part
            await self._chat.owned_room(name, token)
            stats = stats_json(await self._chat.room_stats(room), self._chat.online(room))
        transcript = kind(self._chat.room_json(room), self._chat.now_ms(), stats)
        await download.send(transcript.filename, {"Content-Type": kind.media_type, **kind.headers},
                            transcript.chunks(partial(self._chat.messages, room)))

    @app.route("/api/v1/rooms/<name>/events", methods=["GET"])
    async def events(self, request: Request, name: str) -> None:
        """The live view as server-sent events, for where websockets do not pass."""
        stream = self._events.stream(request)  # first: it must hear of a hang-up during the awaits
        since = resume_point(request)
        token = query_token(request) or bearer_token(request)
        room_id = request.args.get(b"room_id", [b""])[0].decode("latin-1") or None
        room = await self._chat.room(name)
        you = await self._chat.check_read(room, token)
        await stream.follow(room, you, since, self._chat.is_owner(room, token), room_id)

    @app.route("/api/v1/rooms/<name>/live", methods=["GET"])
    def live(self, request: IRequest, name: str) -> IResource | bytes:
        if (request.getHeader(b"Upgrade") or b"").lower() != b"websocket":
            raise BadRequest("This endpoint speaks websocket: send an Upgrade request.")
        return self._live

    @app.route("/replay/", branch=True)
    async def replay(self, request: IRequest) -> bytes:
        """The reflektor: answer 202 at once, then replay the request to every downstream."""
        if not self._relay.reflektor:
            raise NotFound("There is nothing at this address.")
        if request.method not in REPLAYED_METHODS:
            request.setHeader(b"Allow", b", ".join(REPLAYED_METHODS))
            raise MethodNotAllowed("The reflektor replays POST, PUT, PATCH and DELETE.")
        if not self._relay.authorized(bearer_token(request)):
            raise Unauthorized("Send the replay token as 'Authorization: Bearer <token>'.")
        if getattr(request, "too_large", False):
            raise PayloadTooLarge("The body is over 64 KiB.")
        path = request.uri.removeprefix(b"/replay/").decode("ascii", "replace")  # raw, with query
        content_type = request.getHeader(b"Content-Type")
        delivery_id = await self._relay.accept(
            request.method.decode("ascii"), path,
            content_type.decode("latin-1") if content_type is not None else None,
            request.content.read())
        return json_response(request, 202, {"id": delivery_id})

    @app.route("/api/v1/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        json_response(request, 200, None)
        return self._openapi

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        if self._metrics is None:
            raise NotFound("There is nothing at this address.")
        return metrics_page(request, self._metrics)

    @app.route("/healthz", methods=["GET"])
    async def health(self, request: IRequest) -> bytes:
        try:
            await self._store.check()
        except Exception as e:
            error = Unavailable(f"The database does not answer: {e.__class__.__name__}.")
            return json_response(request, 503, {"status": "unavailable", **error_json(error)})
        health: dict[str, Any] = {"status": "ok"}
        if plugins := self._plugins():  # a plugin's trouble shows here; it is not a 503
            health["plugins"] = plugins
        return json_response(request, 200, health)

    def _page(self, request: IRequest, filename: str, kind: type[StaticFiles] = StaticFiles,
              ) -> IResource:
        request.postpath = []  # the route consumed the path: render the file itself
        return kind(str(self._static_dir / filename))

    @app.route("/", methods=["GET"])
    def front_page(self, request: IRequest) -> IResource:
        return self._page(request, "index.html")

    @app.route("/static/", branch=True, methods=["GET"])
    def static(self, request: IRequest) -> IResource:
        return StaticFiles(str(self._static_dir))

    @app.route("/<name>", methods=["GET"])
    def room_page(self, request: IRequest, name: str) -> IResource:
        """The room page; for a name no room can have, the same page (it says so) as a 404."""
        try:
            room_name(name)
        except ApiError:
            return self._page(request, "room.html", MissingRoomPage)
        return self._page(request, "room.html")

    @app.route("/<name>/present", methods=["GET"])
    def present_page(self, request: IRequest, name: str) -> IResource:
        """The projector view of a room; for a name no room can have, as a 404 (it says so)."""
        try:
            room_name(name)
        except ApiError:
            return self._page(request, "present.html", MissingRoomPage)
        return self._page(request, "present.html")
