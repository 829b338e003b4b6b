"""
Index pages in the cache: kept on disk, fresh for a TTL, then revalidated
upstream, one revalidation per page however many clients ask.

The stored project pages are also the authority on file links: a file request
is resolved to its upstream URL and digests through its project's page.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from pypicached.base.disk import RunInThread
from pypicached.base.inflight import Inflight
from pypicached.cache.fetch import NotFound, PageFetcher
from pypicached.cache.forms import Form, Rendering
from pypicached.cache.freshness import Do, Freshness, Offline, decide
from pypicached.cache.outcome import CacheStatus
from pypicached.cache.pagekind import PROJECT, PageKey
from pypicached.cache.quarantine import Quarantine
from pypicached.cache.records import StoredPage
from pypicached.cache.rendered import Renderer
from pypicached.cache.store import PageStore
from pypicached.upstream.client import UpstreamURLs
from pypicached.upstream.errors import UpstreamError
from pypicached.upstream.mirrors import IndexClient

log = Logger()

#: How long an upstream 404 is believed before asking again.
NEGATIVE_TTL = 60.0


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
        client: IndexClient,
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
        #: Projects whose page says "quarantined": their files are refused with or without a policy.
        self._quarantined = Quarantine(self._root / "quarantined", self._tmp)
        self._records = PageStore(self._root, self._tmp, run_in_thread, self._quarantined)
        self._missing: dict[PageKey, float] = {}
        self._inflight: Inflight[PageKey, PageResult] = Inflight()
        self._renderer = Renderer(run_in_thread, self._tmp)
        self._fetcher = PageFetcher(
            clock=clock,
            urls=urls,
            client=client,
            run_in_thread=run_in_thread,
            tmp=self._tmp,
            rendered_root=self._records.rendered_root,
        )
        self._failed_until: dict[PageKey, float] = {}
        #: Pages whose new version has arrived and is being read: slowness now is ours, not the upstream's.
        self._parsing: set[PageKey] = set()
        self._health = client.health
        self._answers = self._answer_table()

    # --- lookup --------------------------------------------------------------------

    def get(self, key: PageKey) -> Deferred[PageResult]:
        """
        The page: fresh from the cache, or revalidated upstream by one request that
        everyone asking meanwhile waits for; a stale copy when the upstream fails,
        is down, or is slower than ``stale_if_slow`` (``freshness.decide`` says which).
        """
        stored = self.cached(key)
        now = self._clock.seconds()
        if stored is not None:
            self._records.touch(stored, now)
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

    def _answer_table(self) -> dict[Do, Callable[[PageKey, Any], Deferred[PageResult]]]:
        """How each decision is carried out."""
        return {
            Do.SERVE: lambda key, stored: succeed(PageResult(stored, CacheStatus.HIT)),
            Do.SERVE_OFFLINE: lambda key, stored: succeed(PageResult(stored, CacheStatus.STALE, warning=STALE_WARNING)),
            Do.SERVE_STALE: lambda key, stored: succeed(PageResult(stored, CacheStatus.STALE, warning=FAILED_WARNING)),
            Do.SERVE_STALE_SLOW: lambda key, stored: succeed(
                PageResult(stored, CacheStatus.STALE, warning=STALE_WARNING)
            ),
            Do.REFUSE_OFFLINE: lambda key, stored: fail(Offline("offline mode: this page is not in the cache")),
            Do.REFUSE_DOWN: lambda key, stored: fail(self._health.outage()),
            Do.NOT_FOUND: lambda key, stored: fail(NotFound("no such page upstream (remembered)")),
            Do.REFRESH: self._refresh,
            Do.REFRESH_UNLESS_SLOW: lambda key, stored: self._unless_slow(key, self._refresh(key, stored), stored),
            Do.REFRESH_IN_BACKGROUND: self._in_background,
        }

    def _in_background(self, key: PageKey, stored: StoredPage) -> Deferred[PageResult]:
        self._refresh(key, stored).addErrback(
            lambda f: log.warn("Background refresh of {key} failed: {e}", key=key, e=f.getErrorMessage())
        )
        return succeed(PageResult(stored, CacheStatus.UPDATING, warning=STALE_WARNING))

    def _unless_slow(self, key: PageKey, shared: Deferred[PageResult], stored: StoredPage) -> Deferred[PageResult]:
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

    def _refresh(self, key: PageKey, stored: StoredPage | None) -> Deferred[PageResult]:
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
        self._missing.pop(key, None)
        self._records.remember(fresh)
        self._quarantined.noted(fresh)
        self._records.store(fresh)
        return PageResult(fresh, status, waited)

    def _stand_in(self, key: PageKey, stored: StoredPage | None, error: UpstreamError) -> PageResult:
        """The stale copy for a failed revalidation, if it may stand in; else the failure."""
        if stored is None or not self._may_serve_stale(stored):
            raise error
        self._failed_until[key] = self._clock.seconds() + RETRY_AFTER
        log.warn(
            "Upstream failed for {url} ({reason}); serving the copy validated {age:.0f}s ago",
            url=stored.url,
            reason=error.reason,
            age=self._clock.seconds() - stored.fetched,
        )
        return PageResult(stored, CacheStatus.STALE, warning=FAILED_WARNING)

    def waiting(self, key: PageKey) -> int:
        """How many requests wait on the revalidation of ``key`` now."""
        return self._inflight.waiting(key)

    def cached(self, key: PageKey) -> StoredPage | None:
        """The last validated copy, whatever its age, from memory or disk."""
        page = self._records.cached(key)
        if page is not None:
            self._missing.pop(key, None)
        return page

    def linking(self, project: str, segments: tuple[str, ...]) -> StoredPage | None:
        """``project``'s page, as already cached, if it links the file at ``segments``."""
        page = self.cached(PageKey(PROJECT, project))
        return page if page is not None and self._links_well(page, segments) else None

    def _links_well(self, page: StoredPage, segments: tuple[str, ...]) -> bool:
        """Whether ``page`` links the file, and not on a mirror that is down while another is up."""
        link = page.links().get(segments)
        return link is not None and not self._client.moved(link.url)

    async def fetch_linking(self, project: str, segments: tuple[str, ...]) -> StoredPage | None:
        """
        ``project``'s page if it links the file at ``segments`` (``NotFound`` if this
        index has no such project); a fresh page that lacks it is asked for once more,
        at most every ``MIN_REFRESH`` seconds, since it may predate a new release; so is
        one that links it on a mirror that is down now, while another is up.
        """
        key = PageKey(PROJECT, project)
        result = await self.get(key)
        page = result.page
        lacking = segments not in page.links() and result.status is CacheStatus.HIT and not self._health.is_down
        if lacking or (segments in page.links() and not self._links_well(page, segments)):  # or from a mirror down
            if self._clock.seconds() - page.fetched > MIN_REFRESH:
                page = (await self._refresh(key, page)).page
        if segments not in page.links() and self._health.is_down:
            raise self._health.outage()  # a stale page may predate the file: never a 404 for that
        return page if segments in page.links() else None

    def purge(self, project: str) -> Deferred[int]:
        """Forget every page of ``project`` (simple and JSON), so the next request fetches it anew."""

        def forget(removed: int) -> int:
            for table in (self._missing, self._failed_until):
                for key in [k for k in table if k.project == project]:
                    del table[key]
            return removed

        return self._records.purge(project).addCallback(forget)

    def quarantined(self, project: str) -> bool:
        """Whether ``project``'s page, as last validated, says it is quarantined (PEP 792)."""
        return project in self._quarantined

    # --- renderings ----------------------------------------------------------------

    def rendering(self, page: StoredPage, form: Form) -> Deferred[Rendering]:
        """``page`` in ``form`` as a file, rendered in a disk thread the first time anyone asks."""
        return self._renderer.rendering(page, form, self._records.rendered_root(page.key) / page.version)

    def evicted(self, paths: set[str]) -> None:
        """The disk budget removed these page records: the next request fetches them anew."""
        self._records.evicted(paths)

    def lost(self, page: StoredPage) -> Deferred[None]:
        """A rendering's file is gone (purged, or pruned under a newer version): see ``PageStore.lost``."""
        return self._records.lost(page)

    def _forget(self, key: PageKey) -> None:
        """The upstream says there is no such page: remember that for ``NEGATIVE_TTL``."""
        now = self._clock.seconds()
        if len(self._missing) > 10_000:
            self._missing = {k: t for k, t in self._missing.items() if t > now}
        self._missing[key] = now + NEGATIVE_TTL
        self._records.drop(key)
