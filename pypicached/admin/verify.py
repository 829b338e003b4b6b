"""
Re-hashing the cache: every cached file against the digests its index page
published when it was stored (and, for the public index's layout, the
blake2b-256 its path spells). A file that no longer matches (a bad disk, a
hand edit) is deleted, so the next request fetches it afresh.

This reads the cache directory alone, so it runs in the admin command, not the
daemon; deleting a file never disturbs a client reading it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs

from pypicached.cache.pagekind import PROJECT, PageKey
from pypicached.cache.records import StoredPage
from pypicached.simpleapi.links import FileLink, new_hasher

CHUNK = 1024 * 1024


@attrs.frozen
class Cached:
    """One committed file in the cache."""

    segments: tuple[str, ...]
    path: Path
    size: int


def cached_files(root: Path) -> list[Cached]:
    """Every committed file under ``root/files``, with the proxy path it is served at."""
    files = root / "files"
    found = []
    for directory, _, names in os.walk(files):
        for name in names:
            path = Path(directory, name)
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            found.append(Cached(path.relative_to(files).parts, path, size))
    return sorted(found, key=lambda c: c.path)


def recorded_links(root: Path) -> dict[tuple[str, ...], FileLink]:
    """Every file link of every stored project page, of every upstream, by proxy path."""
    links: dict[tuple[str, ...], FileLink] = {}
    for record in sorted(root.glob("pages/*/simple/*.json")):
        try:
            page = StoredPage.from_json(PageKey(PROJECT, record.stem), record.read_bytes())
        except (OSError, ValueError, KeyError, TypeError):
            continue
        links.update(page.links())
    return links


def expected(cached: Cached, links: dict[tuple[str, ...], FileLink]) -> dict[str, str]:
    """The digests ``cached`` must match: its page's, else what its path spells."""
    link = links.get(cached.segments) or FileLink("/" + "/".join(cached.segments), cached.segments[-1])
    return link.expected_digests()


def hash_file(path: Path, names: list[str], progress: Callable[[int], None]) -> dict[str, str]:
    hashers = {name: new_hasher(name) for name in names}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            for hasher in hashers.values():
                hasher.update(chunk)
            progress(len(chunk))
    return {name: h.hexdigest() for name, h in hashers.items()}


def verify(
    root: Path,
    files: list[Cached],
    links: dict[tuple[str, ...], FileLink],
    *,
    drop: bool = True,
    progress: Callable[[int, int], None] = lambda nbytes, items: None,
) -> Iterator[tuple[Cached, str | None]]:
    """
    Check each file, yielding it with None (good), ``"unknown"``, or why it is bad;
    bad files are deleted when ``drop`` is set.
    """
    for cached in files:
        want = expected(cached, links)
        if not want:
            progress(cached.size, 1)
            yield cached, "unknown"
            continue
        try:
            got = hash_file(cached.path, sorted(want), lambda n: progress(n, 0))
        except FileNotFoundError:
            progress(0, 1)
            continue  # evicted meanwhile
        progress(0, 1)
        wrong = [
            f"{name} is {got[name]}, expected {value}" for name, value in sorted(want.items()) if got[name] != value
        ]
        if wrong:
            if drop:
                try:
                    os.unlink(cached.path)
                except FileNotFoundError:
                    pass
            yield cached, "; ".join(wrong)
        else:
            yield cached, None
