"""Tests for L{tmd.config.load}: defaults, the TOML file, and the command line over both."""

from __future__ import annotations

import os
from typing import Any

import attrs
from twisted.trial.unittest import SynchronousTestCase

from tmd.config import (
    DEFAULT_DATABASE,
    DEFAULT_LISTEN,
    Config,
    ConfigError,
    Replay,
    Webhook,
    load,
)
from tmd.limits import Limits, Rate

FULL = """\
listen = "tcp:9000:interface=127.0.0.1"
database = "sqlite:/var/lib/tmd/tmd.sqlite3"
public_url = "https://chat.example.org"

[twitter]
bearer_token_file = "/etc/tmd/twitter-token"
api_url = "https://api.x.com"

[[webhooks]]
url = "https://hooks.example.org/one"
secret = "s1"

[[webhooks]]
url = "https://hooks.example.org/two"
secret_file = "SECRETS/hook-secret"

[replay]
token_file = "SECRETS/replay-token"
downstreams = ["http://10.0.0.2:8000"]
outbox = true
max_attempts = 5
"""


class LoadTests(SynchronousTestCase):
    def write(self, text: str | bytes) -> str:
        """A configuration file holding C{text}; returns its path."""
        if isinstance(text, str) and "SECRETS/" in text:  # FULL: its secret files, made here
            secrets = self.mktemp()
            os.makedirs(secrets)
            for name, secret in (("hook-secret", "s2"), ("replay-token", " r-token\n")):
                with open(os.path.join(secrets, name), "w") as f:
                    f.write(secret)
            text = text.replace("SECRETS", secrets)
        path = self.mktemp() + ".toml"
        with open(path, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
        return path

    def refused(self, options: dict[str, Any]) -> str:
        """Loading C{options} fails with L{ConfigError}; returns its message."""
        return str(self.assertRaises(ConfigError, load, options))

    def test_defaults(self) -> None:
        """With no options and no file, every setting has its default."""
        config = load({})
        self.assertEqual(
            (config.listen, config.database, config.public_url, config.plugins, config.sections),
            ("tcp:8080", "sqlite:tmd.sqlite3", None, (), {}))
        self.assertEqual((DEFAULT_LISTEN, DEFAULT_DATABASE), ("tcp:8080", "sqlite:tmd.sqlite3"))

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 is a ConfigError naming the file."""
        path = self.write(b'public_url = "caf\xe9"\n')
        self.assertIn(path, self.refused({"config": path}))

    def test_options_none(self) -> None:
        """Options given as None (not on the command line) leave the defaults alone."""
        config = load({"config": None, "listen": None, "database": None, "public-url": None,
                       "plugins": []})
        self.assertEqual(config, Config())

    def test_file(self) -> None:
        """Top-level settings come from the TOML file."""
        config = load({"config": self.write(FULL)})
        self.assertEqual(
            (config.listen, config.database, config.public_url),
            ("tcp:9000:interface=127.0.0.1", "sqlite:/var/lib/tmd/tmd.sqlite3",
             "https://chat.example.org"))

    def test_sections(self) -> None:
        """Webhooks and the replay settings are read; other tables are kept in C{sections}."""
        config = load({"config": self.write(FULL)})
        self.assertEqual(sorted(config.sections), ["twitter"])
        self.assertEqual(config.sections["twitter"], {
            "bearer_token_file": "/etc/tmd/twitter-token", "api_url": "https://api.x.com"})
        self.assertEqual(config.webhooks, (
            Webhook("https://hooks.example.org/one", "s1"),
            Webhook("https://hooks.example.org/two", "s2")))
        self.assertEqual(config.replay, Replay(
            token="r-token", downstreams=("http://10.0.0.2:8000",), outbox=True, max_attempts=5))

    def test_partial_file(self) -> None:
        """Settings the file leaves out keep their defaults."""
        config = load({"config": self.write('public_url = "https://chat.example.org"\n')})
        self.assertEqual((config.listen, config.database, config.public_url),
                         (DEFAULT_LISTEN, DEFAULT_DATABASE, "https://chat.example.org"))

    def test_empty_file(self) -> None:
        """An empty file is a valid configuration of defaults."""
        self.assertEqual(load({"config": self.write("")}), Config())

    def test_options_override_file(self) -> None:
        """Command-line options win over the file, setting by setting."""
        config = load({
            "config": self.write(FULL), "listen": "tcp:8081", "database": "sqlite:other.sqlite3",
            "public-url": "https://other.example.org", "plugins": ["irc", "twitter"],
        })
        self.assertEqual(
            (config.listen, config.database, config.public_url, config.plugins),
            ("tcp:8081", "sqlite:other.sqlite3", "https://other.example.org", ("irc", "twitter")))
        self.assertIn("twitter", config.sections)

    def test_one_option_overrides(self) -> None:
        """An option overrides only its own setting; the rest still come from the file."""
        config = load({"config": self.write(FULL), "listen": "tcp:8081"})
        self.assertEqual((config.listen, config.database),
                         ("tcp:8081", "sqlite:/var/lib/tmd/tmd.sqlite3"))

    def test_missing_file(self) -> None:
        """A file that cannot be read is a ConfigError naming it."""
        path = os.path.join(self.mktemp(), "absent.toml")
        message = self.refused({"config": path})
        self.assertIn(path, message)
        self.assertIn("Cannot read", message)

    def test_directory(self) -> None:
        """A directory given as the file is a ConfigError naming it."""
        path = self.mktemp()
        os.makedirs(path)
        self.assertIn(path, self.refused({"config": path}))

    def test_invalid_toml(self) -> None:
        """A file that is not TOML is a ConfigError naming it."""
        path = self.write('listen = "tcp:8080\n')
        message = self.refused({"config": path})
        self.assertIn(path, message)
        self.assertIn("not valid TOML", message)

    def test_wrong_type(self) -> None:
        """A top-level setting of the wrong type is a ConfigError naming the file and the key."""
        for text in ["listen = 8080\n", 'database = ["sqlite:x"]\n', "public_url = true\n"]:
            path = self.write(text)
            message = self.refused({"config": path})
            self.assertIn(path, message)
            self.assertIn(text.split(" ")[0], message)

    def test_unknown_key(self) -> None:
        """An unknown top-level setting is a ConfigError naming the file and the key."""
        path = self.write('listen = "tcp:8080"\nlisten_port = 8080\n')
        message = self.refused({"config": path})
        self.assertIn(path, message)
        self.assertIn("'listen_port'", message)

    def test_purge_after(self) -> None:
        """C{purge_after} is 7 days unless the file or the command line says otherwise."""
        self.assertEqual(load({}).purge_after, 7 * 86_400)
        path = self.write("purge_after = 3600\n")
        self.assertEqual(load({"config": path}).purge_after, 3600)
        self.assertEqual(load({"config": path, "purge-after": "0"}).purge_after, 0)
        self.assertEqual(load({"purge-after": "315360000"}).purge_after, 10 * 365 * 86_400)

    def test_purge_after_refused(self) -> None:
        """A negative, oversized or non-numeric C{purge_after} is refused, saying the range."""
        for value in ("-1", "315360001", "a week", "1.5"):
            message = self.refused({"purge-after": value})
            self.assertIn("purge_after (--purge-after) must be a number of seconds from 0 to"
                          f" 315360000, not {value!r}", message)
        self.assertIn("from 0 to", self.refused({"config": self.write("purge_after = -5\n")}))
        for text in ('purge_after = "7d"\n', "purge_after = true\n", "purge_after = 1.5\n"):
            path = self.write(text)
            self.assertIn(f"In {path}, 'purge_after' must be an integer", self.refused(
                {"config": path}))

    def test_frozen(self) -> None:
        """The configuration cannot be changed once loaded."""
        config = load({})
        with self.assertRaises(AttributeError):
            config.listen = "tcp:1"  # type: ignore[misc]


class LimitsTests(SynchronousTestCase):
    write = LoadTests.write

    def test_defaults(self) -> None:
        """Without settings, every limit has its default, and none is off."""
        self.assertEqual(load({}).limits, Limits())
        self.assertNotIn(None, attrs.astuple(Limits(), recurse=False))

    def test_table_and_options(self) -> None:
        """A [limits] table sets rates; --limit options override it; C{off} turns one off."""
        path = self.write('[limits]\nparticipant_posts = "5/10s"\naddress_rooms = "off"\n')
        config = load({"config": path, "limits": ["participant_posts=7/1m"]})
        self.assertEqual(config.limits, Limits(participant_posts=Rate(7, 60), address_rooms=None))
        self.assertNotIn("limits", config.sections)

    def test_errors(self) -> None:
        """Unknown names, wrong types and malformed rates are ConfigErrors saying what is wrong."""
        for options, expected in [
            ({"limits": ["posts=1/1s"]}, "no rate limit 'posts'; the limits are participant_posts"),
            ({"limits": ["address_posts=fast"]}, "address_posts: 'fast' is not a rate"),
            ({"config": self.write("[limits]\naddress_posts = 5\n")}, "must be a string"),
            ({"config": self.write("limits = [1]\n")}, "'limits' must be a table"),
        ]:
            self.assertIn(expected, str(self.assertRaises(ConfigError, load, options)), options)


class OriginsTests(SynchronousTestCase):
    def test_origins(self) -> None:
        """allowed_origins (TOML list) and --allow-origin are kept; public_url is checked."""
        path = LoadTests.write(self, 'allowed_origins = ["https://a.example.org"]\n')
        config = load({"config": path, "allowed_origins": ["http://b.example.org:8080"]})
        self.assertEqual(config.allowed_origins,
                         ("https://a.example.org", "http://b.example.org:8080"))
        self.assertNotIn("allowed_origins", config.sections)

    def test_errors(self) -> None:
        """Origins and public URLs that are not http(s) with a host are refused."""
        for options, expected in [
            ({"allowed_origins": ["chat.example.org"]}, "'chat.example.org' is not an http(s)"),
            ({"public-url": "ftp://x"}, "public_url 'ftp://x' is not an http(s) URL"),
        ]:
            self.assertIn(expected, str(self.assertRaises(ConfigError, load, options)))


class ReplayTests(SynchronousTestCase):
    write = LoadTests.write

    def test_defaults(self) -> None:
        """No webhooks, the reflektor off, no outbox, a 10 s shutdown."""
        config = load({})
        self.assertEqual((config.webhooks, config.replay, config.shutdown_timeout),
                         ((), Replay(), 10))
        self.assertIsNone(config.replay.token)

    def test_token_from_environment(self) -> None:
        """TMD_REPLAY_TOKEN gives the token when no token_file does."""
        self.patch(os, "environ", {**os.environ, "TMD_REPLAY_TOKEN": "from-env"})
        config = load({"config": self.write('[replay]\ndownstreams = ["http://a:1"]\n')})
        self.assertEqual(config.replay.token, "from-env")
        self.assertNotIn("from-env", repr(config))

    def test_errors(self) -> None:
        """Each mistake is a ConfigError that says what to fix."""
        for text, expected in [
            ('[[webhooks]]\nurl = "ftp://x"\nsecret = "s"\n', "webhook 1 url: 'ftp://x' is not"),
            ('[[webhooks]]\nurl = "http://x"\n', "needs a secret_file, or a secret"),
            ('[[webhooks]]\nurl = "http://x"\nsecret = ""\n', "must be a non-empty string"),
            ('[[webhooks]]\nurl = "http://x"\nsecret = "s"\nretries = 3\n', "unknown keys"),
            ("webhooks = [1]\n", "[[webhooks]] tables"),
            ('[replay]\ndownstreams = ["http://a:1"]\n', "needs both a token"),
            ("[replay]\noutbox = 1\n", "outbox must be true or false"),
            ("[replay]\nmax_attempts = 0\n", "max_attempts must be an integer from 1"),
            ("[replay]\nspeed = 1\n", "unknown keys ['speed']"),
            ("shutdown_timeout = -1\n", "shutdown_timeout (--shutdown-timeout) must be"),
        ]:
            message = str(self.assertRaises(ConfigError, load, {"config": self.write(text)}))
            self.assertIn(expected, message, text)
