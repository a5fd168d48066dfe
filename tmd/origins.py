"""
Origins: which web pages may open live sockets, against cross-site websocket hijacking.

Browsers send the page's C{Origin} with every websocket handshake. Sockets from
other sites' pages are refused, so no other site can have its visitors' browsers
talk to tmd in their name.
"""

from __future__ import annotations

from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(url: str) -> str | None:
    """The origin of an http(s) URL as C{scheme://host:port}, lower-case; None if it has none."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in _DEFAULT_PORTS or not parts.hostname:
        return None
    scheme = parts.scheme.lower()
    return f"{scheme}://{parts.hostname.lower()}:{port or _DEFAULT_PORTS[scheme]}"


def origin_allowed(sent: str | None, host: str | None, allowed: frozenset[str]) -> bool:
    """
    May a page from origin C{sent} open a socket here? Clients that send no Origin
    are not browsers, so cross-site hijacking is no concern with them. Otherwise the
    origin must be one of C{allowed} (normalised by L{origin}) or, if none is
    configured, the very host the request was sent to (its C{Host} header).
    """
    if sent is None:
        return True
    found = origin(sent)
    if found is None:
        return False  # "null" (a sandboxed page, a file) and the malformed
    if allowed:
        return found in allowed
    scheme = found.split(":", 1)[0]
    same_host = origin(f"{scheme}://{host}") if host else None
    return found == same_host
