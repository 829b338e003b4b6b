"""
What the cache holds on disk, as the disk budget sees it: each package file, and
each index page: a page record with its renderings
(every form of every version, policy views included) is one unit, used when its
record was last served or stored, and evicted whole, like a package file. A
renderings directory whose record is gone, and a joined project list, are units
of their own. Quarantine markers are state, not cache: never counted or evicted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import attrs


@attrs.frozen
class Entry:
    """One unit the budget may evict: a file, or a page record (``also``: its renderings) or directory."""

    path: str
    size: int
    last_used: float
    also: tuple[str, ...] = ()
    page: bool = False


def free_space(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def scan(root: Path) -> list[Entry]:
    """Every cached file with its size and last use (its access time)."""
    found: list[Entry] = []
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            elif entry.is_file(follow_symlinks=False):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                found.append(Entry(entry.path, st.st_size, max(st.st_atime, st.st_mtime)))
    return found


#: Refresh a file's or page's access time (its "last used") at most this often.
TOUCH_EVERY = 3600.0
#: Directories under an index's pages that hold state rather than cached pages.
KEPT = frozenset({"quarantined"})


def scan_pages(root: Path) -> list[Entry]:
    """(In a disk thread.) Every page unit under ``root`` (``<cache>/pages``), with its size and last use."""
    found: list[Entry] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except (FileNotFoundError, NotADirectoryError):
            continue
        records = {e.name[: -len(".json")] for e in entries if e.name.endswith(".json")}
        for entry in entries:
            if entry.name in KEPT and directory.parent == root:
                continue
            if entry.name.endswith(".r") and entry.is_dir(follow_symlinks=False):
                if entry.name[:-2] not in records:  # renderings whose record is gone
                    found.append(_unit(entry.path, None))
            elif directory == root / "union" and entry.is_dir(follow_symlinks=False):
                found.append(_unit(entry.path, None))  # one version of every list joined
            elif entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            elif entry.name.endswith(".json") and entry.is_file(follow_symlinks=False):
                found.append(_unit(entry.path, entry.path[: -len(".json")] + ".r"))
    return found


def _unit(path: str, renderings: str | None) -> Entry:
    """A record (or a lone directory) and the renderings that go with it, as one entry."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return Entry(path, 0, 0.0, page=True)
    lone_directory = os.path.isdir(path)
    size = _tree_size(path) if lone_directory else st.st_size
    # a directory's access time moves whenever it is listed (by this very scan): its mtime says more
    last_used = st.st_mtime if lone_directory else max(st.st_atime, st.st_mtime)
    also: tuple[str, ...] = ()
    if renderings is not None and os.path.isdir(renderings):
        size += _tree_size(renderings)
        also = (renderings,)
    return Entry(path, size, last_used, also=also, page=True)


def _tree_size(directory: str) -> int:
    total = 0
    for parent, _, names in os.walk(directory):
        for name in names:
            try:
                total += os.stat(os.path.join(parent, name), follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    return total


def remove(path: str) -> None:
    """Delete a file, or a directory and all in it; gone already is fine (readers keep open files)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
