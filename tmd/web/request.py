"""Requests whose bodies are bounded: past the limit the rest is dropped, not buffered."""

from __future__ import annotations

from io import BytesIO

from twisted.web.server import Request

MAX_BODY = 64 * 1024


class LimitedRequest(Request):
    """A request that keeps at most L{MAX_BODY} bytes of body and says if it saw more."""

    too_large = False
    content: BytesIO

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
