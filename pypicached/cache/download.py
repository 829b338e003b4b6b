"""
One upstream fetch feeding one ``GrowingFile``: written to a temporary file as
it arrives, hashed as it goes, and committed under its final name only when it
is whole, on disk and matches every digest its index page (or path) promised.

If the disk refuses a write (full, read-only, I/O error) the download goes on
with the rest of the file held in memory, so attached clients still get the
whole file; it is just not cached.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import UNKNOWN_LENGTH, IResponse

from pypicached.base.disk import RunInThread, fsync_dir, move_into_place, write_all
from pypicached.cache.growing import GrowingFile, State
from pypicached.simpleapi.links import FileLink, new_hasher
from pypicached.upstream.body import BodyReader, discard_body
from pypicached.upstream.errors import UpstreamError
from pypicached.upstream.mirrors import IndexClient

log = Logger()

#: Larger than any file the index accepts; a bigger Content-Length is a lying upstream.
MAX_FILE_BYTES = 64 * 1024**3
#: When the disk fails mid-download, how much of the rest may wait in memory for clients.
MAX_MEMORY_TAIL = 512 * 1024**2


@attrs.frozen
class DownloadPlace:
    """What a download needs from the cache it fills, and what it tells the cache."""

    clock: IReactorTime
    run_in_thread: RunInThread
    tmp: Path
    #: An unbuffered new file in a directory, and its path.
    open_temporary: Callable[[Path], tuple[BinaryIO, Path]]
    #: Where the file goes when it is whole (the final path).
    final_path: Callable[[tuple[str, ...]], Path]
    #: The disk refused something (the reason).
    disk_failed: Callable[[str], None]
    #: A file went into place (its path and size).
    committed: Callable[[Path, int], None]
    #: The download ended, however.
    ended: Callable[[tuple[str, ...]], object]
    #: The bytes did not match a published digest.
    mismatched: Callable[[], None]


class Download(BodyReader):
    """Fetches ``link`` with ``client`` (its index's) into ``growing``, for the cache entry at ``segments``."""

    def __init__(
        self,
        place: DownloadPlace,
        client: IndexClient,
        segments: tuple[str, ...],
        link: FileLink,
        growing: GrowingFile,
    ) -> None:
        super().__init__(client)
        self._place = place
        self._client = client
        self._segments = segments
        self._link = link
        self._growing = growing
        self._expected = link.expected_digests()
        self._hashers = {name: new_hasher(name) for name in self._expected}
        self.unframed_is_complete = bool(self._expected)
        self._out: BinaryIO | None = None
        self._started = place.clock.seconds()

    def start(self) -> None:
        self._client.get(self._link.url, timeout=self._client.file_timeout).addCallbacks(
            self._response, self._fetch_failed
        )

    def _fetch_failed(self, failure: Failure) -> None:
        error = failure.value
        self._fail(str(error), getattr(error, "status", 502))

    def _response(self, response: IResponse) -> None:
        place, growing = self._place, self._growing
        growing.upstream_seconds = place.clock.seconds() - self._started
        if response.code != 200:
            discard_body(self._client, response)
            status = 404 if response.code in (404, 410) else 502
            self._fail(f"upstream answered {response.code} for {self._link.url}", status)
            return
        size = response.length if response.length is not UNKNOWN_LENGTH else None
        if size is not None and size > MAX_FILE_BYTES:
            discard_body(self._client, response)
            self._fail(f"upstream file of {size} bytes is over the {MAX_FILE_BYTES} byte limit")
            return
        path: Path | None = None
        try:
            self._out, path = place.open_temporary(place.tmp)
        except OSError as e:
            place.disk_failed(f"cannot create a temporary file: {e.strerror}")
        growing.begin(size, path)
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
                self._place.disk_failed(f"cannot write {growing.path}: {e.strerror}")
                growing.held(data)
            else:
                growing.wrote(len(data))
        elif len(growing.tail) + len(data) > MAX_MEMORY_TAIL:
            self._fail("the disk failed and the rest of the file is too large to hold in memory")
            self.abandon()
        else:
            growing.held(data)

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
                self._place.mismatched()
                log.error(
                    "Digest mismatch for {url}: {name} expected {want}, got {got}; discarded",
                    url=self._link.url,
                    name=name,
                    want=want,
                    got=got,
                )
                self._fail(f"{name} mismatch: expected {want}, got {got}")
                return
        self._report.downloaded(growing.written, self._place.clock.seconds() - self._started)
        if growing.tail is not None:
            self._served_uncached()
            return
        assert self._out is not None
        self._place.run_in_thread(_sync_and_close, self._out).addCallbacks(
            lambda _: self._commit(),
            lambda f: self._served_uncached(f"cannot write {growing.path}: {f.getErrorMessage()}"),
        )

    def _commit(self) -> None:
        """Into place on the event loop, so no reader ever sees the path change under it; the fsync in a thread."""
        place, growing = self._place, self._growing
        final = place.final_path(self._segments)
        try:
            if os.stat(growing.path).st_size != growing.written:
                raise OSError(errno.EIO, "the temporary file is not the size received")
            move_into_place(growing.path, final)
            modified = final.stat().st_mtime
        except OSError as e:
            self._served_uncached(f"cannot commit {final}: {e.strerror}")
            return
        growing.complete(final, modified)
        place.ended(self._segments)
        place.committed(final, growing.written)
        place.run_in_thread(fsync_dir, final.parent).addErrback(
            lambda f: log.error("fsync of {dir} failed: {e}", dir=str(final.parent), e=f.getErrorMessage())
        )

    def _served_uncached(self, disk_error: str | None = None) -> None:
        """The bytes are good but could not be stored: finish the clients, keep nothing."""
        if disk_error:
            self._place.disk_failed(disk_error)
        self._growing.complete()
        self._place.ended(self._segments)
        self._remove_temporary()

    def _fail(self, reason: str, status: int = 502) -> None:
        if not self._growing.fail(reason, status):
            return
        log.warn("Download of {url} abandoned: {reason}", url=self._link.url, reason=reason)
        self._place.ended(self._segments)
        self._remove_temporary()

    def _remove_temporary(self) -> None:
        """Readers keep their open handles; the name goes at once."""
        if self._out is None:
            return
        try:
            self._out.close()
        except OSError:
            pass
        try:
            os.unlink(self._growing.path)
        except OSError:
            pass


def _sync_and_close(out: BinaryIO) -> None:
    try:
        os.fsync(out.fileno())
    finally:
        out.close()
