"""
Asking the upstream for an index page: conditionally when a copy is cached, and
reading what comes back into a new version of the page (in a disk thread: parsing
a big page is seconds of CPU; the project list is streamed to disk and rendered there).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime

from pypicached.base.disk import RunInThread
from pypicached.cache import projectlist
from pypicached.cache.outcome import CacheStatus
from pypicached.cache.pagekind import INDEX, PageKey
from pypicached.cache.records import StoredPage, parse_page, unlink
from pypicached.simpleapi import simple
from pypicached.upstream.body import MAX_PAGE_BYTES, discard_body, read_body, read_body_into
from pypicached.upstream.client import UpstreamURLs
from pypicached.upstream.errors import UpstreamError
from pypicached.upstream.mirrors import IndexClient, served_url


class NotFound(Exception):
    """The upstream says there is no such page, or no page links this file."""


class PageFetcher:
    """One request upstream for one page, and its answer read."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        urls: UpstreamURLs,
        client: IndexClient,
        run_in_thread: RunInThread,
        tmp: Path,
        rendered_root: Callable[[PageKey], Path],
    ) -> None:
        self._clock = clock
        self._urls = urls
        self._client = client
        self._run_in_thread = run_in_thread
        self._tmp = tmp
        self._rendered_root = rendered_root

    async def fetch(
        self, key: PageKey, stored: StoredPage | None, received: Callable[[], None] = lambda: None
    ) -> tuple[StoredPage, CacheStatus, float]:
        """The page's new version (or ``stored``, confirmed), what the cache did, and seconds waited on upstream."""
        url = key.upstream_url(self._urls)
        if url is None:
            raise NotFound("the upstream index has no such page (it has no JSON API)")
        headers = {"Accept": key.kind.accept, "Accept-Encoding": "gzip"}
        if stored is not None and stored.etag:
            headers["If-None-Match"] = stored.etag
        if stored is not None and stored.last_modified:
            headers["If-Modified-Since"] = stored.last_modified
        started = self._clock.seconds()
        # gzipped and undecoded, so the bytes counted as fetched are those that crossed the link
        response = await self._client.get(url, headers)
        url = served_url(response, url)  # the mirror that answered: relative links are its
        if response.code == 304 and stored is not None:
            discard_body(self._client, response)
            fresh = attrs.evolve(stored, fetched=self._clock.seconds())
            status = CacheStatus.REVALIDATED
        elif response.code == 200:
            try:
                fresh = await self._receive(key, response, url, received)
            except simple.BadPage as e:
                raise UpstreamError(f"upstream sent a bad page for {url}: {e}") from None
            status = CacheStatus.MISS if stored is None else CacheStatus.EXPIRED
        elif response.code in (404, 410):
            discard_body(self._client, response)
            raise NotFound(f"upstream answered {response.code} for {url}")
        else:
            discard_body(self._client, response)
            phrase = response.phrase.decode("latin-1", "replace")
            raise UpstreamError(f"upstream answered {response.code} {phrase} for {url}")
        return fresh, status, self._clock.seconds() - started

    async def _receive(self, key: PageKey, response: Any, url: str, received: Callable[[], None]) -> StoredPage:
        """
        A page's new version from the upstream's 200, parsed in a disk thread (parsing a
        big page is seconds of CPU); the project list is streamed to disk and rendered there.
        """
        headers = response.headers
        encoding = b",".join(headers.getRawHeaders(b"content-encoding") or []).strip().lower().decode("latin-1")
        content_type = (headers.getRawHeaders(b"content-type") or [b"text/html"])[0].decode("latin-1")
        if key.kind.parse is None:
            listing = await self._receive_list(response, content_type, encoding, received)
            page, version = {"meta": listing.meta, "count": listing.count}, listing.version
        else:
            body = await read_body(self._client, response)
            received()  # the upstream's part is over: what follows is ours
            page, version = await self._run_in_thread(parse_page, key.kind.parse, body, encoding, content_type, url)
        etag = headers.getRawHeaders(b"etag")
        modified = headers.getRawHeaders(b"last-modified")
        return StoredPage(
            key,
            url,
            self._clock.seconds(),
            etag[0].decode("latin-1") if etag else None,
            modified[0].decode("latin-1") if modified else None,
            page,
            version,
        )

    async def _receive_list(
        self, response: Any, content_type: str, encoding: str, received: Callable[[], None]
    ) -> projectlist.ProjectList:
        """The project list, too big to hold: its body goes to disk as it comes, and is rendered from there."""
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="list-")
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                await read_body_into(self._client, response, out)
            received()
            return await self._run_in_thread(
                projectlist.convert,
                Path(name),
                content_type=content_type,
                encoding=encoding,
                directory=self._rendered_root(PageKey(INDEX)),
                tmp=self._tmp,
                limit=MAX_PAGE_BYTES,
            )
        finally:
            unlink(Path(name))
