"""Tests for L{tmd.tap}: the command line, the wiring of services, and the twistd plugin."""

from __future__ import annotations

import gc
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import ImmediatePool, database_path
from tmd.config import Config
from tmd.limits import Rate
from tmd.tap import Options, build, freeze_startup_heap
from tmd.web import WebService


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


class ThreadPoolMemoryReactor(MemoryReactorClock):
    """A L{MemoryReactorClock} with the reactor's thread pool, as C{build} wants it."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = ImmediatePool()

    def getThreadPool(self) -> ImmediatePool:
        return self.pool


class OptionsTests(SynchronousTestCase):
    def refused(self, *argv: str) -> str:
        """Parsing C{argv} fails with L{UsageError}; returns its message."""
        return str(self.assertRaises(UsageError, parse, *argv))

    def test_unusable_endpoints(self) -> None:
        """Endpoints that cannot be built are usage errors naming --listen, not tracebacks."""
        for endpoint in ("ssl:443", "tcp:notaport", "nonsense:1"):
            self.assertIn("--listen", self.refused("--listen", endpoint), endpoint)

    def test_defaults(self) -> None:
        """With no options, tmd listens on tcp:8080 and keeps data in sqlite:tmd.sqlite3."""
        config = parse().config
        assert config is not None
        self.assertEqual((config.listen, config.database, config.public_url, config.plugins),
                         ("tcp:8080", "sqlite:tmd.sqlite3", None, ()))

    def test_options(self) -> None:
        """--listen, --database and --public-url end up in the config."""
        config = parse("--listen", "tcp:9000:interface=127.0.0.1", "--database",
                       "sqlite:/tmp/x.sqlite3", "--public-url", "https://chat.example.org").config
        assert config is not None
        self.assertEqual(
            (config.listen, config.database, config.public_url, config.plugins),
            ("tcp:9000:interface=127.0.0.1", "sqlite:/tmp/x.sqlite3", "https://chat.example.org",
             ()))

    def test_limits(self) -> None:
        """--limit NAME=RATE sets a rate limit (repeatable); a malformed one is a usage error."""
        config = parse("--limit", "address_posts=off", "--limit", "address_rooms=3/1h").config
        assert config is not None
        self.assertEqual((config.limits.address_posts, config.limits.address_rooms),
                         (None, Rate(3, 3600)))
        self.assertIn("NAME=RATE", self.refused("--limit", "address_posts"))
        self.assertIn("is not a rate", self.refused("--limit", "address_posts=lots"))

    def test_unknown_plugin(self) -> None:
        """
        A plugin that is not installed (or did not load) is no usage error: the daemon
        starts without it and reports it, as it does a plugin that fails.
        """
        options = parse("--plugin", "nosuchplugin")
        self.assertEqual([(each.name, each.plugin) for each in options.plugins],
                         [("nosuchplugin", None)])
        self.assertIn("'nosuchplugin'", options.plugins[0].missing or "")

    def test_unparsable_plugin(self) -> None:
        """A --plugin spec that is not shell words is a usage error."""
        self.assertIn("--plugin", self.refused("--plugin", "irc --listen 'tcp:1"))

    def test_connections(self) -> None:
        """Connection limits and trusted proxies; values out of range are refused, named."""
        config = parse("--trusted-proxy", "127.0.0.1", "--trusted-proxy", "10.0.0.0/8",
                       "--max-connections", "5", "--max-connections-per-address", "2",
                       "--header-timeout", "3").config
        assert config is not None
        limits = config.connections
        self.assertEqual((limits.total, limits.per_address, limits.header_timeout),
                         (5, 2, 3))
        self.assertEqual([str(n) for n in limits.trusted.networks],
                         ["127.0.0.1/32", "10.0.0.0/8"])
        self.assertIn("'nope'", self.refused("--trusted-proxy", "nope"))
        self.assertIn("max_connections (--max-connections)",
                      self.refused("--max-connections", "0"))
        self.assertIn("header_timeout", self.refused("--header-timeout", "soon"))
        self.assertIn("from 1 to", self.refused("--header-timeout", "0"))  # every request a 408

    def test_systemd_without_socket(self) -> None:
        """A systemd: endpoint outside socket activation is a usage error, not a traceback."""
        self.assertIn("contrib/tmd.socket", self.refused("--listen", "systemd:domain=INET:index=0"))

    def test_bad_endpoint(self) -> None:
        """An endpoint string of an unknown type is a UsageError naming it."""
        self.assertIn("nonsense", self.refused("--listen", "nonsense:1"))

    def test_bad_database(self) -> None:
        """An unsupported database URL is a UsageError saying what is supported."""
        for url in ("mysql://x", "sqlite:", "tmd.sqlite3"):
            message = self.refused("--database", url)
            self.assertIn(repr(url), message)
            self.assertIn("sqlite:PATH", message)

    def test_postgresql(self) -> None:
        """A PostgreSQL URL, pool size and password file are accepted; the secret is read once."""
        secret = self.mktemp()
        with open(secret, "w", encoding="utf-8") as f:
            f.write("  s3cret\n")
        config = parse("--database", "postgresql://tmd@db.example.org:5432/tmd",
                       "--db-pool-size", "8", "--db-password-file", secret).config
        assert config is not None
        self.assertEqual((config.database, config.db_pool_size, config.db_password),
                         ("postgresql://tmd@db.example.org:5432/tmd", 8, "s3cret"))
        self.assertNotIn("s3cret", repr(config))

    def test_postgresql_refused(self) -> None:
        """A URL libpq cannot read, a pool size out of range and a missing secret are refused."""
        self.assertIn("PostgreSQL", self.refused("--database", "postgresql://x?nonsense=1"))
        for size in ("0", "101", "many"):
            self.assertIn("pool size", self.refused("--db-pool-size", size))
        self.assertIn("/no/such/file", self.refused("--db-password-file", "/no/such/file"))

    def test_purge_after(self) -> None:
        """--purge-after sets the seconds between expiry and deletion; bad values are refused."""
        config = parse("--purge-after", "3600").config
        assert config is not None
        self.assertEqual(config.purge_after, 3600)
        for value in ("-1", "315360001", "soon"):
            self.assertIn("--purge-after", self.refused("--purge-after", value))

    def test_unknown_option(self) -> None:
        """An option tmd does not have is a UsageError."""
        self.assertIn("nope", self.refused("--nope"))

    def test_config_file(self) -> None:
        """--config reads the TOML file; options given with it still win."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write('listen = "tcp:9001"\ndatabase = "sqlite:from-file.sqlite3"\n'
                    '[irc]\nlisten = "tcp:6667"\n')
        config = parse("--config", path, "--database", "sqlite:from-cli.sqlite3").config
        assert config is not None
        self.assertEqual((config.listen, config.database), ("tcp:9001", "sqlite:from-cli.sqlite3"))
        self.assertEqual(config.sections["irc"], {"listen": "tcp:6667"})

    def test_config_file_broken(self) -> None:
        """A configuration file that is wrong is a UsageError naming the file."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write("listen = 8080\n")
        self.assertIn(path, self.refused("--config", path))

    def test_config_file_bad_endpoint(self) -> None:
        """An endpoint from the file is checked as one from the command line is."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write('listen = "nonsense:1"\n')
        self.assertIn("nonsense", self.refused("--config", path))


class BuildTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = ThreadPoolMemoryReactor()
        self.config = Config(listen="tcp:8123", database="sqlite:" + database_path(self))

    def test_children(self) -> None:
        """The root service starts store, hub, bus, relay, reaper, web and plugins, in order."""
        root = build(self.config, self.reactor)
        self.assertEqual([service.name for service in root],
                         ["store", "hub", "bus", "relay", "reaper", "web", "plugins"])
        self.assertIsInstance(root.getServiceNamed("web"), WebService)

    def test_nothing_done(self) -> None:
        """Building only wires: nothing listens, nothing is scheduled, no thread work runs."""
        root = build(self.config, self.reactor)
        self.assertFalse(root.running)
        self.assertEqual((self.reactor.tcpServers, self.reactor.getDelayedCalls()), ([], []))
        self.assertEqual(self.reactor.pool.calls, 0)


class HeapTests(SynchronousTestCase):
    def test_freeze_startup_heap(self) -> None:
        """What exists once the daemon runs is kept out of the collector's passes for good."""
        self.addCleanup(gc.unfreeze)
        kept: list[object] = []  # tracked by the collector
        freeze_startup_heap()
        self.assertGreater(gc.get_freeze_count(), 0)
        self.assertFalse(any(each is kept for each in gc.get_objects(generation=2)))


class PluginTests(SynchronousTestCase):
    def test_twistd_plugin(self) -> None:
        """twistd finds the 'tmd' plugin, whose options are tmd.tap's."""
        makers: dict[str, Any] = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("tmd", makers)
        self.assertIs(makers["tmd"].options, Options)
        self.assertEqual(makers["tmd"].module, "tmd.tap")
