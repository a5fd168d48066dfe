"""
C{twistd tmd}: the command-line options and the wiring of every service.

C{build} is the one place where the services meet: store, hub, bus, relay, chat core,
reaper, web, and the plugins.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Iterable
from functools import partial
from typing import Any

from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from tmd import __version__
from tmd.bus import Bus, LocalBus, PostgresBus
from tmd.chat import Chat
from tmd.config import (
    DEFAULT_DATABASE,
    DEFAULT_DB_POOL_SIZE,
    DEFAULT_LISTEN,
    DEFAULT_PURGE_AFTER,
    DEFAULT_SHUTDOWN_TIMEOUT,
    Config,
    load,
)
from tmd.errors import ApiError
from tmd.hub import Hub
from tmd.limits import RateLimiter
from tmd.metrics import MeasuredStore, Metrics
from tmd.origins import origin
from tmd.pluginhost import Enabled, PluginHost, describe, enabled, installed, unknown_sections
from tmd.reaper import Reaper
from tmd.relay import Relay
from tmd.service import Lifecycle, Sequence
from tmd.store import store_for
from tmd.store.postgres import PostgresStore
from tmd.web import WebService
from tmd.web.metrics import MetricsService

log = Logger()


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Run tmd, a backchannel chat service: rooms, live websocket chat and the browser"
        " page, on one port. Options override the TOML file given with --config."
    )
    optParameters = [
        ["listen", None, None,
         f"Where to serve HTTP and websockets: a Twisted server endpoint string such as"
         f" tcp:8080, tcp:8080:interface=127.0.0.1, unix:/run/tmd.sock or"
         f" ssl:443:privateKey=key.pem:certKey=cert.pem [default: {DEFAULT_LISTEN}]"],
        ["database", None, None,
         f"Where to keep rooms and messages: sqlite:PATH, or postgresql://USER@HOST:PORT/DB"
         f" to share one database between several daemons [default: {DEFAULT_DATABASE}]"],
        ["db-pool-size", None, None,
         f"Connections to PostgreSQL per daemon [default: {DEFAULT_DB_POOL_SIZE}]"],
        ["db-password-file", None, None,
         "A file holding the PostgreSQL password (else the URL, PGPASSWORD or ~/.pgpass)."],
        ["purge-after", None, None,
         f"Seconds after a room expires (and closes) before it and its messages are deleted;"
         f" 0 deletes at once [default: {DEFAULT_PURGE_AFTER}, 7 days]"],
        ["shutdown-timeout", None, None,
         f"Seconds a stop (SIGTERM) waits for webhooks and replays still queued to be delivered"
         f" [default: {DEFAULT_SHUTDOWN_TIMEOUT}]"],
        ["config", None, None, "A TOML configuration file."],
        ["public-url", None, None,
         "The URL people use to reach this daemon (for links), e.g. https://chat.example.org"],
        ["max-connections", None, None,
         "Connections the web port holds at most, websockets included [default: 20000]"],
        ["max-connections-per-address", None, None,
         "Connections from one client address at most (IPv6: one /64; a school behind one"
         " NAT is one address) [default: 1000]"],
        ["header-timeout", None, None,
         "Seconds a new connection has to send its request's headers [default: 10]"],
        ["idle-timeout", None, None,
         "Seconds an HTTP connection may stay open between requests [default: 60]"],
        ["max-send-buffer", None, None,
         "Bytes that may wait for a websocket or event-stream client that does not read"
         " (beyond the 64 KiB its connection holds); past it the client is disconnected"
         " (websocket close 1013) and resumes when it reconnects [default: 1048576]"],
        ["metrics-listen", None, None,
         "Serve the Prometheus metrics (GET /metrics) on this Twisted server endpoint alone,"
         " e.g. tcp:9100:interface=127.0.0.1, instead of on --listen's [default: on --listen]"],
        ["log-format", None, None,
         "text, or json: one JSON object per line (time, level, namespace, text and the"
         " event's fields) on standard output; json needs twistd -n, without --logfile or"
         " --syslog [default: text]"],
    ]

    def __init__(self) -> None:
        super().__init__()
        # The help of opt_ methods comes from their docstrings: on one line, not indented.
        self.docs = {name: " ".join(doc.split()) if doc else doc
                     for name, doc in self.docs.items()}
        self["plugins"] = []
        self["limits"] = []
        self["allowed_origins"] = []
        self["trusted_proxies"] = []
        self.config: Config | None = None
        self.plugins: list[Enabled] = []
        self.problems: tuple[str, ...] = ()

    def opt_limit(self, setting: str) -> None:
        """
        Set a rate limit, NAME=COUNT/PERIOD or NAME=off (repeatable), e.g.
        participant_posts=10/15s. NAME is participant_posts, address_posts, address_joins,
        address_rooms or participant_votes; see the README for the defaults.
        """
        if "=" not in setting:
            raise usage.UsageError(
                f"--limit {setting!r}: write NAME=RATE, e.g. address_rooms=20/1h.")
        self["limits"].append(setting)

    def opt_allow_origin(self, origin: str) -> None:
        """
        Let pages from ORIGIN (https://host[:port]) open live sockets (repeatable). Allowed
        without it: public_url's origin if set, else the host the request was sent to.
        """
        self["allowed_origins"].append(origin)

    def opt_trusted_proxy(self, proxy: str) -> None:
        """
        Believe X-Forwarded-For from this address or network (repeatable), e.g. 127.0.0.1
        behind nginx on the same host: rate and connection limits then count the client.
        """
        self["trusted_proxies"].append(proxy)

    def opt_plugin(self, spec: str) -> None:
        """
        Enable a plugin (repeatable): NAME, or 'NAME --option value ...' to set its
        options (a TOML table [NAME] enables it too). See --list-plugins.
        """
        self["plugins"].append(spec)

    def opt_list_plugins(self) -> None:
        """List the installed plugins and their options, and exit."""
        print(describe(installed()))
        sys.exit(0)

    def opt_version(self) -> None:
        """Print the version of tmd and exit."""
        print(f"tmd {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        from twisted.internet import reactor as the_reactor

        reactor: Any = the_reactor

        try:
            self.config = load(self)
            store_for(self.config.database, reactor, self.config.db_pool_size)
            found = installed()
            self.plugins = enabled(found, self.config.plugins, self.config.sections)
        except ValueError as e:  # ConfigError included
            raise usage.UsageError(str(e)) from None
        self.problems = found.problems + unknown_sections(found, self.config.sections)
        try:
            serverFromString(reactor, self.config.listen)
        except IndexError:  # systemd: without the sockets systemd passes
            raise usage.UsageError(
                f"--listen {self.config.listen!r}: systemd passed no such socket; start tmd"
                " through its socket unit (contrib/tmd.socket).") from None
        except (ValueError, OSError) as e:
            raise usage.UsageError(
                f"--listen {self.config.listen!r} is not an endpoint tmd can listen on: {e}."
                " Examples: tcp:8080, tcp:8080:interface=127.0.0.1, unix:/run/tmd.sock.") from None
        if self.config.metrics_listen is not None:
            try:
                serverFromString(reactor, self.config.metrics_listen)
            except (ValueError, OSError) as e:
                raise usage.UsageError(
                    f"--metrics-listen {self.config.metrics_listen!r} is not an endpoint tmd can"
                    f" listen on: {e}. Example: tcp:9100:interface=127.0.0.1.") from None
        if self.config.log_format == "json" and self.parent is not None:
            use_json_logs(self.parent)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    assert options.config is not None
    reactor.addSystemEventTrigger("after", "shutdown", _exit_zero, reactor)
    reactor.callWhenRunning(freeze_startup_heap)
    return build(options.config, reactor, options.plugins, options.problems)


def freeze_startup_heap() -> None:
    """
    Take what startup made (modules, classes, services: most of the heap, for good)
    out of the garbage collector's full passes. Each pass walked all of it and held the
    reactor for ~20 ms, every ~800 posts, so a few posts waited that long.
    """
    gc.collect()
    gc.freeze()


def _exit_zero(reactor: Any) -> None:
    """
    A stop asked for by SIGTERM or SIGINT has been done in order: exit 0, as systemd and
    scripts expect, instead of twistd's default of ending by the same signal again.
    """
    if getattr(reactor, "_exitSignal", None) in (signal.SIGTERM, signal.SIGINT):
        reactor._exitSignal = None


def build(config: Config, reactor: Any, plugins: Iterable[Enabled] = (),
          problems: Iterable[str] = ()) -> Sequence:
    """Every service of the daemon, started in dependency order; the plugins' last."""
    store = store_for(config.database, reactor, config.db_pool_size, config.db_password)
    hub = Hub(reactor)
    bus: Bus = LocalBus(hub)
    if isinstance(store, PostgresStore):
        bus = PostgresBus(store, hub, reactor)
    in_thread = partial(deferToThreadPool, reactor, reactor.getThreadPool())
    metrics = Metrics()
    metrics.watch_hub(hub)
    measured = MeasuredStore(store, metrics)
    relay = Relay(measured, reactor, config.webhooks, config.replay)
    metrics.watch_relay(relay)
    chat = Chat(measured, hub, reactor, in_thread, bus, RateLimiter(config.limits, reactor),
                relay, metrics)
    root = Sequence()
    Lifecycle("store", store.open, store.close).setServiceParent(root)
    Lifecycle("hub", lambda: None, hub.stop).setServiceParent(root)
    Lifecycle("bus", bus.start, bus.stop).setServiceParent(root)
    Lifecycle("relay", relay.start,
              partial(relay.stop, config.shutdown_timeout)).setServiceParent(root)
    host = PluginHost(chat, hub, measured, config, reactor, plugins, problems)
    metrics.watch_plugins(host.statuses, host.counts)
    reaper = Reaper(chat, reactor, config.purge_after)
    Lifecycle("reaper", reaper.start, reaper.stop).setServiceParent(root)
    web = WebService(serverFromString(reactor, config.listen), chat, measured, hub, reactor,
                     live_origins(config), relay, host.statuses, metrics=metrics,
                     serve_metrics=config.metrics_listen is None,
                     connections=config.connections, public_url=config.public_url)
    web.setName("web")
    web.setServiceParent(root)
    if config.metrics_listen is not None:
        scrapes = MetricsService(serverFromString(reactor, config.metrics_listen), metrics)
        scrapes.setName("metrics")
        scrapes.setServiceParent(root)
    host.setServiceParent(root)
    root.started.addErrback(_abort, reactor)
    return root


def use_json_logs(twistd: usage.Options) -> None:
    """Have twistd log JSON lines (L{tmd.logs.json_observer}) to standard output."""
    if twistd.get("logger") is not None:
        raise usage.UsageError("--log-format json and twistd's --logger both choose the log"
                               " observer: give one of them.")
    if not twistd.get("nodaemon") or twistd.get("logfile") not in (None, "-") \
            or twistd.get("syslog"):
        raise usage.UsageError("--log-format json writes to standard output: run twistd -n,"
                               " without --logfile or --syslog (redirect the output instead).")
    twistd["logger"] = "tmd.logs.json_observer"  # twistd imports it after this


def live_origins(config: Config) -> frozenset[str]:
    """The origins whose pages may open live sockets; none means the request's own host."""
    listed = [*config.allowed_origins, *([config.public_url] if config.public_url else [])]
    return frozenset(filter(None, map(origin, listed)))


def _abort(failure: Failure, reactor: Any) -> None:
    """A service could not start: say why, stop, and exit non-zero."""
    if not failure.check(ApiError):  # an expected failure (no database, say) needs no traceback
        log.failure("tmd could not start", failure)
    log.critical("tmd could not start: {error}", error=failure.getErrorMessage())

    def exit_failed() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)

    reactor.addSystemEventTrigger("after", "shutdown", exit_failed)
    reactor.stop()
