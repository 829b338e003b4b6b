"""
The tokens file as the daemon sees it: read at start, again on SIGHUP and
whenever a poll finds it changed (its mtime, size or inode), so a revoked token
stops working within ``POLL_EVERY`` seconds with no restart.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from pypicached.base.tokens import TokenEntry, parse

log = Logger(namespace="pypicached")

#: Seconds between looks at the file's mtime.
POLL_EVERY = 1.0

Signature = tuple[int, int, int] | None


class TokensFile:
    """The current entries of one tokens file; ``on_change`` is told whenever they are read anew."""

    def __init__(self, path: Path, clock: IReactorTime, on_change: Callable[[tuple[TokenEntry, ...]], None]) -> None:
        self.path = path
        self._clock = clock
        self._on_change = on_change
        self._seen: Signature = None
        self._poller: LoopingCall | None = None
        self.entries: tuple[TokenEntry, ...] = ()

    def _signature(self) -> Signature:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def reload(self) -> None:
        """Read the file now (SIGHUP, start); a file that cannot be read admits no token."""
        self._seen = self._signature()
        try:
            text = self.path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            log.error(
                "Cannot read the tokens file {path} ({e}): no token is accepted until it can be read",
                path=os.fspath(self.path),
                e=getattr(e, "strerror", None) or type(e).__name__,
            )
            text = ""
        entries, bad = parse(text)
        for number, reason in bad:  # the line itself is never logged
            log.warn(
                "Tokens file {path}, line {n} ignored: {reason}", path=os.fspath(self.path), n=number, reason=reason
            )
        self.entries = entries
        self._on_change(entries)

    def poll(self) -> None:
        """Re-read the file if it changed since it was last read."""
        if self._signature() != self._seen:
            self.reload()

    def start(self) -> None:
        self.reload()
        self._poller = LoopingCall(self.poll)
        self._poller.clock = self._clock
        self._poller.start(POLL_EVERY, now=False)

    def stop(self) -> None:
        if self._poller is not None and self._poller.running:
            self._poller.stop()
        self._poller = None
