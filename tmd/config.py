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


@frozen
class Config:
    listen: str = DEFAULT_LISTEN
    database: str = DEFAULT_DATABASE
    public_url: str | None = None
    plugins: tuple[str, ...] = ()
    sections: Mapping[str, Any] = field(factory=dict, repr=False)


_TOP_LEVEL = {"listen": str, "database": str, "public_url": str}


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
                if not isinstance(value, _TOP_LEVEL[key]):
                    raise ConfigError(f"In {path}, '{key}' must be a string.")
                settings[key] = value
            elif isinstance(value, dict | list):
                sections[key] = value
            else:
                raise ConfigError(f"In {path}, '{key}' is not a setting tmd knows.")
    for key in _TOP_LEVEL:
        value = options.get(key.replace("_", "-"))
        if value is not None:
            settings[key] = value
    return Config(plugins=tuple(options.get("plugins", ())), sections=sections, **settings)
