"""
A fast downstream for the replay bench, run in its own process (its own reactor):

    python bench/downstream.py

It listens on a free loopback port, says "downstream listening on TCP 127.0.0.1:PORT"
on stdout, answers every request 200 at once and counts it, except C{GET /count},
which answers JSON: C{count} (requests taken), C{distinct} (distinct C{X-Tmd-Delivery}
ids among them), C{unexpected} (requests not C{POST /in/...} with an
C{X-Tmd-Delivery}), and C{first} and C{last}, the C{time.monotonic()} of the first
and last counted request (CLOCK_MONOTONIC: comparable with the bench's own clock).
It stops on SIGTERM.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Request, Site


class Counter(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.ids: set[bytes] = set()
        self.unexpected = 0
        self.first: float | None = None
        self.last: float | None = None

    def render(self, request: Request) -> bytes:
        if request.method == b"GET" and request.path == b"/count":
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps({"count": self.count, "distinct": len(self.ids),
                               "unexpected": self.unexpected, "first": self.first,
                               "last": self.last}).encode()
        now = time.monotonic()
        self.count += 1
        if self.first is None:
            self.first = now
        self.last = now
        delivery = request.getHeader(b"X-Tmd-Delivery")
        if delivery is None or request.method != b"POST" or not request.path.startswith(b"/in/"):
            self.unexpected += 1
        else:
            self.ids.add(delivery.encode() if isinstance(delivery, str) else delivery)
        return b"ok"


def main() -> None:
    site = Site(Counter())
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    r: Any = reactor
    port = r.listenTCP(0, site, interface="127.0.0.1")
    print(f"downstream listening on TCP 127.0.0.1:{port.getHost().port}", flush=True)
    r.run()


if __name__ == "__main__":
    sys.exit(main())
