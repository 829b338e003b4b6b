"""
Several upstream indexes behind one URL, without dependency confusion. Each
configured index is a ``Source`` with its own page cache, client and health; the
``Router`` decides which one answers for a project and joins their project lists
into one. A project an index pins comes from that index alone; any other from
the first index that pins nothing and has it, whole. Files are never merged
across indexes, and an index that fails is never taken for one that answered 404.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import cast

import attrs
from twisted.internet.defer import Deferred, ensureDeferred

from pypicached.base.disk import RunInThread
from pypicached.base.inflight import Inflight
from pypicached.base.names import matches_any, projects_for_filename
from pypicached.cache import projectlist
from pypicached.cache.fetch import NotFound
from pypicached.cache.forms import Form, Rendering
from pypicached.cache.freshness import Offline
from pypicached.cache.outcome import CacheStatus
from pypicached.cache.pagekind import INDEX, PROJECT, PageKey
from pypicached.cache.pages import PageCache, PageResult
from pypicached.cache.records import StoredPage
from pypicached.cache.rendered import Renderer
from pypicached.simpleapi.links import FileLink
from pypicached.upstream.client import UpstreamURLs
from pypicached.upstream.mirrors import IndexClient, IndexHealth


@attrs.frozen(eq=False)
class Source:
    """
    One configured index at run time: its name, pinned projects, URLs (its first mirror's),
    health and client (over all its mirrors, where it has several) and pages.
    """

    name: str
    #: Normalized project names or globs of them served from this index alone (none: it serves any).
    projects: tuple[str, ...]
    urls: UpstreamURLs
    health: IndexHealth
    client: IndexClient
    pages: PageCache

    @property
    def url(self) -> str:
        return self.urls.simple_url

    @property
    def offline(self) -> bool:
        return self.pages.freshness.offline

    def pins(self, project: str) -> bool:
        return matches_any(self.projects, project)


@attrs.frozen
class Linked:
    """A file as the page that links it describes it: where it comes from, and the page (the policy judges by it)."""

    link: FileLink
    source: Source
    page: StoredPage


class Router:
    """Which index answers for what."""

    def __init__(self, sources: Sequence[Source], *, root: Path, tmp: Path, run_in_thread: RunInThread) -> None:
        self.sources = tuple(sources)
        self._by_name = {u.name: u for u in self.sources}
        self._union = _Union(self.sources, root / "pages" / "union", tmp, run_in_thread)

    def named(self, name: str) -> Source | None:
        return self._by_name.get(name)

    def route(self, project: str) -> tuple[Source, ...]:
        """
        The indexes to ask for ``project``, in order: the first that pins it, alone;
        else every index that pins nothing.
        """
        for source in self.sources:
            if source.pins(project):
                return (source,)
        return tuple(source for source in self.sources if not source.projects)

    async def page(self, key: PageKey) -> tuple[PageResult, Source | None]:
        """
        The page from the index that answers for it: the first in its route that has
        it. Only a 404 moves on to the next; a failing index answers (stale, or an error).
        The project list joins every index's (no single upstream: None).
        """
        if len(self.sources) == 1:  # nothing to choose
            return await self.sources[0].pages.get(key), self.sources[0]
        if key.kind is INDEX:
            return await self._union.page(), None
        for upstream in self.route(key.project):
            try:
                return await upstream.pages.get(key), upstream
            except NotFound:
                continue
        raise NotFound("no index has this project")

    def rendering(self, upstream: Source | None, page: StoredPage, form: Form) -> Deferred[Rendering]:
        if upstream is None:
            return self._union.rendering(page, form)
        return upstream.pages.rendering(page, form)

    def find_link(self, segments: tuple[str, ...]) -> Deferred[Linked]:
        return ensureDeferred(self._find_link(segments))

    async def _find_link(self, segments: tuple[str, ...]) -> Linked:
        """The file a path names, from the index that answers for its project: never another's."""
        if all(u.offline for u in self.sources):
            raise Offline("offline mode: this file is not in the cache")
        projects = projects_for_filename(segments[-1])
        for project in projects:  # what a cached page already says, where one index alone can answer
            route = self.route(project)
            if len(route) == 1 and (page := route[0].pages.linking(project, segments)) is not None:
                return Linked(page.links()[segments], route[0], page)
        for project in projects:
            for source in self.route(project):
                try:
                    page = await source.pages.fetch_linking(project, segments)
                except NotFound:
                    continue  # not on this index: the next unpinning one may have it
                if page is not None:
                    return Linked(page.links()[segments], source, page)
                break  # the project is on this index, and its files come from it alone
        found = self.linking_page(segments, projects)  # linked from a page of /index/<name>/ alone: from that index
        if found is not None:
            return Linked(found[1].links()[segments], *found)
        raise NotFound("no index page links to this file")

    def linking_page(self, segments: tuple[str, ...], projects: list[str]) -> tuple[Source, StoredPage] | None:
        """
        The cached project page (of one of ``projects``) that links the file at ``segments``,
        and its index: from an index its project is routed to first, then any. No upstream request.
        """
        for routed in (True, False):
            for project in projects:
                route = self.route(project)
                for upstream in route if routed else (u for u in self.sources if u not in route):
                    stored = upstream.pages.cached(PageKey(PROJECT, project))
                    if stored is not None and segments in stored.links():
                        return upstream, stored
        return None

    def purge(self, project: str) -> Deferred[int]:
        """Forget ``project``'s pages on every index."""
        return ensureDeferred(self._purge(project))

    async def _purge(self, project: str) -> int:
        return sum([await u.pages.purge(project) for u in self.sources])


def _any(name: str) -> bool:
    return True


class _Union:
    """Every index's project list as one, rendered once per combination of their versions."""

    def __init__(self, sources: tuple[Source, ...], root: Path, tmp: Path, run_in_thread: RunInThread) -> None:
        self._sources = sources
        self._root = root
        self._tmp = tmp
        self._run_in_thread = run_in_thread
        self._work: Inflight[str, projectlist.ProjectList] = Inflight()
        self._renderer = Renderer(run_in_thread, tmp)

    async def page(self) -> PageResult:
        listed = [await self._listed(u) for u in self._sources]
        results = [r for r, _ in listed]
        # an index that pins projects offers only those: any other name there would be a 404 here
        sources = [(path, u.pins if u.projects else _any) for u, (_, path) in zip(self._sources, listed)]
        version = "\n".join(f"{u.name}:{r.page.version}" for u, r in zip(self._sources, results))
        meta = results[0].page.page.get("meta") or {"api-version": "1.0"}
        listing = await self._work.run(
            version,
            lambda: self._run_in_thread(
                projectlist.union,
                sources,
                meta,
                directory=self._root,
                tmp=self._tmp,
            ),
        )
        stale = [r for r in results if r.status is not CacheStatus.HIT]
        worst = stale[0] if stale else results[0]
        page = StoredPage(
            PageKey(INDEX),
            "",
            min(r.page.fetched for r in results),
            None,
            None,
            {"meta": listing.meta, "count": listing.count},
            listing.version,
        )
        return PageResult(page, worst.status, None, worst.warning)

    @staticmethod
    async def _listed(upstream: Source) -> tuple[PageResult, Path]:
        """An index's project list and its JSON rendering's file (fetched anew if that file was lost)."""
        for attempt in (1, 2):
            result = await upstream.pages.get(PageKey(INDEX))
            try:
                rendering = await upstream.pages.rendering(result.page, Form(json=True, depth=1))
                return result, cast(Path, rendering.path)  # this form is the stored file itself, never in memory
            except FileNotFoundError:
                await upstream.pages.lost(result.page)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def rendering(self, page: StoredPage, form: Form) -> Deferred[Rendering]:
        """A form of the joined list, made as any page's are (rendered when joined, gzipped on demand)."""
        return self._renderer.rendering(page, form, self._root / page.version)
