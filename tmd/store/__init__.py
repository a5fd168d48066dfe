"""The Store: one interface (L{IStore}), an engine picked once from the database URL."""

from __future__ import annotations

from typing import Any

from tmd.store.interface import IStore
from tmd.store.postgres import PostgresStore, check_url
from tmd.store.sqlite import SQLiteStore

__all__ = ["IStore", "store_for"]


def store_for(database: str, reactor: Any, pool_size: int = 4,
              password: str | None = None) -> IStore:
    """
    The engine for C{database}: C{sqlite:PATH}, or C{postgresql://USER@HOST:PORT/DB}
    with a pool of C{pool_size} connections. Fails with C{ValueError} saying why.
    """
    scheme, _, rest = database.partition(":")
    if scheme == "sqlite" and rest:
        return SQLiteStore(rest, reactor)
    if scheme in ("postgresql", "postgres") and rest:
        check_url(database)
        return PostgresStore(database, reactor, pool_size, password)
    raise ValueError(
        f"Unsupported database {database!r}: use sqlite:PATH, for example sqlite:tmd.sqlite3,"
        " or postgresql://USER@HOST:PORT/DB."
    )
