"""The JSON log: its records, and how C{--log-format json} hands twistd the observer."""

from __future__ import annotations

import json

from twisted.logger import LogEvent, Logger
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from tmd.logs import json_line, json_observer


class Thing:
    def __repr__(self) -> str:
        return "<thing>"


class RecordTests(SynchronousTestCase):
    def test_record(self) -> None:
        """
        A record holds the time (RFC 3339, UTC), level, namespace and text, then the
        event's plain fields; objects appear only as the text shows them.
        """
        events: list[LogEvent] = []
        log = Logger(namespace="tmd.test", observer=events.append)
        log.warn("{who!r} posted {count} in {room}", who=Thing(), count=3, room=b"physics",
                 ratio=0.5)
        events[0]["log_time"] = 1_795_000_000.123
        record = json.loads(json_line(events[0]))
        self.assertEqual(record, {
            "time": "2026-11-18T11:06:40.123Z", "level": "warn", "namespace": "tmd.test",
            "text": "<thing> posted 3 in b'physics'", "count": 3, "room": "physics",
            "ratio": 0.5})

    def test_failure(self) -> None:
        """A failure's traceback is in the record, and the whole record is one line."""
        events: list[LogEvent] = []
        log = Logger(namespace="tmd.test", observer=events.append)
        log.failure("dividing failed", Failure(ZeroDivisionError("division by zero")))
        line = json_line(events[0])
        self.assertEqual(line.count("\n"), 1)
        record = json.loads(line)
        self.assertEqual((record["level"], record["text"]), ("critical", "dividing failed"))
        self.assertIn("ZeroDivisionError: division by zero", record["traceback"])

    def test_legacy_bookkeeping(self) -> None:
        """What twisted.python.log's bridge adds to an event is left out."""
        events: list[LogEvent] = []
        Logger(namespace="tmd.test", observer=events.append).info("hello")
        events[0].update(format="%(log_legacy)s", isError=0, system="-", time=0.0)
        self.assertEqual(set(json.loads(json_line(events[0]))),
                         {"time", "level", "namespace", "text"})


def twistd(*argv: str) -> ServerOptions:
    """twistd's options after parsing C{argv}, tmd's among them."""
    options = ServerOptions()
    options.parseOptions(list(argv))
    return options


class OptionTests(SynchronousTestCase):
    def test_json(self) -> None:
        """--log-format json makes twistd log through tmd's JSON observer."""
        self.assertIs(twistd("-n", "tmd", "--log-format", "json")["logger"], json_observer)
        self.assertIsNone(twistd("-n", "tmd", "--log-format", "text")["logger"])
        self.assertIsNone(twistd("-n", "tmd")["logger"])

    def test_from_file(self) -> None:
        """log_format in the TOML file does the same."""
        path = self.mktemp()
        with open(path, "w", encoding="utf-8") as f:
            f.write('log_format = "json"\n')
        self.assertIs(twistd("-n", "tmd", "--config", path)["logger"], json_observer)

    def test_refused(self) -> None:
        """
        JSON goes to standard output: with a log file, syslog, another observer or
        no -n (a daemon's output goes nowhere), it is refused, as is a format tmd lacks.
        """
        for argv in (["tmd"], ["-n", "--logfile", "tmd.log", "tmd"], ["-n", "--syslog", "tmd"],
                     ["-n", "--logger", "twisted.logger.textFileLogObserver", "tmd"]):
            error = self.assertRaises(UsageError, twistd, *argv, "--log-format", "json")
            self.assertIn("--log-format json", str(error), argv)
        error = self.assertRaises(UsageError, twistd, "-n", "tmd", "--log-format", "xml")
        self.assertIn("text or json", str(error))
