"""
The OpenAPI 3.1 description of tmd's HTTP API, served at C{GET /api/v1/openapi.json}.

API.md is the contract for people; this is the same contract for machines, so client
authors can generate code and check requests, and the limits, error codes and resume
rules are written down once, next to the server. The document is plain data built by
small functions: to document a new endpoint, add its path item in L{_paths} using
L{_operation} (which adds the shared error responses).
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]

# What clients may send; the server stores names lower-case and returns them so.
_ROOM_NAME = "^[A-Za-z0-9][A-Za-z0-9-]{1,62}$"
_STORED_ROOM_NAME = "^[a-z0-9][a-z0-9-]{1,62}$"
_HASHTAG = "^#?[A-Za-z0-9_]{1,100}$"
_NO_CONTROL_CHARACTERS = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
_MAX_SEQ = 2**62 - 1
"""The highest seq a client may name (what SQLite's integers hold, with room to spare)."""
_RESERVED = "`api`, `static`, `ws`, `metrics`, `healthz`, `replay`, `favicon.ico`, `robots.txt`"

# Every error code, in the order of the Error schema's enum, with what it means.
_ERROR_CODES: dict[str, str] = {
    "bad_request": "the request is malformed: not JSON, a field of the wrong type or out"
    " of range, or (with 415) not sent as `application/json`",
    "invalid_name": f"the room name does not match the pattern or is reserved ({_RESERVED}, ...)",
    "name_taken": "the name is already in use (a room name, or a nickname in this room,"
    " compared case-insensitively)",
    "not_found": "there is no room of that name (or no message of that seq)",
    "unauthorized": "the token or password is missing or wrong",
    "forbidden": "the token is valid but may not do this",
    "room_closed": "the room is closed for good (or has expired) and is read-only",
    "room_paused": "the owner has paused posting; reading and the live view still work",
    "muted": "the owner has muted this participant",
    "too_long": "the trimmed body is longer than the room's `max_length`",
    "empty": "the body is empty after trimming",
    "rate_limited": "too many posts, votes, joins or new rooms from this participant or address;"
    " wait `Retry-After` seconds",
    "payload_too_large": "the request body is larger than the server accepts",
    "method_not_allowed": "the path does not support this method",
    "unavailable": "the daemon cannot serve requests now (e.g. its database is unreachable)",
    "restricted": "the post contains one of the room's restricted words and the owner has"
    " them refused",
    "qa_off": "a question, or a vote, in a room whose `qa` is off",
    "not_a_question": "voting on, or marking answered, a message that is not a question",
    "room_locked": "the owner has locked the room: only the host posts",
    "internal": "an unexpected server error; the server logs it",
}

# Each error status: its reusable response's name and description.
_ERROR_STATUSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The request is invalid."),
    401: ("Unauthorized", "A token or password is missing or wrong."),
    403: ("Forbidden", "The request is understood and refused."),
    404: ("NotFound", "The room does not exist."),
    409: ("Conflict", "The name is already taken."),
    413: ("PayloadTooLarge", "The request body is too large."),
    415: ("UnsupportedMediaType",
          "The body is not `Content-Type: application/json`; the code is `bad_request`."),
    405: ("MethodNotAllowed", "The path does not support this method; see `Allow`."),
    429: ("TooManyRequests", "Too many requests; try again after `Retry-After` seconds."),
    500: ("InternalError", "An unexpected server error."),
    503: ("ServiceUnavailable",
          "The database cannot be reached for now; try again after `Retry-After` seconds."),
}

_INTRODUCTION = f"""\
tmd is a self-hosted backchannel chat: short-lived rooms where an audience talks
alongside a talk, class or event, live in the browser, over this API and a websocket.

**Conventions.** JSON in and out, UTF-8. Request bodies must be sent with
`Content-Type: application/json` (otherwise 415); unknown request fields are ignored.
Times are RFC 3339 UTC strings such as `2026-11-24T17:00:00.123Z`. Every error is a
4xx/5xx status with an `Error` body: `error.code` is a stable snake_case code to branch
on, `error.message` is for people and may change.

**Tokens.** Send `Authorization: Bearer <token>`. Creating a room returns its **owner
token** (moderates the room); joining a room returns a **participant token** (posts as
that nickname). Each is returned exactly once and cannot be recovered: keep it.

**Sequence numbers.** Every message in a room has a `seq`: 1, 2, 3, ... in commit
order, never reused. A deleted message keeps its number and is left out of listings,
so a listing may skip numbers. To resume after a disconnect, ask for everything after
the last seq you saw: `GET /api/v1/rooms/{{name}}/messages?after=N`, or the live
socket with `since=N`; nothing is missed and nothing is repeated.

**Room names** are case-insensitive slugs (`{_ROOM_NAME}`), stored and returned in
lower case; reserved words ({_RESERVED}, ...) are refused with `invalid_name`.
"""

_LIVE = """\
The live view of a room, as a websocket: connect to
`ws://HOST/api/v1/rooms/{name}/live?since=N&token=T` (`wss://` behind TLS). Browsers
cannot set headers on a websocket, hence the token in the query string; query strings
are never logged. Every frame is one JSON text message.

**Server to client**
- `{"type": "welcome", "room": Room, "you": Participant | null, "owner": bool,
  "new_room": bool}`: always the first frame (`you` is null without a participant token;
  `owner` is true on the owner's socket; `new_room` is true when `since` was for another
  room of the same name: start over).
- `{"type": "message", "message": Message}`: the backlog, then live messages; strictly
  ascending `seq`, no duplicates.
- `{"type": "deleted", "seq": N}`: the owner deleted a message.
- `{"type": "room", "room": Room}`: the room's state or settings changed.
- `{"type": "presence", "online": N}`: clients online (at most a few per second).
- `{"type": "ack", "ref": "...", "seq": N}`: your post was committed as `seq` N; for a
  post held for approval, `{"type": "ack", "ref": "...", "seq": null, "held": "<id>"}`.
- `{"type": "updated", "message": Message}`: a message's `votes`, `answered` or `pinned`
  changed (votes at most twice a second per message).
- `{"type": "pending", "held": Held}`: to its author's sockets only, their post is held.
- `{"type": "held", "held": Held}`: to the owner's sockets only, a post joined the queue.
- `{"type": "released", "id": "...", "outcome": "approved" | "rejected", "seq": N | null}`:
  to the owner's and the author's sockets, a held post left the queue.
- `{"type": "error", "ref": "..." | null, "code": "...", "message": "..."}`: the same
  codes as HTTP errors; `ref` names the post it answers. `rate_limited` (and
  `unavailable`) errors also carry `retry_after`, in seconds.

**Client to server**
- `{"type": "post", "body": "...", "ref": "client-chosen id", "question": false,
  "host": false}`: the same rules as `POST /api/v1/rooms/{name}/messages`; needs a
  participant token (or the owner token, with `host`). The poster sees its
  own message as a `message` frame and an `ack`.

**Close codes**: `1001` the daemon is shutting down cleanly (reconnect with `since` =
the last seq seen and miss nothing); `1008` bad token, forbidden room or foreign
`Origin`; `1009` oversized frame; `1013` the client was too slow to keep up (its buffer
limit was reached, or the database was unreachable when it connected; reconnect with
`since`); `4404` the room was deleted. A browser page may connect only from the daemon's
own origin (or the configured ones); other origins get an `error` frame (`forbidden`) and
`1008`.

The server pings at least every 25 s; proxies in between should allow quiet sockets
for at least 60 s.
"""


_EVENTS = """\
The live view of a room as server-sent events (`text/event-stream`), for networks whose
proxies do not pass websockets: `new EventSource("/api/v1/rooms/NAME/events?since=N&token=T")`.
It carries the websocket's server frames (`welcome`, `message`, `deleted`, `room`,
`presence`; see the live view), each as one event whose `data:` line is the JSON frame
and whose `type` says what it is (no `event:` names). A `message` event's `id:` is the
message's seq; the `welcome` event's is the seq the stream starts after. A client that
reconnects sends the last id it saw as `Last-Event-ID` (an `EventSource` does so by
itself) and gets every message after it, nothing twice: `Last-Event-ID` wins over
`since`. Posting goes over HTTP (`POST /api/v1/rooms/{name}/messages`).

Refusals (no such room, a wrong or missing token) are ordinary JSON errors, before the
stream starts. A comment line (`: keep-alive`) comes every 20 s, so that proxies do not
cut a quiet stream; the response says `Cache-Control: no-cache` and
`X-Accel-Buffering: no` (nginx passes each event on at once). When the room is deleted,
the stream sends the websocket's last `error` frame (`not_found`) and ends. The server
also ends streams when it shuts down, and cuts off a client that stops reading (over
1 MiB waiting for it): clients reconnect and resume with `Last-Event-ID`.
"""


_REPLAY = """\
The reflektor: answers `202` at once, then replays the request (the same method, path,
query string, body and `Content-Type`, never the token) to every configured downstream,
in order, each through its own queue with retries and back-off. Send the replay token
as `Authorization: Bearer <token>`. Off (`404`) unless `[replay]` is configured.
"""


def _schema(name: str) -> JSON:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: JSON) -> JSON:
    """A response (or request body, with C{required}) carrying JSON."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(properties: JSON, required: list[str] | None = None, **extra: Any) -> JSON:
    """An object schema; every property is required unless C{required} says otherwise."""
    names = list(properties) if required is None else required
    return {"type": "object", "required": names, "properties": properties, **extra}


def _nullable_optional(properties: JSON, required: list[str]) -> JSON:
    """A request object whose optional fields may also be null, which means left out."""
    for name, schema in properties.items():
        if name not in required:
            schema["type"] = [schema["type"], "null"]
            if "enum" in schema:
                schema["enum"] = [*schema["enum"], None]
    return _object(properties, required, description="A null field is one left out.")


def _integer(description: str, minimum: int, maximum: int | None = None, **extra: Any) -> JSON:
    schema: JSON = {"type": "integer", "minimum": minimum, "description": description}
    if maximum is not None:
        schema["maximum"] = maximum
    return {**schema, **extra}


def _query(name: str, description: str, schema: JSON) -> JSON:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


def _room_name_parameter() -> JSON:
    return {"name": "name", "in": "path", "required": True,
            "description": "The room name, case-insensitive.",
            "schema": {"type": "string", "pattern": _ROOM_NAME}}


def _error_response(status: int) -> JSON:
    """The reusable response for an error status: an C{Error} body."""
    _, description = _ERROR_STATUSES[status]
    response = _json(description, _schema("Error"))
    if status in (429, 503):
        response["headers"] = {"Retry-After": {
            "description": "Seconds to wait before trying again.",
            "schema": {"type": "integer", "minimum": 0}}}
    return response


def _error(status: int, codes: tuple[str, ...]) -> JSON:
    """A reference to the shared response for C{status}, naming the codes this operation uses."""
    name, description = _ERROR_STATUSES[status]
    meanings = "; ".join(f"`{code}`: {_ERROR_CODES[code]}" for code in codes)
    return {"$ref": f"#/components/responses/{name}",
            "description": f"{description} Codes: {meanings}."}


def _operation(
    operation_id: str,
    tag: str,
    summary: str,
    description: str,
    responses: JSON,
    *,
    errors: dict[int, tuple[str, ...]] | None = None,
    parameters: list[JSON] | None = None,
    body: str | None = None,
    security: list[dict[str, list[str]]] | None = None,
) -> JSON:
    """
    One operation. C{errors} maps each error status to the codes it can carry; a JSON
    C{body} (a schema name) adds 413 and 415, and every operation may answer 500.
    """
    statuses = dict(errors or {})
    if body is not None:
        statuses |= {413: ("payload_too_large",), 415: ("bad_request",)}
    statuses[500] = ("internal",)
    if errors is not None or body is not None:  # it uses the database
        statuses[503] = ("unavailable",)
    operation: JSON = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "description": description,
        "responses": {**responses, **{str(status): _error(status, codes)
                                      for status, codes in sorted(statuses.items())}},
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(
            "A JSON object; unknown fields are ignored.", _schema(body))}
    if security is not None:
        operation["security"] = security
    return operation


def _schemas() -> JSON:
    timestamp = {"type": "string", "format": "date-time"}
    seq = _integer("The message's number in its room: 1, 2, 3, ... in commit order.", 1)
    return {
        "Room": _object({
            "name": {"type": "string", "pattern": _STORED_ROOM_NAME,
                     "description": "The room name, lower-case."},
            "title": {"type": "string", "maxLength": 200},
            "state": {"type": "string", "enum": ["open", "paused", "closed"],
                      "description": "`open`; `paused` (reading and the live view work,"
                      " posting is refused); `closed` (read-only for good; an expired"
                      " room is closed)."},
            "created_at": timestamp,
            "expires_at": {**timestamp, "description": "When the room's lifetime ends."},
            "max_length": _integer("The longest message body, in characters.", 1, 1000),
            "has_password": {"type": "boolean",
                             "description": "Joining and reading need the password."},
            "hashtags": {"type": "array", "maxItems": 10, "items": {"type": "string"},
                         "description": "Hashtags whose social posts are brought in."},
            "online": _integer("Clients connected to the live view now.", 0),
            "last_seq": _integer("The highest seq in the room; 0 before the first message.",
                                 0),
            "id": {"type": "string", "description": "Never reused: a room deleted and created"
                   " again under the same name has a new id (see the live view's `room_id`)."},
            "qa": {"type": "boolean", "description": "Questions and votes are on."},
            "moderation": {"type": "string", "enum": ["none", "pre"],
                           "description": "`pre`: participants' posts wait for the owner's"
                           " approval and get their seq when approved."},
            "locked": {"type": "boolean",
                       "description": "Only the host posts; everyone reads (and votes)."},
            "host_name": {"type": "string", "minLength": 1, "maxLength": 32,
                          "description": "The author of host posts."},
            "pinned": {"type": ["integer", "null"], "minimum": 1,
                       "description": "The seq of the message pinned as \"now discussing\"."},
        }, examples=[{
            "name": "physics-101", "title": "Physics 101", "state": "open",
            "created_at": "2026-11-24T17:00:00.123Z", "expires_at": "2026-11-25T17:00:00.123Z",
            "max_length": 280, "has_password": False, "hashtags": ["#phys101"],
            "online": 12, "last_seq": 57, "id": "17", "qa": True, "moderation": "none",
            "locked": False, "host_name": "Host", "pinned": None}]),
        "Message": _object({
            "seq": seq,
            "room": {"type": "string", "pattern": _STORED_ROOM_NAME},
            "kind": {"type": "string", "enum": ["chat", "social", "system"],
                     "description": "`chat`: posted by a participant; `social`: brought in"
                     " from a social network (see `source`); `system`: a room event worth"
                     " keeping in the transcript."},
            "author": {"type": ["string", "null"],
                       "description": "The nickname (`chat`), the handle such as `@ada`"
                       " (`social`), or null."},
            "body": {"type": "string"},
            "created_at": timestamp,
            "source": {**_object({
                "network": {"type": "string", "examples": ["twitter", "mastodon"]},
                "id": {"type": "string", "description": "The post's id on that network."},
                "url": {"type": "string", "format": "uri"},
            }), "type": ["object", "null"],
                "description": "Where a `social` message came from; null otherwise."},
            "participant_id": {"type": ["string", "null"],
                               "description": "The poster's participant id (`chat`), which"
                               " the owner mutes by; null otherwise."},
            "question": {"type": "boolean", "description": "Posted as a question."},
            "votes": _integer("Participants voting for the question.", 0),
            "answered": {"type": "boolean", "description": "The owner marked it answered."},
            "pinned": {"type": "boolean", "description": "It is the room's pinned message."},
            "host": {"type": "boolean", "description": "Posted by the owner as the host"
                     " (`author` is the room's `host_name`)."},
            "edited": {"type": "boolean",
                       "description": "The owner edited it before approving it."},
        }, examples=[{
            "seq": 58, "room": "physics-101", "kind": "chat", "author": "ada",
            "body": "Is light a wave?", "created_at": "2026-11-24T17:05:00.000Z",
            "source": None, "participant_id": "q4dW2s0bPk3Xy1mZ", "question": True,
            "votes": 4, "answered": False, "pinned": False, "host": False, "edited": False}]),
        "Held": _object({
            "id": {"type": "string"},
            "room": {"type": "string", "pattern": _STORED_ROOM_NAME},
            "author": {"type": "string"},
            "participant_id": {"type": "string"},
            "body": {"type": "string"},
            "question": {"type": "boolean"},
            "created_at": timestamp,
            "reason": {"type": "string", "enum": ["moderation", "restricted"],
                       "description": "`moderation`: the room is `pre`; `restricted`: it"
                       " contains restricted words."},
            "matched": {"type": "array", "items": {"type": "string"}, "maxItems": 5,
                        "description": "The restricted words it contains (for the owner;"
                        " empty for its author)."},
        }),
        "HeldList": _object({"held": {"type": "array", "items": _schema("Held"),
                                      "description": "Oldest first."}}),
        "HeldPost": _object({"held": _schema("Held")}),
        "Vote": _object({
            "seq": seq,
            "votes": _integer("The question's votes now.", 0),
            "voted": {"type": "boolean", "description": "Whether this participant votes for it."},
        }),
        "Votes": _object({"seqs": {"type": "array", "items": seq,
                                   "description": "The questions this participant votes for."}}),
        "Questions": _object({
            "questions": {"type": "array", "items": _schema("Message")},
            "last_seq": _integer("The room's highest seq.", 0),
        }),
        "UpdateMessage": _nullable_optional({
            "answered": {"type": "boolean", "description": "Mark the question answered (or not)."},
            "pinned": {"type": "boolean", "description": "Pin it (unpinning the one pinned"
                       " before), or unpin it."},
        }, required=[]),
        "Approve": _nullable_optional({
            "body": {"type": "string", "description": "The body as edited by the owner"
                     " (1..`max_length` after trimming); the message is then `edited`."},
        }, required=[]),
        "Restricted": _object({
            "words": {"type": "array", "maxItems": 500,
                      "items": {"type": "string", "minLength": 1, "maxLength": 100},
                      "description": "Words or phrases, matched as whole words, ignoring"
                      " case and accents."},
            "action": {"type": "string", "enum": ["hold", "refuse"],
                       "description": "`hold`: matching posts wait for approval; `refuse`:"
                       " they are refused with `restricted`."},
            "lists": {"type": "array", "items": {"type": "string"},
                      "description": "Built-in lists in use, from `available_lists`."},
            "available_lists": {"type": "array", "items": {"type": "string"},
                                "description": "The built-in lists this server has."},
        }),
        "SetRestricted": _nullable_optional({
            "words": {"type": "array", "maxItems": 500,
                      "items": {"type": "string", "minLength": 1, "maxLength": 100}},
            "action": {"type": "string", "enum": ["hold", "refuse"]},
            "lists": {"type": "array", "items": {"type": "string"}},
        }, required=[]),
        "Stats": _object({
            "participants": {"type": "array", "items": _object({
                "id": {"type": "string"}, "nickname": {"type": "string"},
                "messages": _integer("Messages not deleted (questions included).", 0),
                "questions": _integer("Questions not deleted.", 0),
                "votes": _integer("Votes cast.", 0)}),
                "description": "In the order they joined."},
            "messages": _integer("Messages not deleted, system ones left out.", 0),
            "questions": _integer("Questions not deleted.", 0),
            "votes": _integer("Votes cast.", 0),
            "host_messages": _integer("Host posts not deleted.", 0),
            "held": _integer("Posts waiting for approval.", 0),
            "peak_online": _integer("The most people online at once.", 0),
            "online": _integer("People online now.", 0),
        }),
        "Participant": _object({
            "id": {"type": "string"},
            "nickname": {"type": "string"},
        }),
        "Participants": _object({
            "participants": {"type": "array", "description": "In the order they joined.",
                             "items": _object({
                                 "id": {"type": "string"},
                                 "nickname": {"type": "string"},
                                 "muted": {"type": "boolean"},
                             })},
        }),
        "ErrorDetail": _object({
            "code": {"type": "string", "enum": list(_ERROR_CODES), "description": "; ".join(
                f"`{code}`: {meaning}" for code, meaning in _ERROR_CODES.items()) + "."},
            "message": {"type": "string", "description": "For people; may change."},
        }),
        "Error": _object({"error": _schema("ErrorDetail")}),
        "CreateRoom": _nullable_optional({
            "name": {"type": "string", "pattern": _ROOM_NAME,
                     "description": "Case-insensitive; stored lower-case. Reserved words"
                     f" ({_RESERVED}, ...) are refused with `invalid_name`."},
            "title": {"type": "string", "minLength": 0, "maxLength": 200,
                      "description": "Defaults to the name."},
            "lifetime": _integer("Seconds until the room expires (1 hour to 1 year).",
                                 3600, 31536000, default=86400),
            "password": {"type": "string", "minLength": 1, "maxLength": 200,
                         "description": "If set, joining and reading need it."},
            "hashtags": {"type": "array", "maxItems": 10,
                         "items": {"type": "string", "pattern": _HASHTAG},
                         "description": "Social hashtags to bring into the room."},
            "max_length": _integer("The longest message body, in characters.", 1, 1000,
                                   default=280),
            "qa": {"type": "boolean", "default": False},
            "moderation": {"type": "string", "enum": ["none", "pre"], "default": "none"},
            "host_name": {"type": "string", "minLength": 1, "maxLength": 32,
                          "default": "Host"},
        }, required=["name"]),
        "CreatedRoom": _object({
            "room": _schema("Room"),
            "owner_token": {"type": "string", "description": "The owner's bearer token."
                            " Returned only here, once: keep it."},
        }),
        "Join": _nullable_optional({
            "nickname": {"type": "string", "minLength": 1, "maxLength": 32,
                         "pattern": _NO_CONTROL_CHARACTERS,
                         "description": "1..32 characters after surrounding whitespace is"
                         " trimmed, no control characters; unique in the room"
                         " case-insensitively."},
            "password": {"type": "string",
                         "description": "Required if the room has a password."},
        }, required=["nickname"]),
        "Joined": _object({
            "participant": _schema("Participant"),
            "token": {"type": "string", "description": "The participant's bearer token"
                      " (posts as this nickname). Returned only here, once: keep it."},
        }),
        "MessagePage": _object({
            "messages": {"type": "array", "items": _schema("Message"),
                         "description": "Ascending by seq."},
            "last_seq": _integer(
                "The room's highest seq when the page was read. If it is greater than"
                " the last message's seq, there is more: ask again with `after` set to"
                " that message's seq.", 0),
        }),
        "UpdateRoom": _nullable_optional({
            "state": {"type": "string", "enum": ["open", "paused", "closed"],
                      "description": "`closed` is for good."},
            "title": {"type": "string", "maxLength": 200},
            "hashtags": {"type": "array", "maxItems": 10,
                         "items": {"type": "string", "pattern": "^#?[A-Za-z0-9_]{1,100}$"}},
            "lifetime": _integer("Seconds from the room's creation to its end.",
                                 3600, 31_536_000),
            "qa": {"type": "boolean"},
            "moderation": {"type": "string", "enum": ["none", "pre"]},
            "locked": {"type": "boolean"},
            "host_name": {"type": "string", "minLength": 1, "maxLength": 32},
        }, required=[]),
        "PostMessage": _object({
            "body": {"type": "string", "description": "Trimmed, then 1..`max_length`"
                     " characters (`empty` / `too_long` otherwise)."},
            "question": {"type": "boolean", "default": False,
                         "description": "Post it as a question (the room's `qa` must be on)."},
            "host": {"type": "boolean", "default": False,
                     "description": "Post as the host, with the owner token."},
        }, required=["body"]),
        "Accepted": _object({
            "id": {"type": "string", "description": "The delivery id: each downstream gets it"
                   " as `X-Tmd-Delivery`, the same on every retry."},
        }),
        "Transcript": _object({
            "room": _schema("Room"),
            "messages": {"type": "array", "items": _schema("Message"),
                         "description": "Every message not deleted, ascending by seq."},
            "stats": {**_schema("Stats"), "description": "With `stats=true` only."},
        }, required=["room", "messages"]),
    }


def _paths() -> JSON:
    room = [_room_name_parameter()]
    read_auth: list[dict[str, list[str]]] = [{}, {"bearerAuth": []}]  # token optional
    owner: list[dict[str, list[str]]] = [{"bearerAuth": []}]  # the owner token
    return {
        "/api/v1/rooms": {"post": _operation(
            "createRoom", "rooms", "Create a room",
            "Creates a room and returns it with its owner token (returned only here).",
            {"201": _json("The room was created.", _schema("CreatedRoom"))},
            errors={400: ("bad_request", "invalid_name"), 409: ("name_taken",),
                    429: ("rate_limited",)},
            body="CreateRoom")},
        "/api/v1/rooms/{name}": {
            "parameters": room,
            "get": _operation(
                "getRoom", "rooms", "Get a room", "The room's metadata.",
                {"200": _json("The room.", _schema("Room"))},
                errors={404: ("not_found",)}),
            "patch": _operation(
                "updateRoom", "rooms", "Change a room",
                "The owner changes the room's state, title, hashtags or lifetime; fields"
                " left out keep their value. Live clients get a `room` frame. A closed"
                " room (or an expired one) cannot be changed.",
                {"200": _json("The room as changed.", _schema("Room"))},
                errors={400: ("bad_request",), 401: ("unauthorized",),
                        403: ("forbidden", "room_closed"), 404: ("not_found",)},
                body="UpdateRoom", security=owner),
            "delete": _operation(
                "deleteRoom", "rooms", "Delete a room",
                "The owner deletes the room, its participants and its messages. Live"
                " clients get an `error` frame (`not_found`) and are closed with 4404."
                " The name can then be used for a new room.",
                {"204": {"description": "Deleted."}},
                errors={401: ("unauthorized",), 403: ("forbidden",), 404: ("not_found",)},
                security=owner),
        },
        "/api/v1/rooms/{name}/messages/{seq}": {
            "parameters": [*room, {"name": "seq", "in": "path", "required": True,
                                   "description": "The message's seq.",
                                   "schema": _integer("A seq.", 1, _MAX_SEQ)}],
            "delete": _operation(
                "deleteMessage", "messages", "Delete a message",
                "The owner deletes one message: it is left out of listings from now on"
                " (its seq stays used) and live clients get a `deleted` frame.",
                {"204": {"description": "Deleted."}},
                errors={400: ("bad_request",), 401: ("unauthorized",),
                        403: ("forbidden",), 404: ("not_found",)},
                security=owner),
            "patch": _operation(
                "updateMessage", "questions", "Mark answered, pin",
                "The owner marks a question `answered` (or not), or pins a chat or social"
                " message as \"now discussing\" (unpinning the one before) or unpins it."
                " Live clients get `updated` frames, and a `room` frame for a pin.",
                {"200": _json("The message as it is now.", _schema("Message"))},
                errors={400: ("bad_request", "not_a_question"), 401: ("unauthorized",),
                        403: ("forbidden", "room_closed"), 404: ("not_found",)},
                body="UpdateMessage", security=owner),
        },
        "/api/v1/rooms/{name}/messages/{seq}/vote": {
            "parameters": [*room, {"name": "seq", "in": "path", "required": True,
                                   "description": "The question's seq.",
                                   "schema": _integer("A seq.", 1, _MAX_SEQ)}],
            **{method: _operation(
                f"{verb}Question", "questions", summary, description,
                {"200": _json("The question's votes now.", _schema("Vote"))},
                errors={400: ("bad_request", "qa_off", "not_a_question"),
                        401: ("unauthorized",), 403: ("room_closed", "room_paused"),
                        404: ("not_found",), 429: ("rate_limited",)},
                security=[{"bearerAuth": []}])
               for method, verb, summary, description in (
                   ("put", "vote", "Vote for a question",
                    "A participant votes for a question; voting again changes nothing."
                    " Live clients get `updated` frames (at most two a second per question)."),
                   ("delete", "unvote", "Take a vote back",
                    "A participant takes their vote back; idempotent."))},
        },
        "/api/v1/rooms/{name}/votes": {"parameters": room, "get": _operation(
            "listVotes", "questions", "My votes",
            "The questions the participant whose token is given votes for.",
            {"200": _json("Their seqs.", _schema("Votes"))},
            errors={401: ("unauthorized",), 404: ("not_found",)},
            security=[{"bearerAuth": []}])},
        "/api/v1/rooms/{name}/questions": {"parameters": room, "get": _operation(
            "listQuestions", "questions", "List questions",
            "Questions not deleted: `top` (most votes first, then oldest) or `newest`"
            " (highest seq first). Reading as for messages.",
            {"200": _json("The questions.", _schema("Questions"))},
            errors={400: ("bad_request",), 401: ("unauthorized",), 404: ("not_found",)},
            parameters=[
                _query("order", "The order.", {"type": "string", "enum": ["top", "newest"],
                                               "default": "top"}),
                _query("limit", "The most questions to return.",
                       _integer("A count.", 1, 1000, default=100)),
            ],
            security=read_auth)},
        "/api/v1/rooms/{name}/held": {"parameters": room, "get": _operation(
            "listHeld", "moderation", "The approval queue",
            "With the owner token: every post waiting for approval; with a participant"
            " token: that participant's own.",
            {"200": _json("The queue.", _schema("HeldList"))},
            errors={401: ("unauthorized",), 404: ("not_found",)},
            security=[{"bearerAuth": []}])},
        "/api/v1/rooms/{name}/held/{id}/approve": {
            "parameters": [*room, _held_id()],
            "post": _operation(
                "approveHeld", "moderation", "Approve a held post",
                "The owner publishes a held post, as it is or edited (`body`): it gets the"
                " room's next seq now. The body is optional.",
                {"201": _json("The message.", _schema("Message"))},
                errors={400: ("bad_request", "empty", "too_long"), 401: ("unauthorized",),
                        403: ("forbidden", "room_closed"), 404: ("not_found",),
                        413: ("payload_too_large",), 415: ("bad_request",)},
                security=owner)},
        "/api/v1/rooms/{name}/held/{id}": {
            "parameters": [*room, _held_id()],
            "delete": _operation(
                "rejectHeld", "moderation", "Reject a held post",
                "The owner drops a held post: no one else ever sees it.",
                {"204": {"description": "Rejected."}},
                errors={401: ("unauthorized",), 403: ("forbidden",), 404: ("not_found",)},
                security=owner)},
        "/api/v1/rooms/{name}/restricted-words": {
            "parameters": room,
            "get": _operation(
                "getRestrictedWords", "moderation", "Restricted words",
                "The owner reads the room's restricted words and what happens to posts"
                " containing them.",
                {"200": _json("The settings.", _schema("Restricted"))},
                errors={401: ("unauthorized",), 403: ("forbidden",), 404: ("not_found",)},
                security=owner),
            "put": _operation(
                "setRestrictedWords", "moderation", "Set restricted words",
                "The owner replaces the restricted words, the action or the built-in lists;"
                " fields left out keep their value. At most 500 words of 1..100 characters.",
                {"200": _json("The settings.", _schema("Restricted"))},
                errors={400: ("bad_request",), 401: ("unauthorized",), 403: ("forbidden",),
                        404: ("not_found",)},
                body="SetRestricted", security=owner),
        },
        "/api/v1/rooms/{name}/stats": {"parameters": room, "get": _operation(
            "getStats", "rooms", "Participation statistics",
            "For the owner: messages, questions and votes per participant and in total, and"
            " the most people online at once. `csv`: one row per participant"
            " (`id,nickname,messages,questions,votes`).",
            {"200": {"description": "The statistics.", "content": {
                "application/json": {"schema": _schema("Stats")},
                "text/csv": {"schema": {"type": "string"}}}}},
            errors={400: ("bad_request",), 401: ("unauthorized",), 403: ("forbidden",),
                    404: ("not_found",)},
            parameters=[_query("format", "The format.", {
                "type": "string", "enum": ["json", "csv"], "default": "json"})],
            security=owner)},
        "/api/v1/rooms/{name}/participants": {"parameters": room, "get": _operation(
            "listParticipants", "rooms", "List participants",
            "The owner lists everyone who joined the room, muted or not.",
            {"200": _json("The participants.", _schema("Participants"))},
            errors={401: ("unauthorized",), 403: ("forbidden",), 404: ("not_found",)},
            security=owner)},
        "/api/v1/rooms/{name}/participants/{id}/mute": {
            "parameters": [*room, {"name": "id", "in": "path", "required": True,
                                   "description": "The participant's id.",
                                   "schema": {"type": "string", "maxLength": 64}}],
            "post": _operation(
                "muteParticipant", "rooms", "Mute a participant",
                "The owner mutes a participant: their posts are refused with `muted`"
                " until they are unmuted; they can still read. Idempotent.",
                {"204": {"description": "Muted."}},
                errors={401: ("unauthorized",), 403: ("forbidden",), 404: ("not_found",)},
                security=owner),
            "delete": _operation(
                "unmuteParticipant", "rooms", "Unmute a participant",
                "The owner lets a muted participant post again. Idempotent.",
                {"204": {"description": "Unmuted."}},
                errors={401: ("unauthorized",), 403: ("forbidden",), 404: ("not_found",)},
                security=owner),
        },
        "/api/v1/rooms/{name}/join": {"parameters": room, "post": _operation(
            "joinRoom", "rooms", "Join a room",
            "Takes a nickname in the room and returns a participant token for posting"
            " (returned only here). Paused rooms can be joined; closed ones cannot.",
            {"201": _json("Joined.", _schema("Joined"))},
            errors={400: ("bad_request",), 401: ("unauthorized",), 403: ("room_closed",),
                    404: ("not_found",), 409: ("name_taken",), 429: ("rate_limited",)},
            body="Join")},
        "/api/v1/rooms/{name}/messages": {
            "parameters": room,
            "get": _operation(
                "listMessages", "messages", "List messages",
                "Messages with seq greater than `after`, ascending, at most `limit` of"
                " them. Page through a room by passing the last seq received as `after`."
                " A password room needs a participant or owner token; other rooms need"
                " none.",
                {"200": _json("A page of messages.", _schema("MessagePage"))},
                errors={400: ("bad_request",), 401: ("unauthorized",),
                        404: ("not_found",)},
                parameters=[
                    _query("after", "Return messages with seq greater than this.",
                           _integer("A seq.", 0, _MAX_SEQ, default=0)),
                    _query("limit", "The most messages to return.",
                           _integer("A count.", 1, 1000, default=100)),
                ],
                security=read_auth),
            "post": _operation(
                "postMessage", "messages", "Post a message",
                "Posts as the participant whose token is given (with `host: true` and the"
                " owner token, as the host). The body is trimmed and must then be"
                " 1..`max_length` characters. The message reaches live clients after it is"
                " committed. In a `pre` room, or with restricted words the owner holds,"
                " the post waits for approval: `202` with no seq yet.",
                {"201": _json("The committed message, with its seq.", _schema("Message")),
                 "202": _json("Held for the owner's approval.", _schema("HeldPost"))},
                errors={400: ("bad_request", "empty", "too_long", "restricted", "qa_off"),
                        401: ("unauthorized",),
                        403: ("forbidden", "room_closed", "room_paused", "muted",
                              "room_locked"),
                        404: ("not_found",), 429: ("rate_limited",)},
                body="PostMessage", security=[{"bearerAuth": []}]),
        },
        "/api/v1/rooms/{name}/transcript": {"parameters": room, "get": _operation(
            "getTranscript", "messages", "Download the transcript",
            "The room's whole transcript as a file to keep (`Content-Disposition: attachment;"
            ' filename="NAME-transcript.EXT"`): every message not deleted, ascending by'
            " seq, all times UTC. `txt`: a header, then one line per message"
            " (`[2026-11-24 17:00:00Z] ada: Is light a wave?`; further lines of a body"
            " are indented). `json`: a `Transcript`. `csv`: the columns"
            " `seq,created_at,kind,author,body,source_url`; a cell starting with `=`,"
            " `+`, `-`, `@`, tab or carriage return gets a leading `'` so that"
            " spreadsheets do not run it as a formula. `html`: a standalone page for"
            " reading and printing. A password room needs a participant or owner token,"
            " as for listing messages.",
            {"200": {
                "description": "The transcript.",
                "headers": {"Content-Disposition": {
                    "description": "`attachment` with the file name.",
                    "schema": {"type": "string"}}},
                "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/json": {"schema": _schema("Transcript")},
                    "text/csv": {"schema": {"type": "string"}},
                    "text/html": {"schema": {"type": "string"}},
                }}},
            errors={400: ("bad_request",), 401: ("unauthorized",), 403: ("forbidden",),
                    404: ("not_found",)},
            parameters=[_query("format", "The file format.", {
                "type": "string", "enum": ["txt", "json", "csv", "html"], "default": "txt"}),
                _query("stats", "With the owner token: add the participation statistics"
                       " (`txt`, `html`: a closing section; `json`: `stats`).",
                       {"type": "boolean", "default": False})],
            security=read_auth)},
        "/api/v1/rooms/{name}/qr.svg": {"parameters": room, "get": _operation(
            "roomQrCode", "pages", "The room's QR code",
            "The room's join link (`--public-url` followed by `/NAME`; without"
            " `--public-url`, built from the request's scheme and `Host`) as a QR code in"
            " SVG, black on white, sized by its `viewBox`; its `<title>` is `Join at URL`."
            " Cacheable for an hour; answers 304 to a matching `If-None-Match`.",
            {"200": {"description": "The QR code.",
                     "headers": {
                         "Cache-Control": {"schema": {"type": "string"}},
                         "ETag": {"schema": {"type": "string"}}},
                     "content": {"image/svg+xml": {"schema": {"type": "string"}}}},
             "304": {"description": "Not modified: the client's copy is current."}},
            errors={400: ("bad_request",), 404: ("not_found",)})},
        "/api/v1/rooms/{name}/live": {"parameters": room, "get": _operation(
            "live", "live", "Live view (websocket)", _LIVE,
            {"101": {"description": "Switching Protocols: the websocket is open and the"
                     " first frame is `welcome`."},
             "400": _error(400, ("bad_request",)),
             "405": _error(405, ("method_not_allowed",))},
            parameters=[
                _query("since", "Send every message with seq greater than this first,"
                       " then live ones. Without it, the last 100 messages.",
                       _integer("A seq.", 0, _MAX_SEQ)),
                _query("token", "A participant token (enables posting; needed for a"
                       " password room), or the owner token (posts as the host, receives"
                       " the approval queue's frames).", {"type": "string"}),
                _query("room_id", "The `id` of the room the client followed: if it is not"
                       " this room's (the name was reused), `since` is ignored and the"
                       " welcome says `new_room`.", {"type": "string"}),
            ])},
        "/api/v1/rooms/{name}/events": {"parameters": room, "get": _operation(
            "events", "live", "Live view (server-sent events)", _EVENTS,
            {"200": {"description": "The event stream; the first event is `welcome`.",
                     "headers": {
                         "Cache-Control": {"schema": {"type": "string", "const": "no-cache"}},
                         "X-Accel-Buffering": {"schema": {"type": "string", "const": "no"}},
                     },
                     "content": {"text/event-stream": {"schema": {
                         "type": "object", "required": ["data"],
                         "description": "One event: `data` is a server frame as JSON, `id`"
                         " a seq (on `welcome` and `message` events).",
                         "properties": {"data": {"type": "string",
                                                 "contentMediaType": "application/json"},
                                        "id": {"type": "string", "pattern": "^[0-9]+$"}},
                         "examples": [{"id": "58", "data": '{"type":"message","message":{}}'}],
                     }}}}},
            errors={400: ("bad_request",), 401: ("unauthorized",), 404: ("not_found",)},
            parameters=[
                _query("since", "Send every message with seq greater than this first,"
                       " then live ones. Without it (and without `Last-Event-ID`), the"
                       " last 100 messages.", _integer("A seq.", 0, _MAX_SEQ)),
                _query("token", "A participant or owner token (needed for a password"
                       " room; the author's `pending`/`released` and the owner's `held`"
                       " frames come to them); `Authorization: Bearer` works too.",
                       {"type": "string"}),
                _query("room_id", "As for the websocket: the `id` of the room the client"
                       " followed; another id starts over (`new_room` in the welcome).",
                       {"type": "string"}),
                {"name": "Last-Event-ID", "in": "header", "required": False,
                 "description": "The last event id received: resume after that seq"
                 " (instead of `since`).", "schema": _integer("A seq.", 0, _MAX_SEQ)},
            ],
            security=read_auth)},
        "/replay/{path}": {
            "parameters": [{"name": "path", "in": "path", "required": True,
                            "description": "Appended to each downstream's base URL, with the"
                            " query string.", "schema": {"type": "string"}}],
            **{method: _operation(
                f"replay{method.capitalize()}", "replay", f"Replay a {method.upper()}",
                _REPLAY, {"202": _json("Accepted (and, with the outbox on, stored).",
                                       _schema("Accepted"))},
                errors={401: ("unauthorized",), 404: ("not_found",),
                        405: ("method_not_allowed",), 413: ("payload_too_large",)},
                security=[{"bearerAuth": []}])
               for method in ("post", "put", "patch", "delete")},
        },
        "/healthz": {"get": _operation(
            "health", "operations", "Health check",
            "Liveness and database check, for load balancers and monitoring.",
            {"200": _json("Healthy.", _object(
                {"status": {"type": "string", "const": "ok"},
                 "plugins": {
                     "type": "object",
                     "description": "Each enabled plugin's state (a plugin's trouble is not"
                     " the daemon's: it is shown here, with status still ok).",
                     "additionalProperties": _object({
                         "state": {"type": "string",
                                   "examples": ["starting", "running", "failed", "stopped"]},
                         "detail": {"type": ["string", "null"]}})}},
                required=["status"])),
             "503": _json("Not healthy; the body says why.", _object(
                 {"status": {"type": "string", "const": "unavailable"},
                  "error": _schema("ErrorDetail")}))})},
        "/metrics": {"get": _operation(
            "metrics", "operations", "Metrics",
            "The daemon's metrics in the Prometheus text format: HTTP requests by route"
            " template and status, posts and their latency, store call latency, websocket"
            " connections and frames, live rooms, and each replay queue. With"
            " `--metrics-listen`, they are served on that endpoint instead, and this answers"
            " 404.",
            {"200": {"description": "The metrics (`text/plain; version=0.0.4`).",
                     "content": {"text/plain": {"schema": {"type": "string"}}}},
             "404": _error(404, ("not_found",))})},
        "/api/v1/openapi.json": {"get": _operation(
            "openapi", "operations", "This document", "The OpenAPI description of this API.",
            {"200": _json("An OpenAPI 3.1 document.", {"type": "object"})})},
        "/": {"get": _operation(
            "homePage", "pages", "Browser page: create a room", "The browser page.",
            {"200": _html()})},
        "/{name}": {"parameters": room, "get": _operation(
            "roomPage", "pages", "Browser page: a room",
            "The browser page to join and chat in room `name`.",
            {"200": _html(), "404": _html("The same page, for a name no room can have.")})},
        "/{name}/present": {"parameters": room, "get": _operation(
            "presentPage", "pages", "Browser page: the projector view",
            "A read-only view of room `name` for a projector: large type, the newest"
            " messages or the top questions, the pinned question, the join link and its"
            " QR code.",
            {"200": _html(), "404": _html("The same page, for a name no room can have.")})},
    }


def _held_id() -> JSON:
    return {"name": "id", "in": "path", "required": True,
            "description": "The held post's id.", "schema": {"type": "string", "maxLength": 64}}


def _html(description: str = "An HTML page.") -> JSON:
    return {"description": description,
            "content": {"text/html": {"schema": {"type": "string"}}}}


def openapi_document(version: str) -> dict[str, Any]:
    """
    The OpenAPI 3.1.0 document describing tmd's HTTP API, as JSON-ready data.

    C{version} is tmd's version, reported as C{info.version}. Every call builds a
    new document, so callers may change theirs freely.
    """
    return {
        "openapi": "3.1.0",
        "info": {"title": "tmd", "version": version, "description": _INTRODUCTION,
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "tags": [
            {"name": "rooms", "description": "Create, inspect and join rooms."},
            {"name": "messages", "description": "Read and post messages."},
            {"name": "questions", "description": "Questions, votes, answered and pinned."},
            {"name": "moderation", "description": "The approval queue and restricted words."},
            {"name": "live", "description": "The live view: a websocket, or server-sent"
             " events where websockets do not pass."},
            {"name": "replay", "description": "The reflektor endpoint."},
            {"name": "operations", "description": "Health and this description."},
            {"name": "pages", "description": "The browser chat page."},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "responses": {name: _error_response(status)
                          for status, (name, _) in _ERROR_STATUSES.items()},
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "An owner token (from creating a room) or a participant"
                " token (from joining one)."}},
        },
    }
