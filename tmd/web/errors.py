"""One translation of errors to HTTP: API errors to their JSON body, the rest to a logged 500."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import RequestRedirect

from tmd import errors
from tmd.wire import encode, error_json

log = Logger()


def json_response(request: IRequest, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    return encode(body)


def api_error(request: IRequest, error: errors.ApiError) -> bytes:
    if error.retry_after is not None:
        request.setHeader(b"Retry-After", str(error.retry_after).encode("ascii"))
    return json_response(request, error.status, error_json(error))


def add_error_handling(app: Any) -> None:
    """
    Register, on a Klein app kept in a class, the handlers that give every error the
    API's body. (Klein passes the instance first: C{_web}.)
    """

    @app.handle_errors(errors.ApiError)
    def known(_web: object, request: IRequest, failure: Failure) -> bytes:
        assert isinstance(failure.value, errors.ApiError)
        return api_error(request, failure.value)

    @app.handle_errors(HTTPException)
    def routing(_web: object, request: IRequest, failure: Failure) -> bytes:
        exception = failure.value
        assert isinstance(exception, HTTPException)
        if isinstance(exception, RequestRedirect):  # '//' merged: say where (on this host)
            target = urlsplit(exception.new_url)
            location = target.path + (f"?{target.query}" if target.query else "")
            request.setHeader(b"Location", location.encode("ascii"))
            request.setResponseCode(exception.code)
            return b""
        if isinstance(exception, MethodNotAllowed) and request.method == b"OPTIONS":
            # What may I do here? (RFC 9110 9.3.7). No CORS: pages of other sites get nothing more.
            allowed = ", ".join([*(exception.valid_methods or ()), "OPTIONS"])
            request.setHeader(b"Allow", allowed.encode("ascii"))
            request.setResponseCode(204)
            return b""
        if isinstance(exception, MethodNotAllowed):
            allowed = ", ".join(exception.valid_methods or ())
            request.setHeader(b"Allow", allowed.encode("ascii"))
            return api_error(request, errors.MethodNotAllowed(f"Allowed methods: {allowed}."))
        if exception.code == 404:
            return api_error(request, errors.NotFound("There is nothing at this address."))
        error = errors.ApiError(exception.description or exception.name)
        error.status = exception.code or 400
        return api_error(request, error)

    @app.handle_errors(Exception)
    def unexpected(_web: object, request: IRequest, failure: Failure) -> bytes:
        log.failure("unhandled error in {method} {path}", failure,
                    method=request.method, path=request.path)
        return api_error(request, errors.Internal("Something went wrong on our side."))
