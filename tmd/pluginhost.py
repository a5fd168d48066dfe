"""
Plugins: finding them, configuring them, and running them so that none can take the
daemon down.

Plugins are found with C{twisted.plugin.getPlugins(ITmdPlugin, tmd.plugins)}. A plugin
is enabled by C{--plugin 'NAME [--option value ...]'} or by a TOML table named after
it, whose keys are its options. Wrong options stop the daemon at start, like any wrong
setting; a plugin whose module does not import, or whose service fails to start, is
reported, shown as failed in C{/healthz}, and the rest of the daemon runs on.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from attrs import define, field, frozen
from twisted.application.service import IService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import ILogObserver, Logger, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.python import usage
from zope.interface import implementer

import tmd.plugins
from tmd.chat import Chat
from tmd.config import Config, ConfigError
from tmd.errors import ApiError
from tmd.hub import Hub
from tmd.interfaces import IPluginContext, ITmdPlugin
from tmd.store import IStore

log = Logger()

COUNT_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
"""A name a plugin may report a count by: it becomes a label value in /metrics."""


@frozen
class Installed:
    """The plugins found, and what went wrong loading the others."""

    plugins: Mapping[str, ITmdPlugin]
    problems: tuple[str, ...] = ()


def installed() -> Installed:
    """Every installed plugin by name; a module that fails to import is a problem, not an error."""
    problems: list[str] = []

    @implementer(ILogObserver)
    def failed(event: Mapping[str, Any]) -> None:
        failure = event.get("log_failure", event.get("failure"))  # new and legacy (log.err)
        if failure is not None:
            where = next((f"{file}:{line}" for _, file, line, _, _ in reversed(failure.frames)
                          if "plugins" in file), "tmd.plugins")
            problems.append(f"a plugin module could not be loaded ({where}):"
                            f" {failure.type.__name__}: {failure.getErrorMessage()}")

    globalLogPublisher.addObserver(failed)
    try:
        plugins = {plugin.name: plugin for plugin in getPlugins(ITmdPlugin, tmd.plugins)}
    finally:
        globalLogPublisher.removeObserver(failed)
    return Installed(dict(sorted(plugins.items())), tuple(problems))


@frozen
class Enabled:
    """A plugin to run, with its parsed options; C{plugin} None if it is not installed."""

    name: str
    plugin: ITmdPlugin | None
    options: usage.Options | None
    missing: str | None = None
    """Why C{plugin} is None."""


def enabled(found: Installed, specs: Iterable[str],
            sections: Mapping[str, Any]) -> list[Enabled]:
    """
    The plugins to run: those named by C{--plugin} C{specs} (C{'NAME --option value'}) and
    those with a TOML table in C{sections}, each with its options parsed (table first,
    then the command line). Raises L{ConfigError} for options the plugin refuses.
    """
    arguments: dict[str, list[str]] = {}
    for name, table in sections.items():
        if name in found.plugins:
            arguments[name] = _table_arguments(name, table)
    for spec in specs:
        try:
            name, *rest = shlex.split(spec)
        except ValueError as e:
            raise ConfigError(f"--plugin {spec!r}: {e}.") from None
        arguments.setdefault(name, []).extend(rest)
    result = []
    for name, argv in arguments.items():
        plugin = found.plugins.get(name)
        if plugin is None:
            names = ", ".join(found.plugins) or "none"
            result.append(Enabled(name, None, None, f"no plugin named {name!r} is installed"
                                                    f" (installed: {names})"))
            continue
        options = plugin.options()
        try:
            options.parseOptions(argv)
        except usage.UsageError as e:
            raise ConfigError(f"Plugin {name!r}: {e}. See: twistd tmd --list-plugins.") from None
        result.append(Enabled(name, plugin, options))
    return result


def unknown_sections(found: Installed, sections: Mapping[str, Any]) -> tuple[str, ...]:
    """The TOML tables that are neither a setting of tmd nor an installed plugin's."""
    return tuple(f"the TOML table [{name}] is neither a setting of tmd nor an installed"
                 " plugin: it is ignored" for name in sections if name not in found.plugins)


def _table_arguments(name: str, table: Any) -> list[str]:
    """A plugin's TOML table as command-line arguments for its Options."""
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table of the plugin's options.")
    argv = []
    for key, value in table.items():
        flag = "--" + key.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, bool):
                argv.extend([flag] if item else [])
            elif isinstance(item, str | int | float):
                argv.extend([flag, str(item)])
            else:
                raise ConfigError(f"[{name}] {key}: a string, number, boolean or list of them.")
    return argv


def describe(found: Installed) -> str:
    """What C{--list-plugins} prints: each plugin, what it does and its options."""
    if not found.plugins:
        lines = ["No tmd plugins are installed."]
    else:
        lines = ["Installed tmd plugins (enable with --plugin NAME or a TOML table [NAME]):"]
    for name, plugin in found.plugins.items():
        lines += ["", f"{name}: {plugin.description}", str(plugin.options()).rstrip()]
    lines += [f"Problem: {problem}" for problem in found.problems]
    return "\n".join(lines)


@implementer(IPluginContext)
@define
class PluginContext:
    chat: Chat
    hub: Hub
    store: IStore
    config: Config
    reactor: Any
    state: str = "starting"
    detail: str | None = None
    _read_counts: Callable[[], Mapping[str, int]] | None = None
    _bad_names: set[str] = field(factory=set)

    def set_status(self, state: str, detail: str | None = None) -> None:
        self.state = state
        self.detail = detail

    def report_counts(self, read: Callable[[], Mapping[str, int]]) -> None:
        self._read_counts = read

    def counts(self) -> dict[str, int]:
        """The plugin's totals as reported; a name that is no snake_case word is left out."""
        if self._read_counts is None:
            return {}
        counts = {}
        for name, total in self._read_counts().items():
            if COUNT_NAME.fullmatch(name) and isinstance(total, int):
                counts[name] = total
            elif name not in self._bad_names:
                self._bad_names.add(name)
                log.warn("a plugin reported the count {name!r}, which is not a snake_case"
                         " name with an integer total: left out of /metrics", name=name)
        return counts


class PluginHost(Service):
    """Runs the enabled plugins' services; a failing one is reported and the rest go on."""

    name = "plugins"

    def __init__(self, chat: Chat, hub: Hub, store: IStore, config: Config, reactor: Any,
                 plugins: Iterable[Enabled], problems: Iterable[str] = ()) -> None:
        self._parts = (chat, hub, store, config, reactor)
        self._plugins = list(plugins)
        self._problems = tuple(problems)
        self.contexts: dict[str, PluginContext] = {}
        self._running: list[tuple[str, IService]] = []

    def startService(self) -> Deferred[None]:
        super().startService()
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        for problem in self._problems:
            log.error("{problem}", problem=problem)
        for each in self._plugins:
            context = self.contexts[each.name] = PluginContext(*self._parts)
            if each.plugin is None:
                self._failed(context, each.name, each.missing or "not installed")
                continue
            try:
                service = IService(each.plugin.makeService(context, each.options))
                await maybeDeferred(service.startService)
            except Exception as e:
                if not isinstance(e, ApiError | usage.UsageError):  # a bug: show where
                    log.failure("plugin {plugin} failed to start", plugin=each.name)
                self._failed(context, each.name, f"{e.__class__.__name__}: {e}")
                continue
            self._running.append((each.name, service))
            if context.state == "starting":
                context.set_status("running")
            log.info("plugin {plugin} started", plugin=each.name)

    def _failed(self, context: PluginContext, name: str, why: str) -> None:
        context.set_status("failed", why)
        log.error("plugin {plugin} is not running (the rest of tmd runs on): {why}",
                  plugin=name, why=why)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        while self._running:
            name, service = self._running.pop()
            try:
                await maybeDeferred(service.stopService)
            except Exception:
                log.failure("plugin {plugin} failed to stop", plugin=name)
            self.contexts[name].set_status("stopped")

    def counts(self) -> dict[str, dict[str, int]]:
        """Each enabled plugin's reported totals, for C{/metrics}."""
        return {name: context.counts() for name, context in self.contexts.items()}

    def statuses(self) -> dict[str, dict[str, str | None]]:
        """Each enabled plugin's state, for C{/healthz}."""
        return {name: {"state": context.state, "detail": context.detail}
                for name, context in self.contexts.items()}
