"""The real ``twistd pypicached`` command as a child process, for the tests that start the daemon.

Why a protocol that reads the log: the daemon is told to listen on port 0, so the test learns the
port from the "starting on" line, and waits on that line instead of sleeping.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

__all__ = ["TWISTD", "Daemon", "twistd_args"]

TWISTD = str(Path(sys.executable).with_name("twistd"))


class Daemon(ProcessProtocol):
    """A twistd child whose log we read to learn its port, without sleeping."""

    def __init__(self) -> None:
        self.output = b""
        self.port: Deferred[int] = Deferred()
        self.ended: Deferred[int] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        match = re.search(rb"ProxySite (?:\(TLS\) )?starting on (\d+)", self.output)
        if match and not self.port.called:
            self.port.callback(int(match.group(1)))

    errReceived = outReceived

    def processEnded(self, reason) -> None:  # type: ignore[no-untyped-def]
        if not self.port.called:
            self.port.errback(RuntimeError(self.output.decode(errors="replace")))
        self.ended.callback((reason.value.exitCode, getattr(reason.value, "signal", None)))


def twistd_args(*args: str) -> list[str]:
    return [TWISTD, "--nodaemon", "--pidfile=", "pypicached", *args]
