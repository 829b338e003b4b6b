"""
A package file as far as its bytes are known: committed on disk, or still
arriving. Readers follow it; only the download that fills it moves it from state
to state, through the transitions below, each of which checks where it comes from.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import BinaryIO

import attrs
from twisted.internet.defer import Deferred


class State(enum.Enum):
    STARTING = "starting"  # waiting for the upstream's response headers
    STREAMING = "streaming"  # bytes arriving in the temporary file
    COMPLETE = "complete"  # every byte here and checked (committed, or served without storing)
    FAILED = "failed"  # abandoned; nothing was committed


class DownloadFailed(Exception):
    """The upstream fetch of a file failed before any of it could be served."""

    def __init__(self, reason: str, status: int = 502) -> None:
        super().__init__(reason)
        self.status = status


@attrs.define(eq=False)
class GrowingFile:
    """
    The bytes of one file as far as they are known, for readers to follow.

    A committed file is simply one that is already ``COMPLETE``; readers treat
    both alike, which is what lets a late client join a download in progress.
    """

    path: Path
    state: State = State.STARTING
    size: int | None = None
    written: int = 0
    modified: float | None = None
    error: str | None = None
    error_status: int = 502
    upstream_seconds: float | None = None
    #: Bytes from ``tail_start`` on, held in memory because the disk refused them.
    tail: bytearray | None = None
    tail_start: int | None = None
    _waiters: list[Deferred[None]] = attrs.field(factory=list, repr=False)

    @classmethod
    def committed(cls, path: Path, st: os.stat_result) -> GrowingFile:
        return cls(path, State.COMPLETE, st.st_size, st.st_size, st.st_mtime)

    # --- for readers ---------------------------------------------------------------

    def available(self) -> int:
        """How many bytes a reader may send now: all of them only once complete."""
        if self.state is State.COMPLETE:
            return self.written
        return max(0, self.written - 1)

    def open(self) -> BinaryIO | None:
        """A reader's own handle on the bytes on disk (None if none reached the disk)."""
        if self.tail_start == 0:
            return None
        return open(self.path, "rb")

    def read(self, handle: BinaryIO | None, pos: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``pos``, from the disk or from the in-memory tail."""
        if self.tail_start is not None and pos >= self.tail_start:
            assert self.tail is not None
            start = pos - self.tail_start
            return bytes(self.tail[start : start + n])
        assert handle is not None
        if self.tail_start is not None:
            n = min(n, self.tail_start - pos)
        handle.seek(pos)
        return handle.read(n)

    def changed(self) -> Deferred[None]:
        """Fires at the next change of ``written`` or ``state``."""
        d: Deferred[None] = Deferred()
        if self.ended:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    @property
    def ended(self) -> bool:
        return self.state in (State.COMPLETE, State.FAILED)

    async def started(self) -> None:
        """Wait until the size is known; raise ``DownloadFailed`` if it never will be."""
        while self.state is State.STARTING:
            await self.changed()
        if self.state is State.FAILED:
            raise DownloadFailed(self.error or "download failed", self.error_status)

    async def finished(self) -> None:
        """Wait until the file is complete or abandoned."""
        while not self.ended:
            await self.changed()

    # --- for the download that fills it ---------------------------------------------

    def begin(self, size: int | None, path: Path | None) -> None:
        """The headers came: bytes follow, into ``path`` (None: the disk refused even that, into memory)."""
        self._leaving(State.STARTING)
        self.size = size
        if path is None:
            self.tail, self.tail_start = bytearray(), 0
        else:
            self.path = path
        self._enter(State.STREAMING)

    def wrote(self, n: int) -> None:
        """``n`` more bytes reached the temporary file."""
        self._leaving(State.STREAMING)
        assert self.tail is None, "bytes written to disk after the disk had failed"
        self.written += n
        self._notify()

    def held(self, data: bytes) -> None:
        """More bytes, kept in memory because the disk refused them (the tail starts here if need be)."""
        self._leaving(State.STREAMING)
        if self.tail is None:
            self.tail, self.tail_start = bytearray(), self.written
        self.tail += data
        self.written += len(data)
        self._notify()

    def complete(self, path: Path | None = None, modified: float | None = None) -> None:
        """Every byte is here and checked; committed at ``path`` if given, else served without storing."""
        self._leaving(State.STREAMING)
        if path is not None:
            self.path, self.modified = path, modified
        self.size = self.written
        self._enter(State.COMPLETE)

    def fail(self, reason: str, status: int = 502) -> bool:
        """Abandon the download (if it has not ended): whether this call did."""
        if self.ended:
            return False
        self.error, self.error_status = reason, status
        self._enter(State.FAILED)
        return True

    def _leaving(self, expected: State) -> None:
        if self.state is not expected:
            raise RuntimeError(f"a file {self.state.value} cannot do what a file {expected.value} does")

    def _enter(self, state: State) -> None:
        self.state = state
        self._notify()

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)
