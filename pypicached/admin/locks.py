"""
What a lock file names: every file of every locked package, with its hashes, in
one shape whatever the format (``pylock.toml``, ``uv.lock``, ``poetry.lock``,
``pdm.lock``). Each format is one small reader in ``READERS``; the format is
picked from the file's name, else from its content.

A lock serves a whole CI farm, so every file it lists is wanted (all platforms);
``narrow`` keeps those a given platform and Python could install, as pip's
``download --platform/--python-version`` do.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import attrs
from packaging.markers import InvalidMarker, Marker
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename


@attrs.frozen
class LockedFile:
    """One file a lock names: its project, file name, URL (if the lock has one) and hashes."""

    project: str
    version: str
    filename: str
    url: str | None
    #: Hash name -> lowercase hex digest, as the lock spells them (``sha256`` at least, usually).
    hashes: tuple[tuple[str, str], ...]
    marker: str | None = None

    @property
    def digests(self) -> dict[str, str]:
        return dict(self.hashes)


class LockError(ValueError):
    """Not a lock file of the format its name says."""


def _hash(spelled: Any) -> tuple[tuple[str, str], ...]:
    """``"sha256:abc"`` (uv, poetry, pdm) as ((name, digest),)."""
    if not isinstance(spelled, str) or ":" not in spelled:
        return ()
    name, _, value = spelled.partition(":")
    return ((name.lower(), value.lower()),)


def _hashes(table: Any) -> tuple[tuple[str, str], ...]:
    """PEP 751's ``hashes = {sha256 = "..."}``."""
    if not isinstance(table, dict):
        return ()
    return tuple(sorted((str(k).lower(), str(v).lower()) for k, v in table.items() if isinstance(v, str)))


def _name_of(url: str | None, name: Any = None) -> str:
    if isinstance(name, str) and name:
        return name
    return unquote(urlsplit(url or "").path.rsplit("/", 1)[-1])


def _packages(data: dict[str, Any], key: str) -> Iterator[dict[str, Any]]:
    for package in data.get(key) or ():
        if isinstance(package, dict) and isinstance(package.get("name"), str):
            yield package


def read_pylock(data: dict[str, Any]) -> Iterator[LockedFile]:
    """PEP 751: ``[[packages]]`` with ``wheels = [{url, hashes}]`` and ``[packages.sdist]``."""
    for package in _packages(data, "packages"):
        name, version, marker = (
            canonicalize_name(package["name"]),
            str(package.get("version", "")),
            package.get("marker"),
        )
        for entry in [*(package.get("wheels") or ()), package.get("sdist")]:
            if isinstance(entry, dict) and (entry.get("url") or entry.get("name")):
                url = entry.get("url")
                yield LockedFile(
                    name, version, _name_of(url, entry.get("name")), url, _hashes(entry.get("hashes")), marker
                )


def read_uv(data: dict[str, Any]) -> Iterator[LockedFile]:
    """uv.lock: ``[[package]]`` with ``sdist = {url, hash}`` and ``wheels = [{url, hash}]`` (the project: none)."""
    for package in _packages(data, "package"):
        name, version = canonicalize_name(package["name"]), str(package.get("version", ""))
        marker = package.get("resolution-markers")
        for entry in [*(package.get("wheels") or ()), package.get("sdist")]:
            if isinstance(entry, dict) and entry.get("url"):
                url = entry["url"]
                yield LockedFile(name, version, _name_of(url), url, _hash(entry.get("hash")), _joined(marker))


def read_files_table(data: dict[str, Any]) -> Iterator[LockedFile]:
    """poetry.lock and pdm.lock: ``[[package]]`` with ``files = [{file | url, hash}]``."""
    for package in _packages(data, "package"):
        name, version = canonicalize_name(package["name"]), str(package.get("version", ""))
        marker = package.get("marker") or package.get("markers")
        for entry in package.get("files") or ():
            if isinstance(entry, dict) and (entry.get("file") or entry.get("url")):
                url = entry.get("url")
                yield LockedFile(name, version, _name_of(url, entry.get("file")), url, _hash(entry.get("hash")), marker)


def _joined(markers: Any) -> str | None:
    if isinstance(markers, list) and markers:
        return " or ".join(f"({m})" for m in markers if isinstance(m, str))
    return markers if isinstance(markers, str) else None


#: Each lock format: how its files are named, how its content is told apart, how it is read.
READERS: dict[
    str, tuple[tuple[str, ...], Callable[[dict[str, Any]], bool], Callable[[dict[str, Any]], Iterator[LockedFile]]]
] = {
    "pylock": (("pylock.toml", "pylock.*.toml"), lambda d: "lock-version" in d and "packages" in d, read_pylock),
    "uv": (("uv.lock",), lambda d: "package" in d and ("revision" in d or "requires-python" in d), read_uv),
    "poetry": (("poetry.lock",), lambda d: "content-hash" in (d.get("metadata") or {}), read_files_table),
    "pdm": (("pdm.lock",), lambda d: "lock_version" in (d.get("metadata") or {}), read_files_table),
}


def format_of(path: Path) -> str:
    """``pylock``, ``uv``, ``poetry``, ``pdm`` or ``requirements``: by name, else by content."""
    for name, (patterns, _, _) in READERS.items():
        if any(fnmatch.fnmatchcase(path.name, p) for p in patterns):
            return name
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return "requirements"
    for name, (_, looks_like, _) in READERS.items():
        if looks_like(data):
            return name
    return "requirements"


def read_lock(path: Path, fmt: str) -> list[LockedFile]:
    """Every file the lock at ``path`` names (``fmt`` from ``format_of``)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise LockError(f"{path} is not TOML: {e}") from None
    return list(READERS[fmt][2](data))


@attrs.frozen
class Target:
    """What ``--platform`` and ``--python`` narrow a lock to (empty: everything)."""

    platforms: tuple[str, ...] = ()
    python: str | None = None

    def wants(self, locked: LockedFile) -> bool:
        if not self.platforms and self.python is None:
            return True
        if not self._marker_allows(locked.marker):
            return False
        if not locked.filename.endswith(".whl"):
            return True  # an sdist builds anywhere
        try:
            tags = parse_wheel_filename(locked.filename)[3]
        except InvalidWheelFilename:
            return True
        return any(self._platform_ok(t.platform) and self._python_ok(t.interpreter, t.abi) for t in tags)

    def _platform_ok(self, platform: str) -> bool:
        return not self.platforms or platform == "any" or any(_same_platform(platform, p) for p in self.platforms)

    def _python_ok(self, interpreter: str, abi: str) -> bool:
        if self.python is None:
            return True
        major, _, minor = self.python.partition(".")
        if interpreter in (f"py{major}", f"py{major}{minor}"):
            return True
        if interpreter.startswith("cp") and interpreter[2:].isdigit():
            wheel = interpreter[2:]
            return wheel == major + minor or (abi == "abi3" and int(wheel[1:] or 0) <= int(minor or 0))
        return False

    def _marker_allows(self, marker: str | None) -> bool:
        if not marker or self.python is None:
            return True
        try:
            return Marker(marker).evaluate({"python_version": self.python, "python_full_version": self.python + ".0"})
        except (InvalidMarker, ValueError, KeyError):
            return True


_FAMILY = re.compile(r"^(manylinux|musllinux|macosx)(?:_?\d+)*_(.+)$")


def _same_platform(wheel: str, wanted: str) -> bool:
    """A wheel's platform tag for a wanted one: equal, or the same manylinux/musllinux/macOS family and machine."""
    if wheel == wanted:
        return True
    a, b = _FAMILY.match(wheel), _FAMILY.match(wanted)
    return a is not None and b is not None and a.groups() == b.groups()
