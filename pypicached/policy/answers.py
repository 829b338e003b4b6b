"""
What a client gets for a page or a file, decided once, below HTTP: the cache and
the policy together. ``Answers.page`` and ``Answers.file`` are the only calls the
HTTP resource makes for content; it turns their answers into headers and bodies.

Each answer comes with its bytes already open (or in memory), so a rendering pruned
under a newer version, or a file evicted, between the look-up and the send is
found here and looked up again, never half-answered.
"""

from __future__ import annotations

import math
from typing import BinaryIO

import attrs
from twisted.internet.interfaces import IReactorTime

from pypicached.base.names import without_metadata
from pypicached.cache.fetch import NotFound
from pypicached.cache.files import FileCache
from pypicached.cache.forms import Form, Rendering
from pypicached.cache.freshness import Offline
from pypicached.cache.growing import DownloadFailed, GrowingFile
from pypicached.cache.outcome import CacheStatus
from pypicached.cache.pagekind import PageKey
from pypicached.cache.pages import PageResult
from pypicached.cache.router import Router, Source
from pypicached.policy.gate import Gate
from pypicached.policy.judge import Denied
from pypicached.policy.view import View
from pypicached.upstream.breaker import UpstreamDown
from pypicached.upstream.errors import UpstreamError

#: How an answer fails, besides ``NotFound`` (404) and ``Denied`` (403): each with
#: the status it means (``status``) and a one-line reason (its text).
UNAVAILABLE = (UpstreamError, UpstreamDown, DownloadFailed, Offline)

__all__ = ["UNAVAILABLE", "Answers", "Denied", "FileAnswer", "NotFound", "PageAnswer", "max_age"]


@attrs.frozen
class PageAnswer:
    """A page in the form asked for, and how it may be cached."""

    rendering: Rendering
    #: The rendering's file, open (None when its bytes are in ``rendering.body``); the sender closes it.
    handle: BinaryIO | None
    status: CacheStatus
    #: Seconds a client may keep it: what is left of its TTL, or less if a held-back release comes of age.
    max_age: float
    #: A ``Warning`` header for a stale answer.
    warning: str | None
    #: The index that answered (``*``: the joined project list of every index).
    index: str
    upstream_seconds: float | None


@attrs.frozen
class FileAnswer:
    """A package file (committed, or downloading) and its bytes, open."""

    file: GrowingFile
    #: A reader's handle (None while no byte reached the disk); the sender closes it.
    handle: BinaryIO | None
    status: CacheStatus
    upstream_seconds: float | None


class Answers:
    """Pages through their policy view, files through the policy check, from the index that answers for them."""

    def __init__(self, *, router: Router, files: FileCache, gate: Gate, clock: IReactorTime) -> None:
        self._router = router
        self._files = files
        self._gate = gate
        self._clock = clock

    async def page(self, key: PageKey, form: Form, index: str | None = None) -> PageAnswer:
        """
        ``key`` in ``form``, from the index that answers for it (or the one named
        ``index``, for ``/index/<name>/`` paths). ``Denied`` for a page the policy
        refuses (by name, never asked upstream); ``NotFound`` for no such page.
        """
        chosen = None if index is None else self._router.named(index)
        if index is not None and chosen is None:
            raise NotFound(f"no index named {index!r}")
        if key.project:  # refused by its name: never a 404 that sends installers elsewhere
            self._gate.check_project(chosen, key.project)
        for attempt in (1, 2):  # a newer version's arrival may prune this one's renderings at any moment
            result, source = (await chosen.pages.get(key), chosen) if chosen else await self._router.page(key)
            made = self._gate.view(source, result.page)
            page = made.page if made else result.page
            try:
                rendering = await self._router.rendering(source, page, form)
                handle = None if rendering.body is not None else _open(rendering)
            except FileNotFoundError:
                if source is not None:
                    await source.pages.lost(page)
                if attempt == 2:
                    raise
                continue
            return self._page_answer(result, source, made, rendering, handle)
        raise AssertionError("unreachable")

    def _page_answer(
        self,
        result: PageResult,
        source: Source | None,
        made: View | None,
        rendering: Rendering,
        handle: BinaryIO | None,
    ) -> PageAnswer:
        sources = (source,) if source is not None else self._router.sources
        ttl = min(s.pages.freshness.ttl for s in sources)
        now = self._clock.seconds()
        fresh = max_age(made, now, ttl - (now - result.page.fetched))
        name = source.name if source is not None else "*"
        return PageAnswer(rendering, handle, result.status, fresh, result.warning, name, result.upstream_seconds)

    async def file(self, segments: tuple[str, ...]) -> FileAnswer:
        """
        The file at ``segments``: committed, joined while it downloads, or fetched from
        the index that answers for its project (its linking page found once). ``Denied``
        if the policy holds it back; ``NotFound`` if no page links it.
        """
        for attempt in (1, 2):  # evicted between the look-up and the open: look again
            growing, status = await self._find(segments)
            await growing.started()
            try:
                handle = growing.open()
            except FileNotFoundError:
                if attempt == 2:
                    raise
                continue
            waited = growing.upstream_seconds if status is CacheStatus.MISS else None
            return FileAnswer(growing, handle, status, waited)
        raise AssertionError("unreachable")

    async def _find(self, segments: tuple[str, ...]) -> tuple[GrowingFile, CacheStatus]:
        found = self._files.existing(segments)
        if found is not None:
            checking = self._gate.check_file(segments)
            if checking is not None:
                await checking
            return found
        linked = await self._router.find_link(segments)
        self._gate.check_linked(linked.source, linked.page, without_metadata(segments[-1]))
        return self._files.fetch(segments, linked)


def _open(rendering: Rendering) -> BinaryIO:
    assert rendering.path is not None  # a rendering without its bytes in memory is on disk
    return open(rendering.path, "rb")


def max_age(made: View | None, now: float, ttl: float) -> float:
    """A page's ``max-age``: its TTL, but no later than its view changes (a release comes of age)."""
    if made is None or made.until == math.inf:
        return ttl
    return max(0.0, min(ttl, made.until - now))
