"""
Index pages in the cache: kept on disk, fresh for a TTL, then revalidated
upstream, one revalidation per page however many clients ask.

The stored project pages are also the authority on file links: a file request
is resolved to its upstream URL and digests through its project's page.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred, DeferredLock, ensureDeferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from pypicached.base.disk import RunInThread, atomic_write
from pypicached.cache.fetch import NotFound, PageFetcher
from pypicached.cache.freshness import Do, Freshness, Offline, decide
from pypicached.base.inflight import Inflight
from pypicached.cache.outcome import CacheStatus
from pypicached.cache.pagekind import PROJECT, PageKey
from pypicached.cache.records import StoredPage, remove_project_records, unlink
from pypicached.cache.forms import Form, Rendering
from pypicached.cache.rendered import Renderer, prune_versions
from pypicached.simpleapi.links import FileLink
from pypicached.simpleapi.simple import project_status
from pypicached.upstream.client import UpstreamClient, UpstreamURLs
from pypicached.upstream.errors import UpstreamError

log = Logger()

#: How long an upstream 404 is believed before asking again.
NEGATIVE_TTL = 60.0
MEMORY_PAGES = 256


#: After a failed revalidation, how long a page is served stale before asking again,
#: so that during an outage requests do not each wait for the upstream to time out.
RETRY_AFTER = 30.0
#: A fresh page that lacks a requested file is revalidated early, at most this often.
MIN_REFRESH = 10.0
STALE_WARNING = '110 pypicached "Response is Stale"'
FAILED_WARNING = '111 pypicached "Revalidation Failed"'


@attrs.frozen
class PageResult:
    page: StoredPage
    status: CacheStatus
    upstream_seconds: float | None = None
    #: A ``Warning`` header for a stale answer.
    warning: str | None = None


class PageCache:
    """Fresh pages from memory or disk; expired ones revalidated, missing ones fetched."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        urls: UpstreamURLs,
        client: UpstreamClient,
        root: Path,
        freshness: Freshness,
        run_in_thread: RunInThread,
    ) -> None:
        self._clock = clock
        self.urls = urls
        self._client = client
        self._root = root / "pages" / urls.key
        self._tmp = root / "tmp"
        self.freshness = freshness
        self._run_in_thread = run_in_thread
        self._memory: OrderedDict[PageKey, StoredPage] = OrderedDict()
        self._missing: dict[PageKey, float] = {}
        self._inflight: Inflight[PageKey, PageResult] = Inflight()
        self._renderer = Renderer(run_in_thread, self._tmp)
        self._fetcher = PageFetcher(
            clock=clock, urls=urls, client=client, run_in_thread=run_in_thread, tmp=self._tmp,
            rendered_root=self._rendered_root,
        )
        self._failed_until: dict[PageKey, float] = {}
        self._stores = DeferredLock()
        #: Pages whose new version has arrived and is being read: slowness now is ours, not the upstream's.
        self._parsing: set[PageKey] = set()
        self._health = client.health
        self._answers = self._answer_table()
        #: Projects whose page says "quarantined": their files are refused with or without a policy.
        self._quarantined = set(_names_in(self._root / "quarantined"))

    # --- lookup --------------------------------------------------------------------

    def get(self, key: PageKey) -> "Deferred[PageResult]":
        """
        The page: fresh from the cache, or revalidated upstream by one request that
        everyone asking meanwhile waits for; a stale copy when the upstream fails,
        is down, or is slower than ``stale_if_slow`` (``freshness.decide`` says which).
        """
        stored = self.cached(key)
        now = self._clock.seconds()
        health = self._health
        do = decide(
            self.freshness,
            age=None if stored is None else now - stored.fetched,
            down=health.is_down,
            missing=now < self._missing.get(key, 0.0),
            failed=now < self._failed_until.get(key, 0.0),
            slow=health.is_slow,
        )
        if do is Do.SERVE_STALE_SLOW or (do is Do.SERVE_STALE and health.is_down):
            health.spared += 1
        return self._answers[do](key, stored)

    def _answer_table(self) -> dict[Do, Callable[[PageKey, Any], "Deferred[PageResult]"]]:
        """How each decision is carried out."""
        return {
            Do.SERVE: lambda key, stored: succeed(PageResult(stored, CacheStatus.HIT)),
            Do.SERVE_OFFLINE: lambda key, stored: succeed(PageResult(stored, CacheStatus.STALE, warning=STALE_WARNING)),
            Do.SERVE_STALE: lambda key, stored: succeed(PageResult(stored, CacheStatus.STALE, warning=FAILED_WARNING)),
            Do.SERVE_STALE_SLOW: lambda key, stored: succeed(PageResult(stored, CacheStatus.STALE, warning=STALE_WARNING)),
            Do.REFUSE_OFFLINE: lambda key, stored: fail(Offline("offline mode: this page is not in the cache")),
            Do.REFUSE_DOWN: lambda key, stored: fail(self._health.outage()),
            Do.NOT_FOUND: lambda key, stored: fail(NotFound("no such page upstream (remembered)")),
            Do.REFRESH: self._refresh,
            Do.REFRESH_UNLESS_SLOW: lambda key, stored: self._unless_slow(key, self._refresh(key, stored), stored),
            Do.REFRESH_IN_BACKGROUND: self._in_background,
        }

    def _in_background(self, key: PageKey, stored: StoredPage) -> "Deferred[PageResult]":
        self._refresh(key, stored).addErrback(
            lambda f: log.warn("Background refresh of {key} failed: {e}", key=key, e=f.getErrorMessage())
        )
        return succeed(PageResult(stored, CacheStatus.UPDATING, warning=STALE_WARNING))

    def _unless_slow(self, key: PageKey, shared: "Deferred[PageResult]", stored: StoredPage) -> "Deferred[PageResult]":
        """
        The revalidation's answer if it comes within ``stale_if_slow``, else the stale
        copy at once; the revalidation goes on and updates the cache when it answers.
        """
        answer: Deferred[PageResult] = Deferred()

        def slow() -> None:
            if key not in self._parsing:  # still waiting on the upstream, not on our own parsing of its answer
                self._health.slow()
            answer.callback(PageResult(stored, CacheStatus.STALE, warning=STALE_WARNING))

        timer = self._clock.callLater(self.freshness.stale_if_slow, slow)

        def revalidated(result: Any) -> None:
            if timer.active():
                timer.cancel()
                answer.callback(result)  # a Failure goes on as one
                return
            self._health.not_slow()  # however it ended: the wait that made the upstream slow is over
            if isinstance(result, Failure):
                log.warn("Slow revalidation of {url} failed: {e}", url=stored.url, e=result.getErrorMessage())

        shared.addBoth(revalidated)
        return answer

    def _refresh(self, key: PageKey, stored: StoredPage | None) -> "Deferred[PageResult]":
        """Revalidate upstream, joining the revalidation already in flight for ``key``."""
        return self._inflight.run(key, lambda: ensureDeferred(self._revalidate(key, stored)))

    def _may_serve_stale(self, stored: StoredPage) -> bool:
        return self.freshness.may_stand_in(self._clock.seconds() - stored.fetched)

    async def _revalidate(self, key: PageKey, stored: StoredPage | None) -> PageResult:
        try:
            fresh, status, waited = await self._fetcher.fetch(key, stored, lambda: self._parsing.add(key))
        except NotFound:
            self._forget(key)
            raise
        except OSError as e:  # the new version could not be stored (a full disk): like a failing upstream
            failure = UpstreamError(f"cannot store the page: {e.strerror or e}", 503)
            return self._stand_in(key, stored, failure)
        except UpstreamError as e:
            return self._stand_in(key, stored, e)
        finally:
            self._parsing.discard(key)
        self._failed_until.pop(key, None)
        self._remember(fresh)
        self._note_status(fresh)
        self._store(fresh)
        return PageResult(fresh, status, waited)

    def _stand_in(self, key: PageKey, stored: StoredPage | None, error: UpstreamError) -> PageResult:
        """The stale copy for a failed revalidation, if it may stand in; else the failure."""
        if stored is None or not self._may_serve_stale(stored):
            raise error
        self._failed_until[key] = self._clock.seconds() + RETRY_AFTER
        log.warn(
            "Upstream failed for {url} ({reason}); serving the copy validated {age:.0f}s ago",
            url=stored.url, reason=error.reason, age=self._clock.seconds() - stored.fetched,
        )
        return PageResult(stored, CacheStatus.STALE, warning=FAILED_WARNING)

    def waiting(self, key: PageKey) -> int:
        """How many requests wait on the revalidation of ``key`` now."""
        return self._inflight.waiting(key)

    def cached(self, key: PageKey) -> StoredPage | None:
        """The last validated copy, whatever its age, from memory or disk."""
        page = self._memory.get(key)
        if page is not None:
            self._memory.move_to_end(key)
            return page
        path = self._root.joinpath(*key.relpath())
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            page = StoredPage.from_json(key, data)
        except Exception as e:
            log.warn("Ignoring damaged page record {path}: {e}", path=str(path), e=e)
            return None
        self._remember(page)
        return page

    def linked(self, project: str, segments: tuple[str, ...]) -> FileLink | None:
        """The file at ``segments`` if ``project``'s page, as already cached, links it."""
        page = self.cached(PageKey(PROJECT, project))
        return None if page is None else page.links().get(segments)

    async def link(self, project: str, segments: tuple[str, ...]) -> FileLink | None:
        """
        The file at ``segments`` if ``project``'s page links it (``NotFound`` if this
        index has no such project); a fresh page that lacks it is asked for once more,
        at most every ``MIN_REFRESH`` seconds, since it may predate a new release.
        """
        key = PageKey(PROJECT, project)
        result = await self.get(key)
        links = result.page.links()
        if segments not in links and result.status is CacheStatus.HIT and not self._health.is_down:
            if self._clock.seconds() - result.page.fetched > MIN_REFRESH:
                links = (await self._refresh(key, result.page)).page.links()
        if segments not in links and self._health.is_down:
            raise self._health.outage()  # a stale page may predate the file: never a 404 for that
        return links.get(segments)

    def purge(self, project: str) -> "Deferred[int]":
        """
        Forget every page of ``project`` (simple and JSON), so the next request fetches
        it anew: the records on disk first, then memory, so that a request meanwhile
        cannot read a record back into memory after it was forgotten.
        """

        def forget(removed: int) -> int:
            for table in (self._memory, self._missing, self._failed_until):
                for key in [k for k in table if k.project == project]:
                    del table[key]
            return removed

        return self._run_in_thread(remove_project_records, self._root, project).addCallback(forget)

    def quarantined(self, project: str) -> bool:
        """Whether ``project``'s page, as last validated, says it is quarantined (PEP 792)."""
        return project in self._quarantined

    def _note_status(self, page: StoredPage) -> None:
        """Keep the quarantined set up to date with a project page just validated."""
        if page.key.kind is PROJECT:
            if project_status(page.page)[0] == "quarantined":
                self._quarantined.add(page.key.project)
            else:
                self._quarantined.discard(page.key.project)

    def _mark_quarantined(self, page: StoredPage) -> None:
        """(In a disk thread.) The quarantined set's marker file for ``page``'s project, so it outlives a restart."""
        marker = self._root / "quarantined" / page.key.project
        if page.key.project in self._quarantined:
            marker.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(marker, b"", self._tmp)
        else:
            unlink(marker)

    # --- renderings ----------------------------------------------------------------

    def rendering(self, page: StoredPage, form: Form) -> "Deferred[Rendering]":
        """``page`` in ``form`` as a file, rendered in a disk thread the first time anyone asks."""
        return self._renderer.rendering(page, form, self._rendered_root(page.key) / page.version)

    def lost(self, page: StoredPage) -> "Deferred[None]":
        """
        A rendering's file is gone (purged, or pruned under a newer version): render
        it again next time; the project list, which only its fetch renders, is fetched again.
        """
        page.renderings.clear()
        current = self.cached(page.key)
        if page.key.kind.render is not None or current is None or current.version != page.version:
            return succeed(None)  # rendered on demand, or a newer version is the record now: keep it
        self._memory.pop(page.key, None)
        return self._run_in_thread(unlink, self._root.joinpath(*page.key.relpath()))

    def _rendered_root(self, key: PageKey) -> Path:
        """Where the renderings of every version of ``key`` live: beside its record."""
        return self._root.joinpath(*key.relpath()).with_suffix(".r")

    # --- memory and disk -----------------------------------------------------------

    def _remember(self, page: StoredPage) -> None:
        self._missing.pop(page.key, None)
        self._memory[page.key] = page
        self._memory.move_to_end(page.key)
        while len(self._memory) > MEMORY_PAGES:
            self._memory.popitem(last=False)

    def _forget(self, key: PageKey) -> None:
        self._memory.pop(key, None)
        now = self._clock.seconds()
        if len(self._missing) > 10_000:
            self._missing = {k: t for k, t in self._missing.items() if t > now}
        self._missing[key] = now + NEGATIVE_TTL
        path = self._root.joinpath(*key.relpath())
        self._run_in_thread(unlink, path).addErrback(
            lambda f: log.failure("Could not remove {path}", f, path=str(path))
        )

    def _store(self, page: StoredPage) -> None:
        path = self._root.joinpath(*page.key.relpath())

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, page.to_json(), self._tmp)
            prune_versions(self._rendered_root(page.key), page.version)
            if page.key.kind is PROJECT:
                self._mark_quarantined(page)

        # one store at a time, in the order the versions came: an older one landing last
        # would put its record back and prune the newer version's renderings
        self._stores.run(self._run_in_thread, write).addErrback(
            lambda f: log.error(
                "Could not store page {path}: {reason}", path=str(path), reason=f.getErrorMessage()
            )
        )


def _names_in(directory: Path) -> list[str]:
    """The names in ``directory`` (none if it is not there)."""
    try:
        return os.listdir(directory)
    except OSError:
        return []
