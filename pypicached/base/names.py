"""Project names and file names: PEP 503 normalization and what a name may be."""

from __future__ import annotations

import fnmatch
import functools
import re
from typing import Any

from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

_VALID_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)
_VALID_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.!+_-]{0,127}$")


@functools.lru_cache(maxsize=4096)  # a farm asks for the same few hundred names all day
def is_valid_name(name: str) -> bool:
    """Whether ``name`` is a legal project name (PEP 508's rule)."""
    return len(name) <= 200 and _VALID_NAME.match(name) is not None


@functools.lru_cache(maxsize=4096)
def normalize(name: str) -> str:
    """The PEP 503 normal form: lower case, runs of ``-_.`` folded to ``-``."""
    return canonicalize_name(name)


#: A normalized project name, or a glob of them.
_GLOB = re.compile(r"[a-z0-9*?\[\]!-]+")


def globs(value: Any) -> tuple[str, ...]:
    """A list of normalized project names or globs of them (``mycorp-*``)."""
    if not isinstance(value, list) or not all(isinstance(p, str) and _GLOB.fullmatch(p) for p in value):
        raise ValueError(
            f"must be a list of normalized project names or globs (lower case, '-' for '_' and '.'), not {value!r}"
        )
    return tuple(value)


def matches_any(patterns: tuple[str, ...], name: str) -> bool:
    """Whether a normalized name matches one of ``patterns`` (names or globs such as ``mycorp-*``)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def is_valid_version(version: str) -> bool:
    """Loose check that a version segment is safe to use as a cache key."""
    return _VALID_VERSION.match(version) is not None


#: A hostile name like ``a-1-1-1-…tar.gz`` must not fan out into many upstream fetches.
MAX_CANDIDATES = 3


def projects_for_filename(filename: str) -> list[str]:
    """A copy of ``_projects_for``'s answer, which is worked out once per file name."""
    return list(_projects_for(filename))


@functools.lru_cache(maxsize=4096)
def _projects_for(filename: str) -> tuple[str, ...]:
    """
    The normalized project names a distribution file name may belong to, most
    likely first.

    Wheels name their project unambiguously; sdists and legacy formats do not
    (``python-dateutil-2.8.2.tar.gz``), so every split before a part that starts
    with a digit is a candidate, longest first.
    """
    filename = without_metadata(filename)
    if filename.endswith(".whl"):
        try:
            return (parse_wheel_filename(filename)[0],)
        except InvalidWheelFilename:
            pass
    parts = filename.split("-")
    candidates = ["-".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if parts[i][:1].isdigit()]
    names: list[str] = []
    for candidate in candidates:
        if is_valid_name(candidate) and normalize(candidate) not in names:
            names.append(normalize(candidate))
    return tuple(names[:MAX_CANDIDATES])


_ARCHIVE_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".tar", ".egg", ".exe", ".msi", ".rpm")


def without_metadata(filename: str) -> str:
    """The distribution a PEP 658 metadata file (``….whl.metadata``) describes, or ``filename`` itself."""
    return filename.removesuffix(".metadata")


def parse_version(text: object) -> Version | None:
    """``text`` as a PEP 440 version, or None."""
    try:
        return Version(text) if isinstance(text, str) else None
    except InvalidVersion:
        return None


@functools.lru_cache(maxsize=65536)
def version_of(project: str, filename: str) -> Version | None:
    """The version a distribution file of ``project`` holds, from its name; None if it does not say."""
    filename = without_metadata(filename)
    if filename.endswith(".whl"):
        try:
            return parse_wheel_filename(filename)[1]
        except (InvalidWheelFilename, InvalidVersion):
            return None
    stem = next((filename[: -len(s)] for s in _ARCHIVE_SUFFIXES if filename.endswith(s)), filename)
    prefix, _, rest = stem.partition("-")  # after the project's own name, however it is spelled
    while rest and normalize(prefix) != project:
        more, _, rest = rest.partition("-")
        prefix = f"{prefix}-{more}"
    if not rest and "-" in stem:  # named otherwise (a renamed project's old files): after the last "-"
        rest = stem.rpartition("-")[2]
    whole = parse_version(rest)  # an sdist: all of it ("1.0-1" is 1.0.post1)
    if whole is not None:
        return whole
    parts = rest.split("-")[0].split(".")  # legacy: "1.0-py2.7", "1.0.win32"
    for end in range(len(parts), 0, -1):
        found = parse_version(".".join(parts[:end]))
        if found is not None:
            return found
    return None
