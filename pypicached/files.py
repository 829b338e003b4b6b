"""
Package files in the cache: committed ones on disk, and downloads in flight
that any number of clients follow as the bytes arrive.

A download writes to a temporary file in the cache's own filesystem, hashes as
it goes, and is moved under its final name only when it is whole, fsynced and
matches every digest its index page (or its path) promised. Until then readers
may stream it, but never its last byte, so no client can take a bad or partial
file for a complete one.
"""

from __future__ import annotations

import enum
import os
import tempfile
from pathlib import Path
from typing import Callable

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

from pypicached.disk import RunInThread, fsync_dir
from pypicached.links import FileLink, new_hasher
from pypicached.paths import under
from pypicached.status import CacheStatus
from pypicached.upstream import UpstreamClient, discard_body

log = Logger()

FindLink = Callable[[tuple[str, ...]], "Deferred[FileLink]"]


class State(enum.Enum):
    STARTING = "starting"  # waiting for the upstream's response headers
    STREAMING = "streaming"  # bytes arriving in the temporary file
    COMPLETE = "complete"  # committed under its final name
    FAILED = "failed"  # abandoned; nothing was committed


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
    _waiters: list[Deferred[None]] = attrs.field(factory=list, repr=False)

    @classmethod
    def committed(cls, path: Path, st: os.stat_result) -> "GrowingFile":
        return cls(path, State.COMPLETE, st.st_size, st.st_size, st.st_mtime)

    def available(self) -> int:
        """How many bytes a reader may send now: all of them only once committed."""
        if self.state is State.COMPLETE:
            return self.written
        if self.size is not None:
            return min(self.written, self.size - 1)
        return self.written

    def changed(self) -> "Deferred[None]":
        """Fires at the next change of ``written`` or ``state``."""
        d: Deferred[None] = Deferred()
        if self.state in (State.COMPLETE, State.FAILED):
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    async def started(self) -> None:
        """Wait until the size is known; raise ``DownloadFailed`` if it never will be."""
        while self.state is State.STARTING:
            await self.changed()
        if self.state is State.FAILED:
            raise DownloadFailed(self.error or "download failed", self.error_status)

    async def finished(self) -> None:
        """Wait until the file is committed or abandoned."""
        while self.state not in (State.COMPLETE, State.FAILED):
            await self.changed()

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)


class DownloadFailed(Exception):
    """The upstream fetch of a file failed before any of it could be served."""

    def __init__(self, reason: str, status: int = 502) -> None:
        super().__init__(reason)
        self.status = status


class FileCache:
    """Finds a file on disk, joins its download, or starts one."""

    def __init__(
        self,
        *,
        root: Path,
        client: UpstreamClient,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        find_link: FindLink,
    ) -> None:
        self._files = root / "files"
        self._tmp = root / "tmp"
        self._client = client
        self._clock = clock
        self._run_in_thread = run_in_thread
        self._find_link = find_link
        self._downloads: dict[tuple[str, ...], GrowingFile] = {}

    def downloading(self, segments: tuple[str, ...]) -> GrowingFile | None:
        """The download in flight for this path, if any."""
        return self._downloads.get(segments)

    def sweep(self) -> int:
        """Remove temporaries left by a previous run; returns how many."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._files.mkdir(parents=True, exist_ok=True)
        removed = 0
        for entry in os.scandir(self._tmp):
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed += 1
        return removed

    def open(self, segments: tuple[str, ...]) -> "Deferred[tuple[GrowingFile, CacheStatus]]":
        return ensureDeferred(self._open(segments))

    async def _open(self, segments: tuple[str, ...]) -> tuple[GrowingFile, CacheStatus]:
        found = self._existing(segments)
        if found is not None:
            return found
        link = await self._find_link(segments)
        found = self._existing(segments)
        if found is not None:
            return found
        growing = GrowingFile(self._tmp / "pending")
        self._downloads[segments] = growing
        _Download(self, segments, link, growing).start()
        return growing, CacheStatus.MISS

    def _existing(self, segments: tuple[str, ...]) -> tuple[GrowingFile, CacheStatus] | None:
        growing = self._downloads.get(segments)
        if growing is not None:
            return growing, CacheStatus.JOINED
        path = under(self._files, segments)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return GrowingFile.committed(path, st), CacheStatus.HIT

    def _finished(self, segments: tuple[str, ...]) -> None:
        self._downloads.pop(segments, None)


class _Download(Protocol):
    """One upstream fetch feeding one ``GrowingFile``."""

    def __init__(
        self, cache: FileCache, segments: tuple[str, ...], link: FileLink, growing: GrowingFile
    ) -> None:
        self._cache = cache
        self._segments = segments
        self._link = link
        self._growing = growing
        self._expected = link.expected_digests()
        self._hashers = {name: new_hasher(name) for name in self._expected}
        self._out: "os.FileIO | None" = None
        self._started = cache._clock.seconds()

    def start(self) -> None:
        self._cache._client.get(self._link.url).addCallbacks(self._response, self._fetch_failed)

    def _fetch_failed(self, failure: Failure) -> None:
        self._fail(f"upstream fetch of {self._link.url} failed: {failure.getErrorMessage()}")

    def _response(self, response: IResponse) -> None:
        self._growing.upstream_seconds = self._cache._clock.seconds() - self._started
        if response.code != 200:
            discard_body(response)
            status = 404 if response.code in (404, 410) else 502
            self._fail(f"upstream answered {response.code} for {self._link.url}", status)
            return
        try:
            fd, name = tempfile.mkstemp(dir=self._cache._tmp, prefix="dl-")
        except OSError as e:
            discard_body(response)
            self._fail(f"cannot create a temporary file: {e.strerror}")
            return
        self._out = os.fdopen(fd, "wb", buffering=0)  # type: ignore[assignment]
        self._growing.path = Path(name)
        self._growing.size = response.length if response.length is not UNKNOWN_LENGTH else None
        self._growing.state = State.STREAMING
        self._growing._notify()
        response.deliverBody(self)

    def dataReceived(self, data: bytes) -> None:
        assert self._out is not None
        self._out.write(data)
        for hasher in self._hashers.values():
            hasher.update(data)
        self._growing.written += len(data)
        self._growing._notify()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # type: ignore[assignment]
        growing = self._growing
        if not reason.check(ResponseDone, PotentialDataLoss):
            self._fail(f"upstream body broken off after {growing.written} bytes: {reason.getErrorMessage()}")
            return
        if growing.size is not None and growing.written != growing.size:
            self._fail(f"upstream sent {growing.written} of {growing.size} bytes")
            return
        for name, want in self._expected.items():
            got = self._hashers[name].hexdigest()
            if got != want:
                log.error(
                    "Digest mismatch for {url}: {name} expected {want}, got {got}; discarded",
                    url=self._link.url, name=name, want=want, got=got,
                )
                self._fail(f"{name} mismatch: expected {want}, got {got}")
                return
        out = self._out
        assert out is not None
        self._cache._run_in_thread(_sync_and_close, out).addCallbacks(
            lambda _: self._commit(), lambda f: self._fail(f"cannot write the cache: {f.getErrorMessage()}")
        )

    def _commit(self) -> None:
        final = under(self._cache._files, self._segments)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._growing.path, final)
        except OSError as e:
            self._fail(f"cannot commit {final}: {e.strerror}")
            return
        growing = self._growing
        growing.path = final
        growing.size = growing.written
        growing.modified = final.stat().st_mtime
        growing.state = State.COMPLETE
        self._cache._finished(self._segments)
        growing._notify()
        self._cache._run_in_thread(fsync_dir, final.parent).addErrback(
            lambda f: log.error("fsync of {dir} failed: {e}", dir=str(final.parent), e=f.getErrorMessage())
        )

    def _fail(self, reason: str, status: int = 502) -> None:
        log.warn("Download of {url} abandoned: {reason}", url=self._link.url, reason=reason)
        if self._out is not None:
            try:
                self._out.close()
            except OSError:
                pass
        if self._growing.state is not State.STARTING:
            try:
                os.unlink(self._growing.path)
            except OSError:
                pass
        self._growing.error = reason
        self._growing.error_status = status
        self._growing.state = State.FAILED
        self._cache._finished(self._segments)
        self._growing._notify()


def _sync_and_close(out: "os.FileIO") -> None:
    try:
        os.fsync(out.fileno())
    finally:
        out.close()
