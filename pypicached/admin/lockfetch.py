"""
Prefetching a lock file's files through the daemon. Each file is found on its
project's page as the proxy serves it, by file name (never by the lock URL's
host, which may be the public file host or the index the lock was made
against), fetched like an installer would, and hashed on the way: bytes that
differ from the lock's digest are reported, not counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

import attrs
import treq
from twisted.internet.defer import DeferredSemaphore, ensureDeferred, gatherResults

from pypicached.admin.locks import LockedFile
from pypicached.admin.prefetch import Missing, Summary, read_page


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


@attrs.frozen
class _OnPage:
    url: str
    hashes: dict[str, str]
    metadata: bool


def _files_on(page: dict[str, Any], page_url: str) -> dict[str, _OnPage]:
    found = {}
    for entry in page.get("files", ()):
        if isinstance(entry, dict) and isinstance(entry.get("filename"), str):
            hashes = {str(k).lower(): str(v).lower() for k, v in (entry.get("hashes") or {}).items()}
            meta = bool(entry.get("core-metadata") or entry.get("dist-info-metadata"))
            found[entry["filename"]] = _OnPage(urljoin(page_url, entry.get("url", "")), hashes, meta)
    return found


def _by_project(
    locked: Iterable[LockedFile], served_hosts: frozenset[str], summary: Summary
) -> dict[str, list[LockedFile]]:
    """The locked files by project, but those whose URL's host no index serves (skipped, and said so)."""
    wanted: dict[str, list[LockedFile]] = {}
    for item in dict.fromkeys(locked):
        if item.url and "://" in item.url and host_of(item.url) not in served_hosts:
            summary.skipped.append((item.filename, f"{host_of(item.url)} is served by no index of this proxy"))
        else:
            wanted.setdefault(item.project, []).append(item)
    return wanted


async def prefetch_locked(
    http: Any,
    index_url: str,
    locked: Iterable[LockedFile],
    served_hosts: frozenset[str],
    *,
    jobs: int = 4,
    headers: dict[str, str] | None = None,
    on_progress: Callable[[int, int], None] = lambda nbytes, items: None,
) -> Summary:
    """Fetch every locked file through the proxy at ``index_url``; hosts outside ``served_hosts`` are skipped."""
    summary = Summary()
    wanted = _by_project(locked, served_hosts, summary)
    limit = DeferredSemaphore(jobs)

    async def project(name: str, items: list[LockedFile]) -> None:
        page_url = f"{index_url.rstrip('/')}/{name}/"
        try:
            on_page = _files_on(await read_page(http, page_url, headers), page_url)
        except Missing as e:
            summary.missing.extend((i.filename, str(e)) for i in items)
            return
        for item in items:
            found = on_page.get(item.filename)
            if found is None:
                summary.missing.append((item.filename, f"not on {name}'s index page"))
                continue
            differ = [n for n, v in item.hashes if found.hashes.get(n, v) != v]
            if differ:
                summary.conflicts.append((item.filename, f"the lock's {differ[0]} differs from the index page's"))
            await limit.acquire()
            try:
                await _fetch(http, item, found, summary, headers, on_progress)
            finally:
                limit.release()

    await gatherResults([ensureDeferred(project(n, i)) for n, i in wanted.items()], consumeErrors=True)
    return summary


async def _fetch(
    http: Any,
    item: LockedFile,
    found: _OnPage,
    summary: Summary,
    headers: dict[str, str] | None,
    on_progress: Callable[[int, int], None],
) -> None:
    """One file (and its metadata file) through the proxy, checked against the lock's digest."""
    hashers = {n: hashlib.new(n) for n, _ in item.hashes if n in hashlib.algorithms_available}
    received = 0

    def take(data: bytes) -> None:
        nonlocal received
        received += len(data)
        for h in hashers.values():
            h.update(data)
        on_progress(len(data), 0)

    try:
        response = await http.get(found.url, headers=headers or {}, unbuffered=True)
        await treq.collect(response, take)
        if found.metadata and response.code == 200:
            await treq.collect(
                await http.get(found.url + ".metadata", headers=headers or {}, unbuffered=True), lambda d: None
            )
    except Exception as e:
        summary.missing.append((item.filename, f"download failed: {e}"))
        return
    finally:
        on_progress(0, 1)
    if response.code != 200:
        summary.missing.append((item.filename, f"the proxy answered {response.code}"))
        return
    wrong = [n for n, v in item.hashes if n in hashers and hashers[n].hexdigest() != v]
    if wrong:
        summary.mismatched.append((item.filename, f"{wrong[0]} {hashers[wrong[0]].hexdigest()} is not the lock's"))
        return
    status = (response.headers.getRawHeaders("x-pypi-cache") or ["-"])[0]
    (summary.cached if status == "HIT" else summary.fetched).append((item.filename, received))
