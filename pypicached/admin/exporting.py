"""
What ``export`` puts in a bundle: for lock files, each locked project's page
records (every index, both formats as rendered, the JSON API's) and the locked
files that are cached, with their ``.metadata``; for requirements files, every
cached file of each named project; with ``--all``, the whole cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from pypicached.admin import prefetch
from pypicached.admin.locks import format_of, read_lock
from pypicached.base.names import normalize
from pypicached.cache.layout import everything, project_pages
from pypicached.cache.pagekind import PROJECT, PageKey
from pypicached.cache.records import StoredPage, project_records


def wanted(paths: Sequence[Path]) -> dict[str, set[str] | None]:
    """Project -> the file names a lock names (None: every cached file of it)."""
    found: dict[str, set[str] | None] = {}
    for path in paths:
        fmt = format_of(path)
        if fmt == "requirements":
            for item in prefetch.read_requirements(path):
                if item.requirement is not None:
                    found[normalize(item.requirement.name)] = None
            continue
        for locked in read_lock(path, fmt):
            names = found.setdefault(locked.project, set())
            if names is not None:
                names.add(locked.filename)
    return found


def project_files(root: Path, project: str, names: set[str] | None) -> Iterator[Path]:
    """The cached files (and metadata files) of ``project`` its page records link, those named or all."""
    for pages in sorted(root.glob("pages/*")):
        for record in project_records(pages, project)[:1]:
            try:
                page = StoredPage.from_json(PageKey(PROJECT, project), record.read_bytes())
            except (OSError, ValueError, KeyError):
                continue
            for segments in page.links():
                if names is None or segments[-1].removesuffix(".metadata") in names:
                    path = root.joinpath("files", *segments)
                    if path.is_file():
                        yield path


def chosen(root: Path, paths: Sequence[Path], everything_: bool) -> Iterator[Path]:
    """The cache's files a bundle of these locks (or of everything) holds."""
    if everything_:
        yield from everything(root)
        return
    for project, names in sorted(wanted(paths).items()):
        yield from project_files(root, project, names)
        yield from project_pages(root, project)
