"""
Index pages in the cache: kept on disk, fresh for a TTL, then revalidated
upstream, one revalidation per page however many clients ask.

The stored project pages are also the authority on file links: a file request
is resolved to its upstream URL and digests through its project's page.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred, ensureDeferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from pypicached.index import projectlist

from pypicached.index import simple
from pypicached.cache.disk import RunInThread, atomic_write
from pypicached.cache.pagekind import INDEX, PROJECT, PageKey, Parse
from pypicached.cache.rendered import Form, Rendering, ensure_packed, ensure_plain, prune_versions
from pypicached.cache.freshness import Do, Freshness, decide
from pypicached.cache.inflight import Inflight
from pypicached.index.links import FileLink, proxy_path
from pypicached.index.names import projects_for_filename
from pypicached.cache.outcome import CacheStatus
from pypicached.upstream.client import MAX_PAGE_BYTES, UpstreamClient, UpstreamError, UpstreamIndex, discard_body, read_body, read_body_into

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


class NotFound(Exception):
    """The upstream says there is no such page, or no page links this file."""


class Offline(Exception):
    """Offline mode, and the cache cannot answer: 503."""

    status = 503


@attrs.define(eq=False)
class StoredPage:
    """
    A page as last validated upstream, in the one form ``simple`` reads and writes
    (for the project list, only its ``meta`` and size: its bodies are files).
    """

    key: PageKey
    url: str
    fetched: float
    etag: str | None
    last_modified: str | None
    page: dict[str, Any]
    #: Names this page's content, whatever its age: its renderings are kept per version.
    version: str = ""
    #: The renderings made so far, while the page is in memory.
    renderings: dict[Form, Rendering] = attrs.field(factory=dict, repr=False)
    _links: dict[tuple[str, ...], FileLink] | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.version:
            self.version = content_version(self.page)

    def links(self) -> dict[tuple[str, ...], FileLink]:
        """Every file (and advertised metadata file) of a project page, by proxy path."""
        if self._links is None:
            table: dict[tuple[str, ...], FileLink] = {}
            for link, meta in simple.file_links(self.page).values():
                path = proxy_path(link.url, dict(link.hashes).get("sha256", ""))
                table[path] = link
                if meta is not None:
                    table[path[:-1] + (path[-1] + ".metadata",)] = meta
            self._links = table
        return self._links

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": 1,
                "url": self.url,
                "fetched": self.fetched,
                "etag": self.etag,
                "last_modified": self.last_modified,
                "version": self.version,
                "page": self.page,
            },
            separators=(",", ":"),
        ).encode("utf-8")

    @classmethod
    def from_json(cls, key: PageKey, data: bytes) -> "StoredPage":
        record = json.loads(data)
        if record.get("format") != 1 or not isinstance(record.get("page"), dict):
            raise ValueError("not a page record of this version")
        if key.kind.parse is None and not record.get("version"):
            raise ValueError("a project list stored before its bodies were kept as files")
        return cls(
            key,
            str(record["url"]),
            float(record["fetched"]),
            record.get("etag"),
            record.get("last_modified"),
            record["page"],
            str(record.get("version") or ""),
        )


def content_version(page: dict[str, Any]) -> str:
    """
    A short digest of a page's content, for a record stored before versions were
    (a new page's version is the digest of the body it came in).
    """
    text = json.dumps(page, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.blake2b(text, digest_size=12).hexdigest()


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
        index: UpstreamIndex,
        client: UpstreamClient,
        root: Path,
        freshness: Freshness,
        run_in_thread: RunInThread,
    ) -> None:
        self._clock = clock
        self.index = index
        self._client = client
        self._root = root / "pages" / index.key
        self._tmp = root / "tmp"
        self.freshness = freshness
        self._run_in_thread = run_in_thread
        self._memory: OrderedDict[PageKey, StoredPage] = OrderedDict()
        self._missing: dict[PageKey, float] = {}
        self._inflight: Inflight[PageKey, PageResult] = Inflight()
        self._renders: Inflight[tuple[PageKey, str, Form], Rendering] = Inflight()
        self._failed_until: dict[PageKey, float] = {}
        self._health = client.health
        self._answers = self._answer_table()

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
            Do.REFRESH_UNLESS_SLOW: lambda key, stored: self._unless_slow(self._refresh(key, stored), stored),
            Do.REFRESH_IN_BACKGROUND: self._in_background,
        }

    def _in_background(self, key: PageKey, stored: StoredPage) -> "Deferred[PageResult]":
        self._refresh(key, stored).addErrback(
            lambda f: log.warn("Background refresh of {key} failed: {e}", key=key, e=f.getErrorMessage())
        )
        return succeed(PageResult(stored, CacheStatus.UPDATING, warning=STALE_WARNING))

    def _unless_slow(self, shared: "Deferred[PageResult]", stored: StoredPage) -> "Deferred[PageResult]":
        """
        The revalidation's answer if it comes within ``stale_if_slow``, else the stale
        copy at once; the revalidation goes on and updates the cache when it answers.
        """
        answer: Deferred[PageResult] = Deferred()

        def slow() -> None:
            self._health.slow()
            answer.callback(PageResult(stored, CacheStatus.STALE, warning=STALE_WARNING))

        timer = self._clock.callLater(self.freshness.stale_if_slow, slow)

        def revalidated(result: Any) -> None:
            if timer.active():
                timer.cancel()
                answer.callback(result)  # a Failure goes on as one
            elif isinstance(result, Failure):
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
            result = await self._fetch(key, stored)
        except UpstreamError as e:
            if stored is None or not self._may_serve_stale(stored):
                raise
            self._failed_until[key] = self._clock.seconds() + RETRY_AFTER
            log.warn(
                "Upstream failed for {url} ({reason}); serving the copy validated {age:.0f}s ago",
                url=stored.url, reason=e.reason, age=self._clock.seconds() - stored.fetched,
            )
            return PageResult(stored, CacheStatus.STALE, warning=FAILED_WARNING)
        self._failed_until.pop(key, None)
        return result

    def waiting(self, key: PageKey) -> int:
        """How many requests wait on the revalidation of ``key`` now."""
        return self._inflight.waiting(key)

    async def settled(self, key: PageKey) -> None:
        """Wait for a revalidation of ``key`` in flight (a background one included) to end."""
        running = self._inflight.join(key)
        if running is not None:
            try:
                await running
            except Exception:
                pass

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

    def find_link(self, segments: tuple[str, ...]) -> "Deferred[FileLink]":
        """The upstream location of the file the proxy serves at ``segments``."""
        return ensureDeferred(self._find_link(segments))

    async def _find_link(self, segments: tuple[str, ...]) -> FileLink:
        keys = [PageKey(PROJECT, p) for p in projects_for_filename(segments[-1])]
        for key in keys:
            page = self.cached(key)
            if page is not None and segments in page.links():
                return page.links()[segments]
        for key in keys:
            try:
                result = await self.get(key)
                if segments not in result.page.links() and result.status is CacheStatus.HIT and not self._health.is_down:
                    # a fresh page may predate a new release: ask once more, at most so often
                    if self._clock.seconds() - result.page.fetched > MIN_REFRESH:
                        result = await self._refresh(key, result.page)
            except NotFound:
                continue
            link = result.page.links().get(segments)
            if link is not None:
                return link
        raise NotFound("no index page links to this file")

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

    # --- upstream ------------------------------------------------------------------

    async def _fetch(self, key: PageKey, stored: StoredPage | None) -> PageResult:
        url = key.upstream_url(self.index)
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
        if response.code == 304 and stored is not None:
            discard_body(self._client, response)
            fresh = attrs.evolve(stored, fetched=self._clock.seconds())
            status = CacheStatus.REVALIDATED
        elif response.code == 200:
            try:
                fresh = await self._receive(key, response, url)
            except simple.BadPage as e:
                raise UpstreamError(f"upstream sent a bad page for {url}: {e}") from None
            status = CacheStatus.MISS if stored is None else CacheStatus.EXPIRED
        elif response.code in (404, 410):
            discard_body(self._client, response)
            self._forget(key)
            raise NotFound(f"upstream answered {response.code} for {url}")
        else:
            discard_body(self._client, response)
            phrase = response.phrase.decode("latin-1", "replace")
            raise UpstreamError(f"upstream answered {response.code} {phrase} for {url}")
        elapsed = self._clock.seconds() - started
        self._remember(fresh)
        self._store(fresh)
        return PageResult(fresh, status, elapsed)

    async def _receive(self, key: PageKey, response: Any, url: str) -> StoredPage:
        """
        A page's new version from the upstream's 200, parsed in a disk thread (parsing a
        big page is seconds of CPU); the project list is streamed to disk and rendered there.
        """
        headers = response.headers
        encoding = b",".join(headers.getRawHeaders(b"content-encoding") or []).strip().lower().decode("latin-1")
        content_type = (headers.getRawHeaders(b"content-type") or [b"text/html"])[0].decode("latin-1")
        if key.kind.parse is None:
            listing = await self._receive_list(response, content_type, encoding)
            page, version = {"meta": listing.meta, "count": listing.count}, listing.version
        else:
            body = await read_body(self._client, response)
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

    async def _receive_list(self, response: Any, content_type: str, encoding: str) -> projectlist.ProjectList:
        """The project list, too big to hold: its body goes to disk as it comes, and is rendered from there."""
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="list-")
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                await read_body_into(self._client, response, out)
            return await self._run_in_thread(
                projectlist.convert, Path(name), content_type=content_type, encoding=encoding,
                directory=self._rendered_root(PageKey(INDEX)), tmp=self._tmp, limit=MAX_PAGE_BYTES,
            )
        finally:
            _unlink(Path(name))

    # --- renderings ----------------------------------------------------------------

    def rendering(self, page: StoredPage, form: Form) -> "Deferred[Rendering]":
        """``page`` in ``form`` as a file, rendered in a disk thread the first time anyone asks."""
        done = page.renderings.get(form)
        if done is not None:
            return succeed(done)

        def keep(rendering: Rendering) -> Rendering:
            page.renderings[form] = rendering
            return rendering

        work = (page.key, page.version, form)
        return self._renders.run(work, lambda: ensureDeferred(self._render(page, form))).addCallback(keep)

    async def _render(self, page: StoredPage, form: Form) -> Rendering:
        if form.gzip:  # from the plain rendering, made once whichever form asks first
            plain = await self.rendering(page, form.plain())
            return await self._run_in_thread(ensure_packed, plain, page.version, form, self._tmp)
        key = page.key
        render = None if key.kind.render is None else functools.partial(key.kind.render, page.page, key.project, form)
        directory = self._rendered_root(key) / page.version
        return await self._run_in_thread(ensure_plain, directory, page.version, form, render, self._tmp)

    def lost(self, page: StoredPage) -> "Deferred[None]":
        """
        A rendering's file is gone (purged, or pruned under a newer version): render
        it again next time; the project list, which only its fetch renders, is fetched again.
        """
        page.renderings.clear()
        if page.key.kind.render is not None:
            return succeed(None)
        self._memory.pop(page.key, None)
        return self._run_in_thread(_unlink, self._root.joinpath(*page.key.relpath()))

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
        self._run_in_thread(_unlink, path).addErrback(
            lambda f: log.failure("Could not remove {path}", f, path=str(path))
        )

    def _store(self, page: StoredPage) -> None:
        path = self._root.joinpath(*page.key.relpath())

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, page.to_json(), self._tmp)
            prune_versions(self._rendered_root(page.key), page.version)

        self._run_in_thread(write).addErrback(
            lambda f: log.error(
                "Could not store page {path}: {reason}", path=str(path), reason=f.getErrorMessage()
            )
        )


def gunzip(data: bytes, limit: int) -> bytes:
    """A gzip body's content, refusing more than ``limit`` bytes of it (a gzip bomb)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit)
    except zlib.error as e:
        raise simple.BadPage(f"broken gzip body: {e}") from None
    if inflater.unconsumed_tail:
        raise simple.BadPage(f"page larger than {limit} bytes once decompressed")
    if not inflater.eof:
        raise simple.BadPage("gzip body cut short")
    return out


def parse_page(parse: Parse, body: bytes, encoding: str, content_type: str, url: str) -> tuple[dict[str, Any], str]:
    """(In a disk thread.) An upstream body as a page in the one form, and its content version."""
    if encoding == "gzip":
        body = gunzip(body, MAX_PAGE_BYTES)
    elif encoding not in ("", "identity"):
        raise simple.BadPage(f"unsupported Content-Encoding {encoding!r}")
    page = parse(body, content_type, url)
    return page, hashlib.blake2b(body, digest_size=12).hexdigest()


def remove_project_records(root: Path, project: str) -> int:
    """Delete a project's page records under one upstream's ``root``; how many went."""
    removed = 0
    records = [root / "simple" / f"{project}.json", root / "json" / f"{project}.json"]
    versions = root / "json" / project
    if versions.is_dir():
        records += list(versions.glob("*.json"))
    for path in records:
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    for rendered in (root / "simple" / f"{project}.r", root / "json" / f"{project}.r", versions):
        shutil.rmtree(rendered, ignore_errors=True)
    return removed


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


