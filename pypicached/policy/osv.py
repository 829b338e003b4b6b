"""
The OSV format, read: a zip of OSV advisories (as OSV publishes ``all.zip`` per
ecosystem) compiled into one immutable snapshot that the policy asks per project
and version. Only PyPI's entries are kept, as version spans and the few listed
versions no span covers; the JSON documents are not.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
from packaging.utils import canonicalize_version
from packaging.version import Version

from pypicached.base.names import normalize, parse_version

#: One advisory is a few kB; a member this large is refused, and the feed with it.
MAX_MEMBER_BYTES = 16 * 1024 * 1024
MAX_MEMBERS = 500_000
#: Bounds the work a zip bomb can cause, whatever its members claim.
MAX_TOTAL_BYTES = 4 * 1024 * 1024 * 1024
#: Answers kept per snapshot; a farm asks about the same few thousand files all day.
CACHE_SIZE = 65_536
MAX_SUMMARY = 300


@attrs.frozen
class Advisory:
    """One advisory, as the policy explains a decision with it."""

    id: str
    malicious: bool
    summary: str


#: A closed or half-open span of versions: (from, to, to is included); None is unbounded.
_Span = tuple[Version | None, Version | None, bool]
#: One advisory's word on one project: versions listed but not covered by a span, and the spans.
_Entry = tuple[Advisory, frozenset, tuple[_Span, ...]]


class AdvisoryIndex:
    """
    An immutable snapshot: per normalized project, the advisories naming it,
    compiled to version spans (the JSON documents are not kept).
    """

    def __init__(self, by_project: Mapping[str, tuple[_Entry, ...]], version: str, count: int) -> None:
        self._by_project = dict(by_project)
        self.version = version
        self.count = count
        self._answers: dict[tuple[str, str], tuple[Advisory, ...]] = {}

    def projects(self) -> Collection[str]:
        """The normalized names that some advisory names (a set-like view)."""
        return self._by_project.keys()

    def affecting(self, project: str, version: str) -> tuple[Advisory, ...]:
        """Advisories naming this normalized project name and this version (malicious first)."""
        entries = self._by_project.get(project)
        if entries is None:
            return ()
        key = (project, version)
        found = self._answers.get(key)
        if found is None:
            found = _affecting(entries, version)
            if len(self._answers) >= CACHE_SIZE:
                self._answers.clear()
            self._answers[key] = found
        return found

    def __repr__(self) -> str:
        return f"<AdvisoryIndex {self.version or 'empty'}: {self.count} advisories>"


EMPTY = AdvisoryIndex({}, "", 0)


def _affecting(entries: tuple[_Entry, ...], version: str) -> tuple[Advisory, ...]:
    parsed = parse_version(version)
    # a local version ("2.5.1+cu124", as PyTorch's index builds them) is the public release it was built from
    names = (
        {version} if parsed is None else {version, canonicalize_version(parsed), canonicalize_version(parsed.public)}
    )
    found: dict[str, Advisory] = {}
    for advisory, versions, spans in entries:
        if advisory.id in found:
            continue
        if not names.isdisjoint(versions) or (parsed is not None and _within(Version(parsed.public), spans)):
            found[advisory.id] = advisory
    return tuple(sorted(found.values(), key=lambda a: (not a.malicious, a.id)))


def _within(version: Version, spans: tuple[_Span, ...]) -> bool:
    for low, high, inclusive in spans:
        if low is not None and version < low:
            continue
        if high is None or version < high or (inclusive and version == high):
            return True
    return False


def read_zip(path: Path) -> AdvisoryIndex:
    """
    The snapshot in an OSV zip (blocking: run it in a thread). Raises ValueError
    for a zip that is corrupt, holds no advisories, or none for PyPI.
    """
    builder = _Builder()
    digest = hashlib.blake2b(digest_size=6)
    try:
        with zipfile.ZipFile(path) as archive:
            for name, data, crc in _members(archive):
                digest.update(f"{name}\0{crc}\0{len(data)}\n".encode())
                builder.add(name, data)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error) as e:
        raise ValueError(f"not a readable zip: {e}") from None
    if not builder.documents:
        raise ValueError("the zip holds no OSV advisories (no .json members)")
    if not builder.count:
        raise ValueError(f"none of its {builder.documents} advisories is for PyPI (is it another ecosystem's feed?)")
    return AdvisoryIndex(builder.finish(), digest.hexdigest(), builder.count)


def _members(archive: zipfile.ZipFile) -> Iterator[tuple[str, bytes, int]]:
    """Each ``.json`` member's name, bytes and CRC, in a stable order, within the bounds above."""
    infos = sorted(
        (i for i in archive.infolist() if i.filename.endswith(".json") and not i.is_dir()), key=lambda i: i.filename
    )
    if len(infos) > MAX_MEMBERS:
        raise ValueError(f"the zip has {len(infos)} members, more than {MAX_MEMBERS}")
    total = 0
    for info in infos:
        if info.file_size > MAX_MEMBER_BYTES:
            raise ValueError(f"member {info.filename!r} is larger than {MAX_MEMBER_BYTES} bytes")
        with archive.open(info) as member:
            data = member.read(MAX_MEMBER_BYTES + 1)
        total += len(data)
        if len(data) > MAX_MEMBER_BYTES or total > MAX_TOTAL_BYTES:
            raise ValueError(f"member {info.filename!r} makes the zip larger than its bounds")
        yield info.filename, data, info.CRC


class _Builder:
    """Compiles documents one at a time into the per-project entries, sharing repeated strings."""

    def __init__(self) -> None:
        self.documents = 0
        self.count = 0
        self._projects: dict[str, list[_Entry]] = {}
        self._strings: dict[str, str] = {}
        self._versions: dict[str, Version | None] = {}

    def add(self, name: str, data: bytes) -> None:
        try:
            doc = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"member {name!r} is not JSON: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("id"), str) or not doc["id"]:
            raise ValueError(f"member {name!r} is not an OSV advisory (it has no id)")
        self.documents += 1
        if doc.get("withdrawn"):
            return
        summary = doc.get("summary")
        summary = summary[:MAX_SUMMARY] if isinstance(summary, str) else ""
        advisory = Advisory(doc["id"], doc["id"].startswith("MAL-"), summary)
        added = False
        for affected in _list(doc.get("affected")):
            package = affected.get("package") if isinstance(affected, dict) else None
            if not isinstance(package, dict) or package.get("ecosystem") != "PyPI":
                continue
            if not isinstance(package.get("name"), str) or not package["name"]:
                continue
            project = self._share(normalize(package["name"]))
            spans = tuple(s for r in _list(affected.get("ranges")) for s in self._spans(r))
            versions = frozenset(self._listed(affected.get("versions"), spans))
            self._projects.setdefault(project, []).append((advisory, versions, spans))
            added = True
        self.count += added

    def finish(self) -> dict[str, tuple[_Entry, ...]]:
        return {project: tuple(entries) for project, entries in self._projects.items()}

    def _spans(self, range_: Any) -> Iterator[_Span]:
        """
        An ECOSYSTEM range's events, in the order given, as spans: introduced up to
        fixed (excluded) or last_affected (included), or open-ended. A span with a
        bound that is no version is dropped (its versions may still be listed).
        """
        if not isinstance(range_, dict) or range_.get("type") != "ECOSYSTEM":
            return
        start: Any = None
        for event in _list(range_.get("events")):
            if not isinstance(event, dict):
                continue
            if "introduced" in event and start is None:
                start = event["introduced"]
            elif start is not None and ("fixed" in event or "last_affected" in event):
                inclusive = "fixed" not in event
                yield from self._span(start, event["last_affected" if inclusive else "fixed"], inclusive)
                start = None
        if start is not None:
            yield from self._span(start, None, False)

    def _span(self, start: Any, end: Any, inclusive: bool) -> Iterator[_Span]:
        low = None if start == "0" else self._version(start)
        high = None if end is None else self._version(end)
        if (low is None and start != "0") or (high is None and end is not None):
            return
        yield (low, high, inclusive)

    def _listed(self, versions: Any, spans: tuple[_Span, ...]) -> Iterator[str]:
        """
        Listed versions the spans do not already cover (OSV lists a range's versions
        too, and keeping them all would cost more memory than everything else), in
        canonical form (``1.0`` and ``1.0.0`` are one release).
        """
        for raw in _list(versions):
            if not isinstance(raw, str):
                continue
            parsed = self._version(raw)
            if parsed is None:
                yield self._share(raw)
            elif not _within(parsed, spans):
                yield self._share(canonicalize_version(parsed))

    def _version(self, text: Any) -> Version | None:
        if not isinstance(text, str):
            return None
        if text not in self._versions:
            self._versions[text] = parse_version(text)
        return self._versions[text]

    def _share(self, text: str) -> str:
        return self._strings.setdefault(text, text)


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []
