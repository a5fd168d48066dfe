"""
End to end: plugins written in the tests, put on the path as a third-party
distribution would, found, configured and run by a real C{twistd -n tmd}.
"""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.clients import Http
from tests.integration.daemon import Daemon, twistd
from tests.plugins import BROKEN, FAILING, example, plugin_directory


class PluginDaemonTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.path = str(plugin_directory(self, announce=example(), broken=BROKEN,
                                         failing=FAILING))

    def test_configured_and_isolated(self) -> Deferred[None]:
        """
        The example plugin, enabled by its TOML table, posts into its room; a plugin
        that fails, one that does not import and a table no plugin owns are reported
        in the log and in /healthz, and the daemon serves on.
        """
        return Deferred.fromCoroutine(self._configured_and_isolated())

    async def _configured_and_isolated(self) -> None:
        config = os.path.join(self.path, "tmd.toml")
        with open(config, "w", encoding="utf-8") as f:
            f.write('[announce]\nroom = "lobby"\ntext = "Slides are online"\n\n[twiter]\n')
        daemon = await Daemon.start(self, "--config", config, "--plugin", "failing",
                                    "--plugin", "broken", pythonpath=self.path)
        await daemon.logged(rb"plugin broken is not running")  # the last to start
        http = Http(daemon.url)
        code, health = await http.call("GET", "/healthz")
        self.assertEqual((code, health["plugins"]["announce"]["state"]), (200, "failed"))
        self.assertIn("no room 'lobby'", health["plugins"]["announce"]["detail"])

        code, _ = await http.call("POST", "/api/v1/rooms", {"name": "lobby"})
        self.assertEqual(code, 201)
        await daemon.restart()  # now the room is there for the announcement at start
        await daemon.logged(rb"plugin broken is not running")
        http = Http(daemon.url)
        code, health = await http.call("GET", "/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(health["plugins"]["announce"],
                         {"state": "running", "detail": "1 announcements posted"})
        self.assertEqual(health["plugins"]["failing"]["state"], "failed")
        self.assertIn("the failing plugin always fails", health["plugins"]["failing"]["detail"])
        self.assertIn("no plugin named 'broken' is installed (installed: announce, failing",
                      health["plugins"]["broken"]["detail"])
        code, page = await http.call("GET", "/api/v1/rooms/lobby/messages")
        self.assertEqual([(m["kind"], m["author"], m["body"], m["source"]["network"])
                          for m in page["messages"]],
                         [("social", "@announce", "Slides are online", "announce")])
        self.assertIn("broken.py:1): ImportError: the library this plugin needs is not installed",
                      daemon.output)
        self.assertIn("[twiter] is neither a setting of tmd nor an installed plugin",
                      daemon.output)

    def test_list_plugins(self) -> Deferred[None]:
        """--list-plugins shows the installed plugins with their options, and the problems."""
        return Deferred.fromCoroutine(self._list_plugins())

    async def _list_plugins(self) -> None:
        env = {**os.environ, "PYTHONPATH": self.path}
        out, err, code = await getProcessOutputAndValue(
            twistd(), ["tmd", "--list-plugins"], env=env, path=self.path, reactor=reactor)
        listing = out.decode()
        self.assertEqual(code, 0, err)
        self.assertIn("announce: Posts an announcement into a room", listing)
        self.assertIn("--every=", listing)
        self.assertIn("failing: Cannot make its service.", listing)
        self.assertIn("Problem: a plugin module could not be loaded", listing)

    def test_refused_options(self) -> Deferred[None]:
        """Options a plugin refuses stop the daemon at start, with the plugin's words."""
        return Deferred.fromCoroutine(self._refused_options())

    async def _refused_options(self) -> None:
        env = {**os.environ, "PYTHONPATH": self.path}
        out, err, code = await getProcessOutputAndValue(
            twistd(), ["-n", "tmd", "--plugin", "announce --every 5"], env=env, path=self.path,
            reactor=reactor)
        self.assertNotEqual(code, 0)
        self.assertIn("Plugin 'announce': --room is required.", (out + err).decode())
