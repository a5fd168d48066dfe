"""Tests for L{tmd.pluginhost}: finding, configuring and running plugins."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

import tmd.plugins
from tests.helpers import ImmediateReactor, in_thread_now, open_store
from tests.plugins import BROKEN, FAILING, example, plugin_directory
from tmd.chat import Chat
from tmd.config import Config, ConfigError
from tmd.hub import Hub
from tmd.pluginhost import (
    Enabled,
    Installed,
    PluginContext,
    PluginHost,
    describe,
    enabled,
    installed,
    unknown_sections,
)


class PluginsOnPath(SynchronousTestCase):
    def plugins(self, **modules: str) -> Installed:
        """What L{installed} finds with C{modules} on the plugin path, as if installed."""
        top = plugin_directory(self, **modules)
        self.patch(tmd.plugins, "__path__", [*tmd.plugins.__path__, str(top / "tmd" / "plugins")])
        return installed()


class DiscoveryTests(PluginsOnPath):
    def test_found(self) -> None:
        """A module in another tmd/plugins directory on the path is found by its name."""
        found = self.plugins(announce=example())
        self.assertIn("announce", found.plugins)
        self.assertIn("announcement", found.plugins["announce"].description)
        self.assertEqual(found.problems, ())

    def test_broken_module(self) -> None:
        """A module that does not import is a problem naming its file; the others are found."""
        found = self.plugins(announce=example(), broken=BROKEN)
        self.flushLoggedErrors(ImportError)
        self.assertIn("announce", found.plugins)
        [problem] = found.problems
        self.assertIn("broken.py", problem)
        self.assertIn("ImportError: the library this plugin needs is not installed", problem)

    def test_describe(self) -> None:
        """--list-plugins shows each plugin, its options and the problems."""
        found = self.plugins(announce=example(), broken=BROKEN)
        self.flushLoggedErrors(ImportError)
        listing = describe(found)
        self.assertIn("announce: Posts an announcement", listing)
        self.assertIn("--every=", listing)
        self.assertIn("Problem: a plugin module could not be loaded", listing)
        self.assertEqual(describe(Installed({})), "No tmd plugins are installed.")


class EnabledTests(PluginsOnPath):
    def setUp(self) -> None:
        self.found = self.plugins(announce=example())

    def test_table(self) -> None:
        """A table enables its plugin; its keys are long options, underscores for dashes."""
        [each] = enabled(self.found, [], {"announce": {"room": "lobby", "every": 60}})
        assert each.options is not None
        self.assertEqual((each.name, each.options["room"], each.options["every"]),
                         ("announce", "lobby", 60))

    def test_command_line_over_table(self) -> None:
        """--plugin 'NAME --option value' adds options after the table's, so they win."""
        [each] = enabled(self.found, ["announce --every 5 --text 'two words'"],
                         {"announce": {"room": "lobby", "every": 60}})
        assert each.options is not None
        self.assertEqual((each.options["room"], each.options["every"], each.options["text"]),
                         ("lobby", 5, "two words"))

    def test_refused_options(self) -> None:
        """Options the plugin refuses are a configuration error naming the plugin."""
        for specs, sections in [(["announce"], {}),
                                (["announce --room lobby --nope 1"], {}),
                                ([], {"announce": {"room": "lobby", "every": -1}}),
                                ([], {"announce": {"room": {"nested": 1}}}),
                                ([], {"announce": ["not", "a", "table"]})]:
            error = self.assertRaises(ConfigError, enabled, self.found, specs, sections)
            self.assertIn("announce", str(error), (specs, sections))

    def test_booleans_and_lists(self) -> None:
        """True is the flag, false leaves it out, a list repeats the option."""
        from tmd.pluginhost import _table_arguments

        self.assertEqual(_table_arguments("x", {"on": True, "off": False, "tag": ["a", "b"]}),
                         ["--on", "--tag", "a", "--tag", "b"])

    def test_missing(self) -> None:
        """A plugin that is not installed is enabled as missing, saying what is installed."""
        [each] = enabled(self.found, ["nosuch"], {})
        self.assertEqual((each.plugin, each.options), (None, None))
        self.assertIn("'nosuch' is installed (installed: announce, ", each.missing or "")

    def test_unknown_sections(self) -> None:
        """Tables that are no plugin's are named, to be logged."""
        [problem] = unknown_sections(self.found, {"announce": {}, "twiter": {}})
        self.assertIn("[twiter]", problem)


class HostTests(PluginsOnPath):
    def setUp(self) -> None:
        self.clock = ImmediateReactor()
        self.store = open_store(self, reactor=self.clock)
        self.hub = Hub(self.clock)
        self.chat = Chat(self.store, self.hub, self.clock, in_thread_now)
        self.successResultOf(self.chat.create_room({"name": "lobby"}))
        self.found = self.plugins(announce=example(), failing=FAILING)

    def host(self, specs: list[str], sections: dict[str, Any] | None = None,
             problems: tuple[str, ...] = ()) -> PluginHost:
        plugins = enabled(self.found, specs, sections or {})
        host = PluginHost(self.chat, self.hub, self.store, Config(), self.clock, plugins,
                          problems)
        self.successResultOf(host.startService())
        return host

    def bodies(self) -> list[tuple[str, str | None, str]]:
        room = self.successResultOf(self.chat.room("lobby"))
        messages, _ = self.successResultOf(self.chat.messages(room, 0, 100))
        return [(m.kind, m.author, m.body) for m in messages]

    def test_example_runs(self) -> None:
        """The documented example posts at start and then on schedule, until stopped."""
        host = self.host(["announce --room lobby --every 60 --text hello"])
        self.assertEqual(self.bodies(), [("social", "@announce", "hello")])
        self.clock.advance(60)
        self.assertEqual(len(self.bodies()), 2)
        self.assertEqual(host.statuses(), {"announce": {
            "state": "running", "detail": "2 announcements posted"}})
        self.assertEqual(host.counts(), {"announce": {"posted": 2}})
        self.successResultOf(host.stopService())
        self.clock.advance(600)
        self.assertEqual(len(self.bodies()), 2)
        self.assertEqual(host.statuses()["announce"]["state"], "stopped")

    def test_failures_are_isolated(self) -> None:
        """
        A plugin that cannot make its service, one that fails to start (its room is
        missing) and one not installed are failed, with why; the others run.
        """
        host = self.host(["failing", "nosuch"], {"announce": {"room": "nowhere"}})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)  # a bug: its traceback
        statuses = host.statuses()
        self.assertEqual({name: s["state"] for name, s in statuses.items()},
                         {"announce": "failed", "failing": "failed", "nosuch": "failed"})
        self.assertIn("RuntimeError: the failing plugin always fails",
                      statuses["failing"]["detail"] or "")
        self.assertIn("There is no room 'nowhere'", statuses["announce"]["detail"] or "")
        self.assertIn("no plugin named 'nosuch'", statuses["nosuch"]["detail"] or "")
        self.successResultOf(host.stopService())

    def test_one_fails_others_run(self) -> None:
        """A failing plugin does not keep the next one from starting."""
        host = self.host(["failing", "announce --room lobby"])
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(host.statuses()["announce"]["state"], "running")
        self.assertEqual(len(self.bodies()), 1)

    def test_problems_logged(self) -> None:
        """Problems found before start (modules that did not load) are logged at start."""
        events: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.host([], problems=("a plugin module could not be loaded (x.py:1): boom",))
        self.assertTrue(any(e.get("problem", "").endswith("boom") for e in events))

    def test_bad_count_names(self) -> None:
        """A count whose name could not be a label, or whose total is no integer, is left out."""
        context = PluginContext(self.chat, self.hub, self.store, Config(), self.clock)
        self.assertEqual(context.counts(), {})
        context.report_counts(lambda: {"posted": 3, "Bad Name": 1, "later": 0.5})
        events: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.assertEqual(context.counts(), {"posted": 3})
        self.assertEqual(context.counts(), {"posted": 3})
        self.assertEqual(sorted(e["name"] for e in events if "name" in e), ["Bad Name", "later"])

    def test_enabled_missing(self) -> None:
        """An Enabled without a plugin fails with the reason given."""
        host = PluginHost(self.chat, self.hub, self.store, Config(), self.clock,
                          [Enabled("x", None, None, "gone")])
        self.successResultOf(host.startService())
        self.assertEqual(host.statuses(), {"x": {"state": "failed", "detail": "gone"}})
