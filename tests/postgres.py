"""
The real PostgreSQL for tests: a fresh schema per test, dropped at its end.

The server comes from C{TMD_TEST_POSTGRES} (C{.ci/run} sets it to the machine's
own, C{postgresql://postgres@127.0.0.1:5432/test}); without it, tests that need
PostgreSQL skip and say so. Each test gets a schema of its own, named in the URL
(C{options=-csearch_path=...}), so runs and parallel workers never meet.
"""

from __future__ import annotations

import os
import secrets
from contextlib import closing
from typing import Any
from urllib.parse import quote

import psycopg2
from psycopg2.extensions import parse_dsn
from twisted.protocols import portforward
from twisted.trial.unittest import SkipTest, SynchronousTestCase

ENVIRONMENT = "TMD_TEST_POSTGRES"


def server_url() -> str:
    """The test server's URL, or skip the test, saying how to run it."""
    url = os.environ.get(ENVIRONMENT)
    if not url:
        raise SkipTest(f"{ENVIRONMENT} is not set: set it to a PostgreSQL URL such as"
                       " postgresql://postgres@127.0.0.1:5432/test to run this test.")
    return url


def execute(url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement with a short-lived connection of its own (as another client would)."""
    with closing(psycopg2.connect(url)) as db:
        db.autocommit = True
        with db.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchall() if cursor.description is not None else []


def fresh_schema(test: SynchronousTestCase) -> str:
    """
    A URL whose connections use a new, empty schema of C{test}'s own; the schema is
    dropped when the test ends.
    """
    url = server_url()
    schema = f"tmd_test_{secrets.token_hex(6)}"
    execute(url, f"CREATE SCHEMA {schema}")
    test.addCleanup(execute, url, f"DROP SCHEMA {schema} CASCADE")
    separator = "&" if "?" in url else "?"
    # The schema names the connections too, so that a test can find (and kill) its own.
    return (f"{url}{separator}options={quote(f'-csearch_path={schema}')}"
            f"&application_name={schema}")


def terminate(url: str) -> int:
    """Kill every connection made with C{url} (as a database restart would); how many."""
    rows = execute(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE application_name = %s AND pid <> pg_backend_pid()",
                   parse_dsn(url)["application_name"])
    return len(rows)


class _Forward(portforward.ProxyServer):
    factory: Outage

    def connectionMade(self) -> None:
        self.factory.open.add(self)
        super().connectionMade()

    def connectionLost(self, reason: Any) -> None:
        self.factory.open.discard(self)
        super().connectionLost(reason)


class Outage(portforward.ProxyFactory):
    """
    A TCP proxy in front of PostgreSQL that a test takes down (every connection cut,
    new ones refused, as when the server stops) and brings back, on the same port.
    """

    protocol = _Forward

    def __init__(self, url: str) -> None:
        dsn = parse_dsn(url)
        super().__init__(dsn.get("host", "127.0.0.1"), int(dsn.get("port", 5432)))
        self.open: set[_Forward] = set()
        self._url = url
        self._listening: Any = None
        self.listening_port = 0

    @property
    def url(self) -> str:
        """C{url}, through the proxy."""
        dsn = parse_dsn(self._url)
        return self._url.replace(f"{dsn.get('host')}:{dsn.get('port')}",
                                 f"127.0.0.1:{self.listening_port}")

    async def up(self) -> None:
        from twisted.internet import reactor

        self._listening = reactor.listenTCP(  # type: ignore[attr-defined]
            self.listening_port, self, interface="127.0.0.1")
        self.listening_port = self._listening.getHost().port

    async def down(self) -> None:
        if self._listening is not None:
            await self._listening.stopListening()
            self._listening = None
        for connection in list(self.open):
            if connection.peer is not None:
                connection.peer.transport.abortConnection()
            connection.transport.abortConnection()
