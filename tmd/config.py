"""
The daemon's configuration: one frozen object, validated at start.

Precedence: command line, then the TOML file given with C{--config}, then defaults.
Sections for services that come later (C{[twitter]}, C{[replay]}, ...) are kept
as they are for their own services to read.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any

from attrs import field, frozen

DEFAULT_LISTEN = "tcp:8080"
DEFAULT_DATABASE = "sqlite:tmd.sqlite3"


class ConfigError(ValueError):
    """The configuration is wrong; the message says how to fix it."""


DEFAULT_DB_POOL_SIZE = 4
MAX_DB_POOL_SIZE = 100


@frozen
class Config:
    listen: str = DEFAULT_LISTEN
    database: str = DEFAULT_DATABASE
    public_url: str | None = None
    db_pool_size: int = DEFAULT_DB_POOL_SIZE
    db_password_file: str | None = None
    db_password: str | None = field(default=None, repr=False)
    """Read from C{db_password_file} at start; else libpq finds it (URL, PGPASSWORD, .pgpass)."""
    plugins: tuple[str, ...] = ()
    sections: Mapping[str, Any] = field(factory=dict, repr=False)


_TOP_LEVEL: dict[str, type] = {
    "listen": str, "database": str, "public_url": str, "db_pool_size": int,
    "db_password_file": str,
}


def load(options: Mapping[str, Any]) -> Config:
    """The configuration from command-line C{options} over the file they name, if any."""
    settings: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    if options.get("config"):
        path = options["config"]
        try:
            with open(path, "rb") as f:
                document = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"Cannot read the configuration file {path}: {e.strerror}.") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"The configuration file {path} is not valid TOML: {e}.") from None
        for key, value in document.items():
            if key in _TOP_LEVEL:
                kind = _TOP_LEVEL[key]
                if not isinstance(value, kind) or isinstance(value, bool):
                    raise ConfigError(f"In {path}, '{key}' must be {_KIND_NAMES[kind]}.")
                settings[key] = value
            elif isinstance(value, dict | list):
                sections[key] = value
            else:
                raise ConfigError(f"In {path}, '{key}' is not a setting tmd knows.")
    for key in _TOP_LEVEL:
        value = options.get(key.replace("_", "-"))
        if value is not None:
            settings[key] = value
    settings["db_pool_size"] = _pool_size(settings.get("db_pool_size", DEFAULT_DB_POOL_SIZE))
    if settings.get("db_password_file"):
        settings["db_password"] = read_secret(settings["db_password_file"])
    return Config(plugins=tuple(options.get("plugins", ())), sections=sections, **settings)


_KIND_NAMES = {str: "a string", int: "an integer"}


def _pool_size(value: int | str) -> int:
    try:
        size = int(value)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_DB_POOL_SIZE:
        raise ConfigError(f"The database pool size must be from 1 to {MAX_DB_POOL_SIZE}.")
    return size


def read_secret(path: str) -> str:
    """A secret kept in a file: read once at start, surrounding whitespace stripped."""
    try:
        with open(path, encoding="utf-8") as f:
            secret = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "it is not UTF-8 text"
        raise ConfigError(f"Cannot read the secret file {path}: {reason}.") from None
    if not secret:
        raise ConfigError(f"The secret file {path} is empty.")
    return secret
