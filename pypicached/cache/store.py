"""
One index's page records: the last validated copy of each page, on disk beside
its renderings, and the most recently used ones in memory too. Stores land one
at a time, in the order the versions came.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.logger import Logger

from pypicached.base.disk import RunInThread, atomic_write
from pypicached.cache.pagekind import PageKey
from pypicached.cache.quarantine import Quarantine
from pypicached.cache.records import StoredPage, remove_project_records, unlink
from pypicached.cache.rendered import prune_versions
from pypicached.cache.space import TOUCH_EVERY

log = Logger()

#: Page records kept in memory (the most recently used).
MEMORY_PAGES = 256


class PageStore:
    """Records under ``root``: read back on demand, written in a disk thread."""

    def __init__(self, root: Path, tmp: Path, run_in_thread: RunInThread, quarantine: Quarantine) -> None:
        self.root = root
        self._tmp = tmp
        self._run_in_thread = run_in_thread
        self._quarantine = quarantine
        self._memory: OrderedDict[PageKey, StoredPage] = OrderedDict()
        self._stores = DeferredLock()

    def record(self, key: PageKey) -> Path:
        return self.root.joinpath(*key.relpath())

    def rendered_root(self, key: PageKey) -> Path:
        """Where the renderings of every version of ``key`` live: beside its record."""
        return self.record(key).with_suffix(".r")

    def cached(self, key: PageKey) -> StoredPage | None:
        """The last validated copy, whatever its age, from memory or disk."""
        page = self._memory.get(key)
        if page is not None:
            self._memory.move_to_end(key)
            return page
        path = self.record(key)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            page = StoredPage.from_json(key, data)
        except Exception as e:
            log.warn("Ignoring damaged page record {path}: {e}", path=str(path), e=e)
            return None
        self.remember(page)
        return page

    def touch(self, page: StoredPage, now: float) -> None:
        """Note that ``page`` was used now, on its record's access time (at most every ``TOUCH_EVERY``)."""
        if now - page.touched < TOUCH_EVERY:
            return
        page.touched = now
        path = self.record(page.key)
        try:  # the access time is the disk budget's "last used"; the mtime stays when it was stored
            os.utime(path, ns=(int(now * 1e9), path.stat().st_mtime_ns))
        except OSError:
            pass  # not stored yet, or evicted: the next store writes it anew

    def remember(self, page: StoredPage) -> None:
        self._memory[page.key] = page
        self._memory.move_to_end(page.key)
        while len(self._memory) > MEMORY_PAGES:
            self._memory.popitem(last=False)

    def evicted(self, paths: set[str]) -> None:
        """The disk budget removed these records (and their renderings): forget them in memory too."""
        for key in [k for k in self._memory if str(self.record(k)) in paths]:
            del self._memory[key]

    def drop(self, key: PageKey) -> Deferred[None]:
        """Forget ``key``'s record, in memory and on disk."""
        self._memory.pop(key, None)
        path = self.record(key)
        return self._run_in_thread(unlink, path).addErrback(
            lambda f: log.failure("Could not remove {path}", f, path=str(path))
        )

    def lost(self, page: StoredPage) -> Deferred[None]:
        """
        A rendering of ``page`` is gone: render it again next time; a project list (which
        only its fetch renders) has its record dropped, so it is fetched again, unless a
        newer version is the record now.
        """
        page.renderings.clear()
        current = self.cached(page.key)
        if page.key.kind.render is not None or current is None or current.version != page.version:
            return succeed(None)
        return self.drop(page.key)

    def store(self, page: StoredPage) -> None:
        """Write ``page``'s record and drop older versions' renderings, after any store before it."""
        path = self.record(page.key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, page.to_json(), self._tmp)
            prune_versions(self.rendered_root(page.key), page.version)
            self._quarantine.mark(page)

        # one store at a time, in the order the versions came: an older one landing last
        # would put its record back and prune the newer version's renderings
        self._stores.run(self._run_in_thread, write).addErrback(
            lambda f: log.error("Could not store page {path}: {reason}", path=str(path), reason=f.getErrorMessage())
        )

    def purge(self, project: str) -> Deferred[int]:
        """
        Forget every record of ``project``: on disk first, then in memory, so that a
        request meanwhile cannot read a record back into memory after it was forgotten.
        """

        def forget(removed: int) -> int:
            for key in [k for k in self._memory if k.project == project]:
                del self._memory[key]
            return removed

        return self._run_in_thread(remove_project_records, self.root, project).addCallback(forget)
