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

import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pypicached.base.disk import RunInThread
from pypicached.base.paths import under
from pypicached.cache.download import Download, DownloadPlace
from pypicached.cache.freshness import Offline
from pypicached.cache.growing import GrowingFile
from pypicached.cache.outcome import CacheStatus
from pypicached.cache.router import Linked
from pypicached.cache.space import TOUCH_EVERY

log = Logger()


class FileCache:
    """Finds a file on disk, joins its download, or starts one."""

    def __init__(
        self,
        *,
        root: Path,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        open_temporary: Callable[[Path], tuple[BinaryIO, Path]] | None = None,
    ) -> None:
        self._files = root / "files"
        self._tmp = root / "tmp"
        self._clock = clock
        self._run_in_thread = run_in_thread
        self._downloads: dict[tuple[str, ...], GrowingFile] = {}
        #: How a download gets its temporary file (a test swaps in a disk that fills up).
        self.open_temporary = open_temporary or open_temporary_file
        self._disk_trouble: str | None = None
        self.digest_mismatches = 0
        #: Called with (path, size) after each commit; housekeeping listens here.
        self.on_commit: Callable[[Path, int], None] = lambda path, size: None
        self._place = DownloadPlace(
            clock=clock,
            run_in_thread=run_in_thread,
            tmp=self._tmp,
            open_temporary=lambda directory: self.open_temporary(directory),
            final_path=lambda segments: under(self._files, segments),
            disk_failed=self._disk_failed,
            committed=self._committed,
            ended=lambda segments: self._downloads.pop(segments, None),
            mismatched=self._mismatched,
        )

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

    def purge(self, filename: str) -> Deferred[list[tuple[Path, int]]]:
        """Delete every cached copy of ``filename`` (and its ``.metadata``); what went, with sizes."""
        return self._run_in_thread(remove_cached_file, self._files, filename)

    def fetch(self, segments: tuple[str, ...], linked: Linked) -> tuple[GrowingFile, CacheStatus]:
        """
        The file at ``segments``, downloaded from where ``linked`` says: joined if a
        download started meanwhile, refused at once if its index is offline or down.
        """
        found = self.existing(segments)
        if found is not None:
            return found
        source = linked.source
        if source.offline:
            raise Offline("offline mode: this file is not in the cache")
        if source.health.is_down:
            raise source.health.outage()
        growing = GrowingFile(self._tmp / "pending")
        self._downloads[segments] = growing
        Download(self._place, source.client, segments, linked.link, growing).start()
        return growing, CacheStatus.MISS

    def existing(self, segments: tuple[str, ...]) -> tuple[GrowingFile, CacheStatus] | None:
        """The file at ``segments`` if it is committed (HIT) or downloading (JOINED); its last use noted."""
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

    def stored_at(self, segments: tuple[str, ...]) -> float | None:
        """
        When the file at ``segments`` came into the cache (now, while it downloads);
        None if it is not here. No later than its upload, whatever its page says.
        """
        if segments in self._downloads:
            return self._clock.seconds()
        try:
            st = under(self._files, segments).stat()
        except OSError:
            return None
        return st.st_mtime if stat.S_ISREG(st.st_mode) else None

    def _mismatched(self) -> None:
        self.digest_mismatches += 1

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


def open_temporary_file(directory: Path) -> tuple[BinaryIO, Path]:
    """An unbuffered new file in ``directory``: every write reaches the OS, where readers see it."""
    fd, name = tempfile.mkstemp(dir=directory, prefix="dl-")
    return os.fdopen(fd, "wb", buffering=0), Path(name)
