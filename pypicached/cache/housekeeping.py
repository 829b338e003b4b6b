"""
Keeping the cache inside its disk budget: files unused for ``inactive`` go,
then the least recently used until the cache is under ``max_size`` and the
filesystem has ``min_free`` bytes free.

A pass walks the cache in a worker thread, so the event loop only shares the
interpreter with it and never waits on the disk. Deleting a file never breaks
a response in progress: a reader's open handle keeps the bytes until it is done,
and downloads in progress live in ``tmp/``, which a pass never touches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from pypicached.base.disk import RunInThread
from pypicached.cache.space import Entry, free_space, remove, scan, scan_pages

log = Logger()

#: How often a pass runs even when nothing asks for one.
INTERVAL = 600.0


@attrs.frozen
class Budget:
    max_size: int
    min_free: int
    inactive: float


@attrs.frozen
class CacheUsage:
    """The cache's files against its disk budget, as reported to operators."""

    size: int
    files: int
    free: int
    max_size: int
    min_free: int


@attrs.frozen
class Pass:
    """What one housekeeping pass found and did."""

    files: int
    size: int
    evicted: int
    evicted_bytes: int
    seconds: float
    #: The page records evicted: whoever keeps pages in memory forgets them too.
    evicted_pages: tuple[str, ...] = ()


def choose_victims(entries: list[Entry], budget: Budget, now: float, free: int) -> list[Entry]:
    """The files to delete: the inactive ones, then oldest first until within budget."""
    entries = sorted(entries, key=lambda e: e.last_used)
    total = sum(e.size for e in entries)
    victims = []
    for entry in entries:
        inactive = now - entry.last_used > budget.inactive
        if not (inactive or total > budget.max_size or free < budget.min_free):
            break
        victims.append(entry)
        total -= entry.size
        free += entry.size
    return victims


def run_pass(root: Path, budget: Budget, now: float, free: Callable[[Path], int] = free_space) -> Pass:
    """One whole pass over the cache at ``root`` (files and pages); blocking, so it runs in a worker thread."""
    started = time.monotonic()
    files = root / "files"
    entries = scan(files) + scan_pages(root / "pages")
    victims = choose_victims(entries, budget, now, free(files))
    for victim in victims:
        for path in (victim.path, *victim.also):
            remove(path)
        if not victim.page:
            _remove_empty_parents(Path(victim.path).parent, files)
    evicted_bytes = sum(v.size for v in victims)
    return Pass(
        files=sum(not e.page for e in entries) - sum(not v.page for v in victims),
        size=sum(e.size for e in entries) - evicted_bytes,
        evicted=len(victims),
        evicted_bytes=evicted_bytes,
        seconds=time.monotonic() - started,
        evicted_pages=tuple(v.path for v in victims if v.page),
    )


def _remove_empty_parents(directory: Path, root: Path) -> None:
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


class Housekeeper:
    """Runs passes every ``INTERVAL`` and whenever a commit may have broken the budget."""

    def __init__(
        self,
        *,
        root: Path,
        budget: Budget,
        clock: IReactorTime,
        run_in_thread: RunInThread,
        free: Callable[[Path], int] = free_space,
    ) -> None:
        self.root = root
        self.budget = budget
        self._clock = clock
        self._run_in_thread = run_in_thread
        self._free = free
        self._running: Deferred[Pass] | None = None
        self._loop = LoopingCall(self.run)
        self._loop.clock = clock
        #: The cache's size as of the last pass plus what was committed since.
        self.size = 0
        self.files = 0
        #: Called with the paths of the page records a pass evicted (the page caches forget them).
        self.pages_evicted: Callable[[tuple[str, ...]], None] = lambda paths: None
        self.evictions = 0
        self.evicted_bytes = 0

    def start(self) -> None:
        self._loop.start(INTERVAL, now=True).addErrback(lambda f: log.failure("Housekeeping stopped", f))

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def committed(self, path: Path, size: int) -> None:
        """A file was added: run a pass now if that may have broken the budget."""
        self.size += size
        self.files += 1
        if self.size > self.budget.max_size or self._free(self.root) < self.budget.min_free:
            self.run()

    def usage(self) -> CacheUsage:
        """The cache's size as counted, and the filesystem's free space now."""
        try:
            free = self._free(self.root)
        except OSError:
            free = 0
        return CacheUsage(self.size, self.files, free, self.budget.max_size, self.budget.min_free)

    def removed(self, size: int) -> None:
        """A file was deleted outside a pass (an admin purge)."""
        self.size = max(0, self.size - size)
        self.files = max(0, self.files - 1)

    def run(self) -> Deferred[Pass] | None:
        """Start a pass unless one is running; the LoopingCall waits for it."""
        if self._running is not None:
            return None
        self._running = self._run_in_thread(run_pass, self.root, self.budget, self._clock.seconds(), self._free)

        def done(result: Pass) -> Pass:
            if result.evicted_pages:
                self.pages_evicted(result.evicted_pages)
            self.size, self.files = result.size, result.files
            self.evictions += result.evicted
            self.evicted_bytes += result.evicted_bytes
            if result.evicted:
                log.info(
                    "Evicted {n} files ({mb:.1f} MiB); cache holds {files} files, {size:.1f} MiB",
                    n=result.evicted,
                    mb=result.evicted_bytes / 2**20,
                    files=result.files,
                    size=result.size / 2**20,
                )
            return result

        def failed(failure: Failure) -> None:
            log.error("Housekeeping pass failed: {e}", e=failure.getErrorMessage())

        def finished(result: object) -> object:
            self._running = None
            return result

        d = self._running
        d.addCallbacks(done, failed).addBoth(finished)
        return d
