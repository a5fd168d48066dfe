"""The Store: one interface (L{IStore}), an engine picked once from the database URL."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorFromThreads

from tmd.store.interface import IStore
from tmd.store.sqlite import SQLiteStore

__all__ = ["IStore", "store_for"]


def store_for(database: str, reactor: IReactorFromThreads) -> IStore:
    """The engine for C{database}: C{sqlite:PATH} (PostgreSQL comes later)."""
    scheme, _, rest = database.partition(":")
    if scheme == "sqlite" and rest:
        return SQLiteStore(rest, reactor)
    raise ValueError(
        f"Unsupported database {database!r}: use sqlite:PATH, for example sqlite:tmd.sqlite3."
    )
