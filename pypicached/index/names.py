"""Project names and file names: PEP 503 normalization and what a name may be."""

from __future__ import annotations

import fnmatch
import functools
import re
from typing import Any

from packaging.utils import (
    InvalidSdistFilename, InvalidWheelFilename, canonicalize_name, parse_sdist_filename, parse_wheel_filename,
)
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
    if filename.endswith(".metadata"):
        filename = filename[: -len(".metadata")]
    if filename.endswith(".whl"):
        try:
            return [parse_wheel_filename(filename)[0]]
        except InvalidWheelFilename:
            pass
    parts = filename.split("-")
    candidates = [
        "-".join(parts[:i]) for i in range(len(parts) - 1, 0, -1) if parts[i][:1].isdigit()
    ]
    names: list[str] = []
    for candidate in candidates:
        if is_valid_name(candidate) and normalize(candidate) not in names:
            names.append(normalize(candidate))
    return tuple(names[:MAX_CANDIDATES])


_LEGACY_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".zip", ".egg", ".exe", ".msi", ".rpm", ".tar")


@functools.lru_cache(maxsize=65536)
def version_of(project: str, filename: str) -> Version | None:
    """The version a distribution file of ``project`` holds, from its name; None if it does not say."""
    if filename.endswith(".metadata"):
        filename = filename[: -len(".metadata")]
    try:
        if filename.endswith(".whl"):
            return parse_wheel_filename(filename)[1]
        if filename.endswith((".tar.gz", ".zip")):
            return parse_sdist_filename(filename)[1]
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        pass
    stem = next((filename[: -len(s)] for s in _LEGACY_SUFFIXES if filename.endswith(s)), filename)
    prefix, _, rest = stem.partition("-")  # legacy: name-version[-pyX.Y][.platform]
    while rest and normalize(prefix) != project:
        more, _, rest = rest.partition("-")
        prefix = f"{prefix}-{more}"
    parts = rest.split("-")[0].split(".")
    for end in range(len(parts), 0, -1):  # "1.0.win32": the longest prefix that is a version
        try:
            return Version(".".join(parts[:end]))
        except InvalidVersion:
            continue
    return None
