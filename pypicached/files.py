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
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

from pypicached.disk import RunInThread, fsync_dir, write_all
from pypicached.links import FileLink, new_hasher
from pypicached.pages import Offline
from pypicached.paths import under
from pypicached.status import CacheStatus
from pypicached.upstream import BodyReader, UpstreamClient, UpstreamError, discard_body

log = Logger()

#: Larger than any file the index accepts; a bigger Content-Length is a lying upstream.
MAX_FILE_BYTES = 64 * 1024**3
#: When the disk fails mid-download, how much of the rest may wait in memory for clients.
MAX_MEMORY_TAIL = 512 * 1024**2

FindLink = Callable[[tuple[str, ...]], "Deferred[FileLink]"]


#: Refresh a file's access time (its "last used") at most this often.
TOUCH_EVERY = 3600.0


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
    #: Bytes from ``tail_start`` on, held in memory because the disk refused them.
    tail: bytearray | None = None
    tail_start: int | None = None
    _waiters: list[Deferred[None]] = attrs.field(factory=list, repr=False)

    @classmethod
    def committed(cls, path: Path, st: os.stat_result) -> "GrowingFile":
        return cls(path, State.COMPLETE, st.st_size, st.st_size, st.st_mtime)

    def available(self) -> int:
        """How many bytes a reader may send now: all of them only once committed."""
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
        offline: bool = False,
        response_timeout: float = 30.0,
        open_temporary: "Callable[[Path], tuple[BinaryIO, Path]] | None" = None,
    ) -> None:
        self._files = root / "files"
        self._tmp = root / "tmp"
        self._client = client
        self._clock = clock
        self._run_in_thread = run_in_thread
        self._find_link = find_link
        self._downloads: dict[tuple[str, ...], GrowingFile] = {}
        self._offline = offline
        self.response_timeout = response_timeout
        self._open_temporary = open_temporary or open_temporary_file
        self._disk_trouble: str | None = None
        self.digest_mismatches = 0
        #: Called with (path, size) after each commit; housekeeping listens here.
        self.on_commit: Callable[[Path, int], None] = lambda path, size: None

    def in_flight(self) -> int:
        """How many downloads are running now."""
        return len(self._downloads)

    def downloading(self, segments: tuple[str, ...]) -> GrowingFile | None:
        """The download in flight for this path, if any."""
        return self._downloads.get(segments)

    def sweep(self) -> int:
        """Remove temporaries left by a previous run; returns how many."""
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._files.mkdir(parents=True, exist_ok=True)
        removed = 0
        for entry in os.scandir(self._tmp):
            if entry.is_dir(follow_symlinks=False):  # a project list being rendered
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed += 1
        return removed

    def purge(self, filename: str) -> "Deferred[list[tuple[Path, int]]]":
        """Delete every cached copy of ``filename`` (and its ``.metadata``); what went, with sizes."""
        return self._run_in_thread(remove_cached_file, self._files, filename)

    def open(self, segments: tuple[str, ...]) -> "Deferred[tuple[GrowingFile, CacheStatus]]":
        return ensureDeferred(self._open(segments))

    async def _open(self, segments: tuple[str, ...]) -> tuple[GrowingFile, CacheStatus]:
        found = self._existing(segments)
        if found is not None:
            return found
        if self._offline:
            raise Offline("offline mode: this file is not in the cache")
        link = await self._find_link(segments)
        found = self._existing(segments)
        if found is not None:
            return found
        if self._client.health.is_down:
            raise self._client.health.outage()
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
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        now = self._clock.seconds()
        if st.st_atime < now - TOUCH_EVERY:
            try:  # the access time is the eviction order's "last used"; mtime stays Last-Modified
                os.utime(path, ns=(int(now * 1e9), st.st_mtime_ns))
            except OSError:
                pass
        return GrowingFile.committed(path, st), CacheStatus.HIT

    def _finished(self, segments: tuple[str, ...]) -> None:
        self._downloads.pop(segments, None)

    def _committed(self, path: Path, size: int) -> None:
        if self._disk_trouble is not None:
            log.info("Disk writes work again (last error: {e})", e=self._disk_trouble)
            self._disk_trouble = None
        self.on_commit(path, size)

    def _disk_failed(self, reason: str) -> None:
        """Log a disk problem once, not once per download, until a write succeeds again."""
        if self._disk_trouble is None:
            log.error("Cannot write the cache, serving files without storing them: {reason}", reason=reason)
        self._disk_trouble = reason


class _Download(BodyReader):
    """
    One upstream fetch feeding one ``GrowingFile``.

    If the disk refuses a write (full, read-only, I/O error) the download goes
    on with the rest of the file held in memory, so attached clients still get
    the whole file; it is just not cached.
    """

    def __init__(
        self, cache: FileCache, segments: tuple[str, ...], link: FileLink, growing: GrowingFile
    ) -> None:
        super().__init__(cache._client)
        self._cache = cache
        self._segments = segments
        self._link = link
        self._growing = growing
        self._expected = link.expected_digests()
        self._hashers = {name: new_hasher(name) for name in self._expected}
        self.unframed_is_complete = bool(self._expected)
        self._out: BinaryIO | None = None
        self._started = cache._clock.seconds()

    def start(self) -> None:
        client = self._cache._client
        client.get(self._link.url, timeout=self._cache.response_timeout).addCallbacks(self._response, self._fetch_failed)

    def _fetch_failed(self, failure: Failure) -> None:
        error = failure.value
        self._fail(str(error), getattr(error, "status", 502))

    def _response(self, response: IResponse) -> None:
        growing = self._growing
        growing.upstream_seconds = self._cache._clock.seconds() - self._started
        if response.code != 200:
            discard_body(self._cache._client, response)
            status = 404 if response.code in (404, 410) else 502
            self._fail(f"upstream answered {response.code} for {self._link.url}", status)
            return
        growing.size = response.length if response.length is not UNKNOWN_LENGTH else None
        if growing.size is not None and growing.size > MAX_FILE_BYTES:
            discard_body(self._cache._client, response)
            self._fail(f"upstream file of {growing.size} bytes is over the {MAX_FILE_BYTES} byte limit")
            return
        try:
            self._out, growing.path = self._cache._open_temporary(self._cache._tmp)
        except OSError as e:
            self._cache._disk_failed(f"cannot create a temporary file: {e.strerror}")
            growing.tail = bytearray()
            growing.tail_start = 0
        growing.state = State.STREAMING
        growing._notify()
        response.deliverBody(self)

    def received(self, data: bytes) -> None:
        growing = self._growing
        if growing.state is State.FAILED:
            return  # abandoned; the rest of the body is being discarded
        for hasher in self._hashers.values():
            hasher.update(data)
        if growing.tail is None:
            assert self._out is not None
            try:
                write_all(self._out, data)
            except OSError as e:
                self._cache._disk_failed(f"cannot write {growing.path}: {e.strerror}")
                growing.tail = bytearray(data)
                growing.tail_start = growing.written
        else:
            if len(growing.tail) + len(data) > MAX_MEMORY_TAIL:
                self._fail("the disk failed and the rest of the file is too large to hold in memory")
                self.abandon()
                return
            growing.tail += data
        growing.written += len(data)
        growing._notify()

    def ended(self, error: UpstreamError | None) -> None:
        growing = self._growing
        if growing.state is State.FAILED:
            return
        if error is not None:
            self._fail(f"{error.reason} after {growing.written} bytes of {self._link.url}", error.status)
            return
        if growing.size is not None and growing.written != growing.size:
            self._fail(f"upstream sent {growing.written} of {growing.size} bytes")
            return
        for name, want in self._expected.items():
            got = self._hashers[name].hexdigest()
            if got != want:
                self._cache.digest_mismatches += 1
                log.error(
                    "Digest mismatch for {url}: {name} expected {want}, got {got}; discarded",
                    url=self._link.url, name=name, want=want, got=got,
                )
                self._fail(f"{name} mismatch: expected {want}, got {got}")
                return
        if growing.tail is not None:
            self._served_uncached()
            return
        out = self._out
        assert out is not None
        self._cache._run_in_thread(_sync_and_close, out).addCallbacks(
            lambda _: self._commit(),
            lambda f: self._served_uncached(f"cannot write {growing.path}: {f.getErrorMessage()}"),
        )

    def _commit(self) -> None:
        final = under(self._cache._files, self._segments)
        try:
            if os.stat(self._growing.path).st_size != self._growing.written:
                raise OSError(errno.EIO, "the temporary file is not the size received")
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self._growing.path, final)
            except FileNotFoundError:  # housekeeping removed the empty directory meanwhile
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(self._growing.path, final)
            modified = final.stat().st_mtime
        except OSError as e:
            self._served_uncached(f"cannot commit {final}: {e.strerror}")
            return
        growing = self._growing
        growing.path = final
        growing.modified = modified
        self._complete()
        self._cache._committed(final, growing.written)
        self._cache._run_in_thread(fsync_dir, final.parent).addErrback(
            lambda f: log.error("fsync of {dir} failed: {e}", dir=str(final.parent), e=f.getErrorMessage())
        )

    def _served_uncached(self, disk_error: str | None = None) -> None:
        """The bytes are good but could not be stored: finish the clients, keep nothing."""
        if disk_error:
            self._cache._disk_failed(disk_error)
        self._complete()
        self._remove_temporary()

    def _complete(self) -> None:
        growing = self._growing
        growing.size = growing.written
        growing.state = State.COMPLETE
        self._cache._finished(self._segments)
        growing._notify()

    def _fail(self, reason: str, status: int = 502) -> None:
        growing = self._growing
        if growing.state in (State.FAILED, State.COMPLETE):
            return
        log.warn("Download of {url} abandoned: {reason}", url=self._link.url, reason=reason)
        growing.error = reason
        growing.error_status = status
        growing.state = State.FAILED
        self._cache._finished(self._segments)
        growing._notify()
        self._remove_temporary()

    def _remove_temporary(self) -> None:
        """Readers keep their open handles; the name goes at once."""
        if self._out is not None:
            try:
                self._out.close()
            except OSError:
                pass
        if self._out is not None or self._growing.path.name.startswith("dl-"):
            try:
                os.unlink(self._growing.path)
            except OSError:
                pass


def remove_cached_file(files: Path, filename: str) -> list[tuple[Path, int]]:
    """
    Delete the committed files named ``filename`` or ``filename.metadata`` anywhere
    under ``files``. Downloads in flight live in ``tmp/`` and are left alone; a
    client reading a deleted file keeps its handle and finishes.
    """
    wanted = {filename, filename + ".metadata"}
    removed = []
    for directory, _, names in os.walk(files):
        for name in wanted.intersection(names):
            path = Path(directory, name)
            try:
                size = path.stat().st_size
                os.unlink(path)
            except FileNotFoundError:
                continue
            removed.append((path, size))
    return removed


def open_temporary_file(directory: Path) -> "tuple[BinaryIO, Path]":
    """An unbuffered new file in ``directory``: every write reaches the OS, where readers see it."""
    fd, name = tempfile.mkstemp(dir=directory, prefix="dl-")
    return os.fdopen(fd, "wb", buffering=0), Path(name)


def _sync_and_close(out: BinaryIO) -> None:
    try:
        os.fsync(out.fileno())
    finally:
        out.close()
