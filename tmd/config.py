"""
The daemon's configuration: one frozen object, validated at start.

Precedence: command line, then the TOML file given with C{--config}, then defaults.
Sections for services that come later (C{[twitter]}, C{[replay]}, ...) are kept
as they are for their own services to read.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any

from attrs import evolve, field, fields, frozen

from tmd.limits import ConnectionLimits, Limits, Rate, TrustedProxies
from tmd.origins import origin

DEFAULT_LISTEN = "tcp:8080"
DEFAULT_DATABASE = "sqlite:tmd.sqlite3"


class ConfigError(ValueError):
    """The configuration is wrong; the message says how to fix it."""


DEFAULT_DB_POOL_SIZE = 4
MAX_DB_POOL_SIZE = 100
DEFAULT_PURGE_AFTER = 7 * 86_400
MAX_PURGE_AFTER = 10 * 365 * 86_400


DEFAULT_SHUTDOWN_TIMEOUT = 10
MAX_SHUTDOWN_TIMEOUT = 3600
MAX_SEND_BUFFER = 1024**3
LOG_FORMATS = ("text", "json")


@frozen
class Webhook:
    """A URL that receives every room event, signed with its own secret."""

    url: str
    secret: str = field(repr=False)


@frozen
class Replay:
    """The replay queue's settings: the reflektor endpoint, the outbox and the retry bounds."""

    token: str | None = field(default=None, repr=False)
    """The reflektor's bearer token; None: the endpoint is off."""
    downstreams: tuple[str, ...] = ()
    """Base URLs every accepted request is replayed to."""
    outbox: bool = False
    """Keep deliveries in the database until delivered (webhooks and replays)."""
    max_attempts: int = 300
    max_age: int = 86_400
    """Seconds after which an undelivered item is given up (dead-lettered)."""
    max_length: int = 10_000
    """Deliveries waiting per destination, at most; more are dropped (kept if the outbox is on)."""


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
    webhooks: tuple[Webhook, ...] = ()
    replay: Replay = field(factory=Replay)
    shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT
    """Seconds a stop waits for the replay queues to drain."""
    metrics_listen: str | None = None
    """An endpoint serving /metrics alone; None: /metrics is on the main endpoint."""
    log_format: str = "text"
    """C{text} (twistd's own) or C{json} (one object per line)."""
    connections: ConnectionLimits = field(factory=ConnectionLimits)


_TOP_LEVEL: dict[str, type] = {
    "listen": str, "database": str, "public_url": str, "db_pool_size": int,
    "db_password_file": str, "purge_after": int, "shutdown_timeout": int,
    "metrics_listen": str, "log_format": str, "max_connections": int,
    "max_connections_per_address": int, "header_timeout": int, "idle_timeout": int,
    "max_send_buffer": int,
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
    settings["db_pool_size"] = _count("db_pool_size, the database pool size (--db-pool-size)",
                                      settings.get("db_pool_size", DEFAULT_DB_POOL_SIZE),
                                      MAX_DB_POOL_SIZE)
    settings["purge_after"] = _seconds(
        "purge_after (--purge-after)", settings.get("purge_after", DEFAULT_PURGE_AFTER),
        MAX_PURGE_AFTER)
    settings["shutdown_timeout"] = _seconds(
        "shutdown_timeout (--shutdown-timeout)",
        settings.get("shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT), MAX_SHUTDOWN_TIMEOUT)
    settings["connections"] = _connections(settings, sections.pop("trusted_proxies", []),
                                           options.get("trusted_proxies", ()))
    settings["webhooks"] = _webhooks(sections.pop("webhooks", []))
    settings["replay"] = _replay(sections.pop("replay", {}))
    if settings.get("log_format", "text") not in LOG_FORMATS:
        raise ConfigError(f"log_format (--log-format) is text or json, not"
                          f" {settings['log_format']!r}.")
    if settings.get("db_password_file"):
        settings["db_password"] = read_secret(settings["db_password_file"])
    return Config(plugins=tuple(options.get("plugins", ())), sections=sections, **settings)


_KIND_NAMES = {str: "a string", int: "an integer"}


def _seconds(name: str, value: int | str, most: int) -> int:
    try:
        seconds = int(value)
    except ValueError:
        seconds = -1
    if not 0 <= seconds <= most:
        raise ConfigError(
            f"{name} must be a number of seconds from 0 to {most}, not {value!r}.")
    return seconds


def _connections(settings: dict[str, Any], listed: Any,
                 options: Iterable[str]) -> ConnectionLimits:
    """The connection limits, taken out of C{settings}, and the trusted proxies."""
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise ConfigError("trusted_proxies is a list of addresses or networks.")
    try:
        trusted = TrustedProxies.parse([*listed, *options])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    default = ConnectionLimits()
    counts = {}
    for key, name, most in [("max_connections", "total", 1_000_000),
                            ("max_connections_per_address", "per_address", 1_000_000),
                            ("header_timeout", "header_timeout", 3600),
                            ("idle_timeout", "idle_timeout", 3600),
                            ("max_send_buffer", "max_send_buffer", MAX_SEND_BUFFER)]:
        value = settings.pop(key, getattr(default, name))
        flag = key.replace("_", "-")
        counts[name] = _count(f"{key} (--{flag})", value, most)
    return ConnectionLimits(trusted=trusted, **counts)


def _count(name: str, value: int | str, most: int) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= most:
        raise ConfigError(f"{name} must be a whole number from 1 to {most}, not {value!r}.")
    return count


def _http_url(where: str, url: Any) -> str:
    if not isinstance(url, str) or origin(url) is None:
        raise ConfigError(f"{where}: {url!r} is not an http(s) URL.")
    return url


def _webhooks(listed: Any) -> tuple[Webhook, ...]:
    """The C{[[webhooks]]} tables: each a URL and a secret (inline or in a file)."""
    if not isinstance(listed, list) or not all(isinstance(t, dict) for t in listed):
        raise ConfigError("Write webhooks as [[webhooks]] tables with url and secret_file.")
    found = []
    for n, table in enumerate(listed, 1):
        where = f"webhook {n}"
        unknown = set(table) - {"url", "secret", "secret_file"}
        if unknown:
            raise ConfigError(f"{where}: unknown keys {sorted(unknown)}.")
        url = _http_url(f"{where} url", table.get("url"))
        if ("secret" in table) == ("secret_file" in table):
            raise ConfigError(f"{where} ({url}) needs a secret_file, or a secret, not both.")
        secret = table.get("secret")
        if "secret_file" in table:
            secret = read_secret(str(table["secret_file"]))
        if not isinstance(secret, str) or not secret:
            raise ConfigError(f"{where} ({url}): the secret must be a non-empty string.")
        found.append(Webhook(url, secret))
    return tuple(found)


_REPLAY_BOUNDS = {"max_attempts": (1, 1000), "max_age": (1, 30 * 86_400),
                  "max_length": (1, 10_000_000)}


def _replay(table: Any) -> Replay:
    """The C{[replay]} table; the token comes from C{token_file} or C{TMD_REPLAY_TOKEN}."""
    if not isinstance(table, dict):
        raise ConfigError("'replay' must be a table: [replay].")
    unknown = set(table) - {"token_file", "downstreams", "outbox", *_REPLAY_BOUNDS}
    if unknown:
        raise ConfigError(f"[replay]: unknown keys {sorted(unknown)}.")
    downstreams = table.get("downstreams", [])
    if not isinstance(downstreams, list):
        raise ConfigError("[replay] downstreams must be a list of base URLs.")
    settings: dict[str, Any] = {
        "downstreams": tuple(_http_url("[replay] downstreams", u) for u in downstreams)}
    if not isinstance(table.get("outbox", False), bool):
        raise ConfigError("[replay] outbox must be true or false.")
    settings["outbox"] = table.get("outbox", False)
    for key, (low, high) in _REPLAY_BOUNDS.items():
        value = table.get(key)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ConfigError(f"[replay] {key} must be an integer from {low} to {high}.")
            settings[key] = value
    token = os.environ.get("TMD_REPLAY_TOKEN")
    if "token_file" in table:
        token = read_secret(str(table["token_file"]))
    if bool(token) != bool(settings["downstreams"]):
        raise ConfigError("The reflektor endpoint needs both a token ([replay] token_file or"
                          " TMD_REPLAY_TOKEN) and downstreams; give both, or neither.")
    return Replay(token=token or None, **settings)


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
