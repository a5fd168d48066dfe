"""
Requests as tmd takes them: bodies bounded (past the limit the rest is dropped,
not buffered), security headers on every response, and logged without their
query strings.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.web.http import combinedLogFormatter
from twisted.web.server import Request

MAX_BODY = 64 * 1024

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

    def process(self) -> None:
        for name, value in SECURITY_HEADERS.items():  # routes may set their own over these
            self.setHeader(name, value)
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


class _WithoutQueries:
    """A request as the access log sees it: no query strings, which may carry tokens."""

    def __init__(self, request: Request) -> None:
        self._request = request

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)

    @property
    def uri(self) -> bytes:
        return self._request.uri.split(b"?", 1)[0]

    def getHeader(self, name: bytes) -> bytes | None:
        value = self._request.getHeader(name)
        if value is not None and name.lower() == b"referer":
            return value.split(b"?", 1)[0]
        return value


def access_log_line(timestamp: str, request: Request) -> str:
    """The combined log format, with every query string left out."""
    return combinedLogFormatter(timestamp, _WithoutQueries(request))
