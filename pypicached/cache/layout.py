"""
What each path below a cache directory is, for tools that carry a cache elsewhere
(export and import): a package file, a page record, or a rendering of one. The
daemon writes these places (files.py, store.py, rendered.py); this says which
relative paths are one of them, and nothing else is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import attrs

from pypicached.base.paths import is_plain_segment
from pypicached.cache.records import project_records


@attrs.frozen
class Member:
    """A path below the cache root, as one of the kinds a bundle may carry."""

    parts: tuple[str, ...]
    #: ``file`` (a package file or its .metadata), ``record`` (a page record) or ``rendering``.
    kind: str
    #: For a rendering, its page record's parts (it belongs to that record's versions).
    record: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return "/".join(self.parts)


def _record_parts(rest: tuple[str, ...]) -> bool:
    """A record's path below an index's page directory: index.json, simple/p.json, json/p.json, json/p/v.json."""
    if rest == ("index.json",):
        return True
    if len(rest) == 2 and rest[0] in ("simple", "json"):
        return rest[1].endswith(".json")
    return len(rest) == 3 and rest[0] == "json" and rest[2].endswith(".json")


def classify(name: str) -> Member | None:
    """The member a relative path (``a/b/c``) stands for, or None for a path a bundle must not hold."""
    parts = tuple(name.split("/"))
    if not all(is_plain_segment(p) for p in parts) or len(parts) < 3:
        return None
    if parts[:2] == ("files", "packages"):
        return Member(parts, "file")
    if parts[0] != "pages" or parts[1] in ("union", "tmp"):
        return None
    rest = parts[2:]
    if _record_parts(rest):
        return Member(parts, "record")
    for i, part in enumerate(rest):
        if part.endswith(".r") and i + 2 < len(rest) and _record_parts((*rest[:i], part[:-2] + ".json")):
            return Member(parts, "rendering", parts[: 2 + i] + (part[:-2] + ".json",))
    return None


def walk(directory: Path, root: Path) -> Iterator[Path]:
    """Every regular file below ``directory`` (no symlinks followed), sorted, for a stable bundle."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            yield from walk(Path(entry.path), root)
        elif entry.is_file(follow_symlinks=False):
            yield Path(entry.path)


def everything(root: Path) -> Iterator[Path]:
    """Every file of a cache that a bundle may carry: package files, page records and their renderings."""
    for path in walk(root / "files" / "packages", root):
        yield path
    for path in walk(root / "pages", root):
        if classify(path.relative_to(root).as_posix()) is not None:
            yield path


def project_pages(root: Path, project: str) -> Iterator[Path]:
    """A project's page records on every index, and the renderings of their current versions."""
    for pages in sorted(root.glob("pages/*")):
        for record in project_records(pages, project):
            yield record
            yield from walk(record.with_suffix(".r"), root)
