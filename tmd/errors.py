"""
Errors are values with codes.

Every failure a client can cause is an L{ApiError} carrying the HTTP status and the
API's snake_case code (see API.md), so the web, websocket and any other protocol
can translate it the same way.
"""

from __future__ import annotations


class ApiError(Exception):
    """A failure to report to the client: an HTTP status, a code and a human message."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class BadRequest(ApiError):
    status, code = 400, "bad_request"


class InvalidName(ApiError):
    status, code = 400, "invalid_name"


class Empty(ApiError):
    status, code = 400, "empty"


class TooLong(ApiError):
    status, code = 400, "too_long"


class RestrictedWord(ApiError):
    status, code = 400, "restricted"


class QaOff(ApiError):
    status, code = 400, "qa_off"


class NotAQuestion(ApiError):
    status, code = 400, "not_a_question"


class Unauthorized(ApiError):
    status, code = 401, "unauthorized"


class Forbidden(ApiError):
    status, code = 403, "forbidden"


class RoomClosed(ApiError):
    status, code = 403, "room_closed"


class RoomPaused(ApiError):
    status, code = 403, "room_paused"


class RoomLocked(ApiError):
    status, code = 403, "room_locked"


class Muted(ApiError):
    status, code = 403, "muted"


class NotFound(ApiError):
    status, code = 404, "not_found"


class MethodNotAllowed(ApiError):
    status, code = 405, "method_not_allowed"


class NameTaken(ApiError):
    status, code = 409, "name_taken"


class PayloadTooLarge(ApiError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(ApiError):
    status, code = 415, "bad_request"


class RateLimited(ApiError):
    status, code = 429, "rate_limited"


class Internal(ApiError):
    status, code = 500, "internal"


class Unavailable(ApiError):
    status, code = 503, "unavailable"
