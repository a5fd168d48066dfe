"""
Requests as tmd takes them: bodies bounded (past the limit the rest is dropped,
not buffered) and never parsed as forms, security headers on every response, each
counted by the template of its route, and logged without its query string.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any
from urllib.parse import unquote_to_bytes

from klein import Klein
from twisted.logger import Logger
from twisted.web import http
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site

from tmd.errors import BadRequest
from tmd.metrics import UNMATCHED, Metrics
from tmd.wire import encode, error_json

MAX_BODY = 64 * 1024

access_log = Logger(namespace="tmd.access")

SECURITY_HEADERS = {
    # Scripts, styles and connections from this origin only, none inline: an injected
    # tag can run nothing. No framing (clickjacking), no plugins, no <base> tricks.
    b"Content-Security-Policy": b"default-src 'self'; script-src 'self'; style-src 'self';"
    b" img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none';"
    b" form-action 'self'; frame-ancestors 'none'",
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"no-referrer",
    b"Cross-Origin-Opener-Policy": b"same-origin",
}


class LimitedRequest(Request):
    """A request that keeps at most L{MAX_BODY} bytes of body and says if it saw more."""

    too_large = False
    content: BytesIO

    def __init__(self, channel: http.HTTPChannel, *args: Any, **kwargs: Any) -> None:
        # tmd's bodies are JSON: a form body (urlencoded or multipart) is never parsed
        # into request.args, which keeps to the query string (and saves a parse per post).
        super().__init__(channel, *args, parsePOSTFormSubmission=False, **kwargs)

    def process(self) -> None:
        for name, value in SECURITY_HEADERS.items():  # routes may set their own over these
            self.setHeader(name, value)
        try:  # Klein would log a traceback and answer in plain text
            unquote_to_bytes(self.path).decode("utf-8")
            self.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            self.setResponseCode(400)
            self.setHeader(b"Content-Type", b"application/json; charset=utf-8")
            self.write(encode(error_json(BadRequest("The path or host is not valid UTF-8."))))
            self.finish()
            return
        super().process()

    def gotLength(self, length: int | None) -> None:
        self.content = BytesIO()  # never a temporary file: we keep 64 KiB at most
        self.too_large = length is not None and length > MAX_BODY

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        if self.content.tell() + len(data) > MAX_BODY:
            self.too_large = True
            self.content = BytesIO()
            return
        self.content.write(data)


class RoutedKlein(Klein):
    """Klein that tells each request the template of the route it took, for metrics."""

    def __init__(self) -> None:
        super().__init__()
        self._templates: dict[str, str] = {}

    def execute_endpoint(self, endpoint: str, request: IRequest, *args: Any,
                         **kwargs: Any) -> Any:
        template = self._templates.get(endpoint)
        if template is None:
            rule = next(self.url_map.iter_rules(endpoint)).rule
            template = self._templates[endpoint] = rule.replace("<path:__rest__>", "<path>")
        request.route = template  # type: ignore[attr-defined]
        return super().execute_endpoint(endpoint, request, *args, **kwargs)


class MeasuredSite(Site):
    """
    A site that counts every answered request by route template and status, and logs
    it (the access log) as a structured event, without its query string.
    """

    def __init__(self, resource: IResource, metrics: Metrics) -> None:
        super().__init__(resource, requestFactory=LimitedRequest)
        self.displayTracebacks = False
        self._metrics = metrics

    def log(self, request: http.Request) -> None:
        route = getattr(request, "route", UNMATCHED)
        self._metrics.http_request(route, request.method, request.code)
        client = getattr(request.getClientAddress(), "host", "-")
        method = request.method.decode("latin-1")
        path = request.uri.split(b"?", 1)[0].decode("latin-1")  # queries may hold tokens
        protocol = request.clientproto.decode("latin-1")
        status, size = request.code, request.sentLength
        referer = request.getHeader(b"referer")
        referer_text = referer.split(b"?", 1)[0].decode("latin-1") if referer else "-"
        agent = (request.getHeader(b"user-agent") or b"-").decode("latin-1")
        # The line is formatted here, once: the logger's format string is then trivial
        # to parse. (The JSON log takes its "text" from the format, not this field.)
        access_log.info(
            "{text}",
            text=f'"{client}" - - "{method} {path} {protocol}" {status} {size}'
                 f' "{referer_text}" "{agent}"',
            client=client, method=method, path=path, protocol=protocol, status=status,
            size=size, route=route, referer=referer_text, agent=agent)
