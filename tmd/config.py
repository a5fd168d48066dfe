"""
The daemon's configuration: one frozen object, validated at start.

Precedence: command line, then the TOML file given with C{--config}, then defaults.
Sections for services that come later (C{[twitter]}, C{[replay]}, ...) are kept
as they are for their own services to read.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from attrs import evolve, field, fields, frozen

from tmd.limits import Limits, Rate
from tmd.origins import origin

DEFAULT_LISTEN = "tcp:8080"
DEFAULT_DATABASE = "sqlite:tmd.sqlite3"


class ConfigError(ValueError):
    """The configuration is wrong; the message says how to fix it."""


DEFAULT_DB_POOL_SIZE = 4
MAX_DB_POOL_SIZE = 100
DEFAULT_PURGE_AFTER = 7 * 86_400
MAX_PURGE_AFTER = 10 * 365 * 86_400


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
    limits: Limits = field(factory=Limits)
    allowed_origins: tuple[str, ...] = ()
    """Origins (C{https://host[:port]}) whose pages may open live sockets, besides public_url's."""
    purge_after: int = DEFAULT_PURGE_AFTER
    """Seconds after a room expires before it is deleted with its messages (0: at once)."""


_TOP_LEVEL: dict[str, type] = {
    "listen": str, "database": str, "public_url": str, "db_pool_size": int,
    "db_password_file": str, "purge_after": int,
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
    settings["allowed_origins"] = _origins(
        sections.pop("allowed_origins", []), options.get("allowed_origins", ()))
    if settings.get("public_url") and origin(settings["public_url"]) is None:
        raise ConfigError(f"public_url {settings['public_url']!r} is not an http(s) URL with a"
                          " host, such as https://chat.example.org.")
    settings["limits"] = _limits(sections.pop("limits", {}), options.get("limits", ()))
    settings["db_pool_size"] = _pool_size(settings.get("db_pool_size", DEFAULT_DB_POOL_SIZE))
    settings["purge_after"] = _purge_after(settings.get("purge_after", DEFAULT_PURGE_AFTER))
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


def _purge_after(value: int | str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        seconds = -1
    if not 0 <= seconds <= MAX_PURGE_AFTER:
        raise ConfigError(
            f"purge_after (--purge-after) must be a number of seconds from 0 to {MAX_PURGE_AFTER}"
            f" (10 years), not {value!r}.")
    return seconds


def _limits(table: Any, overrides: Iterable[str]) -> Limits:
    """The rate limits: the C{[limits]} table, then C{--limit NAME=RATE} options."""
    if not isinstance(table, dict):
        raise ConfigError("'limits' must be a table: [limits].")
    rates = {**table, **dict(o.partition("=")[::2] for o in overrides)}
    names = [a.name for a in fields(Limits)]
    chosen: dict[str, Rate | None] = {}
    for name, text in rates.items():
        if name not in names:
            raise ConfigError(
                f"There is no rate limit {name!r}; the limits are {', '.join(names)}.")
        if not isinstance(text, str):
            raise ConfigError(f"The limit {name} must be a string such as \"10/15s\" or \"off\".")
        try:
            chosen[name] = Rate.parse(text)
        except ValueError as e:
            raise ConfigError(f"The limit {name}: {e}.") from None
    return evolve(Limits(), **chosen)


def _origins(listed: Any, options: Iterable[str]) -> tuple[str, ...]:
    """The allowed origins, each checked: the TOML list, then C{--allow-origin}."""
    if not isinstance(listed, list):
        raise ConfigError("'allowed_origins' must be a list of origins such as"
                          ' ["https://chat.example.org"].')
    found = []
    for value in [*listed, *options]:
        if not isinstance(value, str) or origin(value) is None:
            raise ConfigError(f"The allowed origin {value!r} is not an http(s) origin such as"
                              " https://chat.example.org.")
        found.append(value)
    return tuple(found)


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
