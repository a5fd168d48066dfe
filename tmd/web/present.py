"""
The projector view's QR code: the room's public join link as an SVG, made with segno.

The link is built from C{--public-url} when the operator set one (behind a proxy that
is the only address people can reach), else from the host the request was sent to.
The SVG's C{<title>} says the link too, so the page can show it beside the code and
screen readers can read it out.
"""

from __future__ import annotations

import hashlib
import io
import re
from functools import lru_cache

import segno
from twisted.web import http
from twisted.web.iweb import IRequest

from tmd.errors import BadRequest

QR_MAX_AGE = 3600
"""Seconds a QR code may be cached: a room's link changes only with --public-url."""

_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?")


def join_url(request: IRequest, public_url: str | None, room: str) -> str:
    """The link that takes people to room C{room} (a stored, lower-case name)."""
    if public_url:
        return f"{public_url.rstrip('/')}/{room}"
    host = (request.getHeader(b"host") or b"").decode("latin-1")
    if not _HOST.fullmatch(host):
        raise BadRequest("Send a valid Host header (or run tmd with --public-url).")
    scheme = "https" if request.isSecure() else "http"
    return f"{scheme}://{host.lower()}/{room}"


@lru_cache(maxsize=256)
def qr_svg(url: str) -> bytes:
    """C{url} as a QR code: black on white with the standard quiet zone, sized by its viewBox."""
    code = segno.make_qr(url, error="m")
    out = io.BytesIO()
    code.save(out, kind="svg", scale=1, border=4, dark="#000", light="#fff", xmldecl=False,
              omitsize=True, title=f"Join at {url}", nl=False)
    return out.getvalue()


def qr_response(request: IRequest, url: str, varies_by_host: bool) -> bytes:
    """Answer with the QR code of C{url}, cacheable, or 304 if the client has it already."""
    svg = qr_svg(url)
    request.setHeader(b"Content-Type", b"image/svg+xml")
    request.setHeader(b"Cache-Control", f"public, max-age={QR_MAX_AGE}".encode("ascii"))
    if varies_by_host:
        request.setHeader(b"Vary", b"Host")
    etag = b'"' + hashlib.sha256(svg).hexdigest()[:32].encode("ascii") + b'"'
    if request.setETag(etag) == http.CACHED:
        return b""
    return svg
