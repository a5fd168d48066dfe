"""
What a plugin author codes against: a plugin adds a service (a protocol listener or a
social source) to the daemon.

A plugin is an object providing L{ITmdPlugin} (and C{twisted.plugin.IPlugin}) in a
module of the C{tmd.plugins} package; third-party distributions ship such modules in
their own C{tmd/plugins/} directory. docs/plugins.md shows a whole example.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from zope.interface import Attribute, Interface


class IPluginContext(Interface):
    """What the daemon hands a plugin: its parts, its settings and its clock."""

    chat = Attribute(
        "The chat core (tmd.chat.Chat): create, join and post through it, so every rule"
        " (validation, rate limits, moderation) holds for the plugin's users too.")
    hub = Attribute("The Hub (tmd.hub.Hub): subscribe to a room's live events.")
    store = Attribute("The store (tmd.store.IStore), for reads the chat core does not offer.")
    config = Attribute("The daemon's configuration (tmd.config.Config), read-only.")
    reactor = Attribute("The reactor: the clock (IReactorTime) and the network.")

    def set_status(state: str, detail: str | None = None) -> None:
        """
        Say how the plugin is doing (for example C{"connected"}, or C{"backing off"}
        with why); C{/healthz} shows it. The daemon sets C{"running"} once the plugin's
        service has started and C{"failed"} if it could not start.
        """

    def report_counts(read: Callable[[], Mapping[str, int]]) -> None:
        """
        Have C{/metrics} call C{read()} at each scrape: it returns the plugin's running
        totals by name (for a source, say, C{{"ingested": 12, "capped": 3}}), shown as
        C{tmd_plugin_events_total{plugin="NAME", event="ingested"}}. Names are a small,
        fixed set of snake_case words; the totals only ever grow.
        """


class ITmdPlugin(Interface):
    """A plugin that adds one service to tmd."""

    name = Attribute(
        "The name operators enable it by: --plugin NAME, or a TOML table [NAME].")
    description = Attribute("One line saying what it adds.")
    options = Attribute(
        "A twisted.python.usage.Options subclass: the plugin's settings. The keys of its"
        " TOML table are its long options (underscores for dashes); the command line adds"
        " more with --plugin 'NAME --option value'.")

    def makeService(context: IPluginContext, options: object) -> object:
        """
        The plugin's service (an C{IService}), not yet started: the daemon starts it
        after its own services and stops it before them. Raise C{usage.UsageError}
        (or C{ValueError}) with a clear message if the options cannot work.
        """
