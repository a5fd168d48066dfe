"""Numbered schema migrations, one folder of C{NNNN_name.sql} files per engine."""

from __future__ import annotations

from importlib.resources import files

from attrs import frozen


@frozen
class Migration:
    version: int
    name: str
    sql: str


def migrations(engine: str) -> list[Migration]:
    """Every migration for C{engine}, in order. Reads files: call it off the reactor."""
    found = []
    for entry in files(__name__).joinpath(engine).iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest[: -len(".sql")], entry.read_text("utf-8")))
    return sorted(found, key=lambda m: m.version)
