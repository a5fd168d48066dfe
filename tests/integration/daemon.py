"""
A real C{twistd -n tmd} process for end-to-end tests.

It runs from a temporary working directory, so it uses the installed tmd (not
the checkout), listens on a free loopback port, and says which in its log: the
test waits for that line rather than polling the port.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

LISTENING = re.compile(rb"tmd listening on TCP [0-9.]+:(\d+)")
CLEAN_STOP = (0, None)
START_TIMEOUT = 30
STOP_TIMEOUT = 30


def twistd() -> str:
    """The twistd beside this Python, so the daemon runs in the same environment."""
    return str(Path(sys.executable).parent / "twistd")


class _Output(ProcessProtocol):
    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.status: tuple[int | None, int | None] = (None, None)
        self.waiting: list[tuple[re.Pattern[bytes], Deferred[None]]] = []
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        *complete, self._partial = (self._partial + data).split(b"\n")
        for line in complete:
            self.lines.append(line)
            for pattern, waiter in [w for w in self.waiting if w[0].search(line)]:
                self.waiting.remove((pattern, waiter))
                waiter.callback(None)
            match = LISTENING.search(line)
            if match and not self.listening.called:
                self.listening.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        if self._partial:  # a last line without its newline
            self.lines.append(self._partial)
            self._partial = b""
        ended = reason.value if reason.check(ProcessDone, ProcessTerminated) else None
        code = ended.exitCode if ended is not None else None
        self.status = (code, ended.signal if ended is not None else None)
        if not self.listening.called:
            output = b"\n".join(self.lines).decode("utf-8", "replace")
            self.listening.errback(
                RuntimeError(f"twistd exited ({code}) before listening:\n{output}"))
        self.ended.callback(None)


class Daemon:
    """One running daemon; C{url} is its base URL once C{start} has fired."""

    def __init__(self, directory: Path, args: list[str], pythonpath: str | None = None) -> None:
        self.directory = directory
        self.args = args
        self.pythonpath = pythonpath
        self._first_line = 0
        self.port = 0
        self.lines: list[bytes] = []
        """Everything every run of this daemon logged."""
        self._output = _Output(self.lines)

    @classmethod
    async def start(cls, test: TestCase, *extra: str, directory: Path | None = None,
                    listen: str = "tcp:0:interface=127.0.0.1",
                    pythonpath: str | None = None) -> Daemon:
        """
        Start a daemon (on a fresh SQLite file in C{directory}) and stop it at cleanup;
        with C{pythonpath} as its C{PYTHONPATH} (to find more plugins, say).
        """
        daemon = cls._new(test, extra, directory, listen)
        daemon.pythonpath = pythonpath
        await daemon._spawn()
        return daemon

    @classmethod
    async def start_failing(cls, test: TestCase, *extra: str, directory: Path | None = None,
                            listen: str = "tcp:0:interface=127.0.0.1") -> Daemon:
        """
        Start a daemon that is expected to exit before it listens (it cannot start);
        fires once it has exited, for its C{status} and C{output}. Fails if it listens.
        """
        daemon = cls._new(test, extra, directory, listen)
        daemon._launch()
        try:
            port = await daemon._output.listening.addTimeout(START_TIMEOUT, reactor)
        except RuntimeError:  # it exited before listening: what was expected
            await daemon._output.ended
            return daemon
        raise AssertionError(f"the daemon listens on port {port} instead of exiting:\n"
                             f"{daemon.output}")

    @classmethod
    def _new(cls, test: TestCase, extra: tuple[str, ...], directory: Path | None,
             listen: str) -> Daemon:
        if directory is None:
            directory = Path(test.mktemp()).resolve()
            directory.mkdir(parents=True)
        args = ["--listen", listen, "--database", f"sqlite:{directory / 'tmd.sqlite3'}", *extra]
        daemon = cls(directory, args)
        test.addCleanup(daemon.stop)
        return daemon

    def _launch(self) -> None:
        self._first_line = len(self.lines)
        self._output = _Output(self.lines)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        if self.pythonpath is not None:
            env["PYTHONPATH"] = self.pythonpath
        self._process = reactor.spawnProcess(
            self._output, twistd(), [twistd(), "-n", "--pidfile=", "tmd", *self.args],
            env=env, path=str(self.directory))

    async def _spawn(self) -> None:
        self._launch()
        self.port = await self._output.listening.addTimeout(START_TIMEOUT, reactor)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def status(self) -> tuple[int | None, int | None]:
        """The last run's (exit code, signal) once it has ended, else (None, None)."""
        return self._output.status

    @property
    def output(self) -> str:
        return b"\n".join(self.lines).decode("utf-8", "replace")

    async def logged(self, pattern: bytes) -> None:
        """Once the current run has logged a line matching C{pattern} (or at once if it has)."""
        found = re.compile(pattern)
        if any(found.search(line) for line in self._output.lines[self._first_line:]):
            return
        waiter: Deferred[None] = Deferred()
        self._output.waiting.append((found, waiter))
        await waiter.addTimeout(START_TIMEOUT, reactor)

    async def start_again(self) -> None:
        """Start again, on the same directory and arguments, after C{stop}."""
        await self._spawn()

    async def restart(self, kill: bool = False) -> None:
        """Stop (or with C{kill}, SIGKILL, as a crash would) and start again."""
        if kill:
            self._process.signalProcess(signal.SIGKILL)
            await self._output.ended.addTimeout(STOP_TIMEOUT, reactor)
        else:
            await self.stop()
        await self._spawn()

    async def stop(self) -> tuple[int | None, int | None]:
        """
        SIGTERM; once the process has gone, its (exit code, signal): after a clean
        shutdown, L{CLEAN_STOP} (exit 0).
        """
        if not self._output.ended.called:
            self._process.signalProcess(signal.SIGTERM)
            await self._output.ended.addTimeout(STOP_TIMEOUT, reactor)
        return self._output.status
