"""
``pypicached-admin import BUNDLE``: a bundle from ``export`` into a cache, whether
its daemon runs or not. Nothing enters the cache before everything is checked:
each member against the manifest (name, kind, sha256, size), each package file
against the digest a page (in the bundle, or already cached) publishes for it.
Members are staged under ``<cache>/tmp`` and only then renamed into place, one
atomic rename each, as the daemon's own downloads are. Any doubt refuses the
whole bundle and leaves the cache as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import attrs

from pypicached.admin.bundle import CHUNK, FORMAT, MANIFEST, ZSTD_MAGIC, zstandard
from pypicached.base.names import projects_for_filename
from pypicached.cache.housekeeping import scan
from pypicached.cache.layout import classify
from pypicached.cache.pagekind import JSON_API, PROJECT, PageKey
from pypicached.cache.records import StoredPage, project_records
from pypicached.simpleapi.links import FileLink, new_hasher

#: A manifest larger than this is not one export wrote.
MAX_MANIFEST = 256 << 20


class Refused(Exception):
    """The bundle is refused as a whole; the message says why."""


@attrs.define
class Report:
    files: int = 0
    bytes: int = 0
    pages: int = 0
    kept_newer: int = 0
    already: int = 0


@contextmanager
def opened(path: Path) -> Iterator[tarfile.TarFile]:
    """The bundle as a streamed tar, whatever its compression."""
    with open(path, "rb") as raw:
        if raw.read(4) == ZSTD_MAGIC:
            module = zstandard()
            if module is None:
                raise Refused("the bundle is zstd-compressed and the zstandard module is not installed here")
            raw.seek(0)
            with module.ZstdDecompressor().stream_reader(raw) as stream:
                with tarfile.open(fileobj=stream, mode="r|") as tar:
                    yield tar
            return
        raw.seek(0)
        with tarfile.open(fileobj=raw, mode="r|*") as tar:
            yield tar


def read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    """The first member, the manifest: each member's classified place, sha256 and size."""
    info = tar.next()
    if info is None or info.name != MANIFEST or not info.isreg() or info.size > MAX_MANIFEST:
        raise Refused("no manifest first: not a bundle export wrote")
    extracted = tar.extractfile(info)
    assert extracted is not None  # a regular file
    try:
        manifest = json.loads(extracted.read())
        assert manifest["format"] == FORMAT
        listed = {m["name"]: (classify(m["name"]), str(m["sha256"]), int(m["size"])) for m in manifest["members"]}
    except Exception:
        raise Refused("its manifest is not one this version reads") from None
    bad = [name for name, (member, _, _) in listed.items() if member is None]
    if bad or len(listed) != len(manifest["members"]):
        raise Refused(f"its manifest lists a path that is not a cache member: {(bad or ['a duplicate'])[0]!r}")
    return {"manifest": manifest, "listed": listed}


def _copy(source: IO[bytes], target: Path, size: int) -> str:
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def stage(tar: tarfile.TarFile, listed: dict[str, Any], directory: Path) -> None:
    """Every member after the manifest into ``directory``, each checked against the manifest."""
    seen: set[str] = set()
    try:
        while (info := tar.next()) is not None:
            if not info.isreg():
                raise Refused(f"{info.name!r} is not a regular file (a link, device or directory)")
            if info.name not in listed or info.name in seen:
                raise Refused(f"{info.name!r} is not in the manifest, or is there twice")
            _, sha256, size = listed[info.name]
            source = tar.extractfile(info)
            assert source is not None
            if info.size != size or _copy(source, directory / info.name, size) != sha256:
                raise Refused(f"{info.name} is not as the manifest says (tampered with?)")
            seen.add(info.name)
    except Refused:
        raise
    except Exception as e:  # tarfile's, zlib's and zstandard's errors alike
        raise Refused(f"the bundle is cut short or damaged: {e}") from None
    if len(seen) != len(listed):
        raise Refused(f"the bundle is cut short: {len(listed) - len(seen)} of its members are missing")


def _page(path: Path, parts: tuple[str, ...]) -> StoredPage | None:
    """A project's page record (simple/ or json/) as stored, or None for the project list."""
    rest = parts[2:]
    if rest == ("index.json",):
        return None
    if rest[0] == "simple":
        key = PageKey(PROJECT, rest[1].removesuffix(".json"))
    elif len(rest) == 2:
        key = PageKey(JSON_API, rest[1].removesuffix(".json"))
    else:
        key = PageKey(JSON_API, rest[1], rest[2].removesuffix(".json"))
    return StoredPage.from_json(key, path.read_bytes())


def links(staged: Path, listed: dict[str, Any], root: Path, projects: set[str]) -> dict[tuple[str, ...], FileLink]:
    """Every file a page links, from the bundle's page records and the cache's for ``projects``."""
    table: dict[tuple[str, ...], FileLink] = {}
    records = [
        (path, path.relative_to(root).parts)
        for project in sorted(projects)
        for pages in root.glob("pages/*")
        for path in project_records(pages, project)
    ]
    records += [(staged / n, m.parts) for n, (m, _, _) in listed.items() if m.kind == "record"]
    for path, parts in records:
        try:
            page = _page(path, parts)
        except (OSError, ValueError, KeyError) as e:
            raise Refused(f"{'/'.join(parts)} is not a page record: {e}") from None
        if page is not None:
            table.update(page.links())
    return table


def verify_files(staged: Path, listed: dict[str, Any], root: Path) -> None:
    """Each package file against the digests its page publishes."""
    files = {n: m for n, (m, _, _) in listed.items() if m.kind == "file"}
    projects = {p for m in files.values() for p in projects_for_filename(m.parts[-1].removesuffix(".metadata"))}
    table = links(staged, listed, root, projects)
    for name, member in files.items():
        link = table.get(member.parts[1:])
        if link is None:
            raise Refused(f"{name}: no page in the bundle or the cache links it")
        expected = link.expected_digests()
        if not expected and not name.endswith(".metadata"):  # PEP 658 allows metadata without a digest
            raise Refused(f"{name}: its page publishes no digest for it")
        for algorithm, value in expected.items():
            hasher = new_hasher(algorithm)
            with open(staged / name, "rb") as f:
                while chunk := f.read(CHUNK):
                    hasher.update(chunk)
            if hasher.hexdigest() != value:
                raise Refused(f"{name}: its {algorithm} is not the one its page publishes")


def fits(listed: dict[str, Any], root: Path, max_size: int) -> int:
    """The bytes of package files the cache lacks; ``Refused`` if they would not fit in ``max_size``."""
    needed = sum(size for name, (m, _, size) in listed.items() if m.kind == "file" and not (root / name).exists())
    used = sum(e.size for e in scan(root / "files"))
    if used + needed > max_size:
        raise Refused(f"it would not fit: {needed} new bytes on top of {used} would pass max_size ({max_size} bytes)")
    return needed


def _fetched(path: Path) -> float:
    try:
        return float(json.loads(path.read_bytes())["fetched"])
    except (OSError, ValueError, KeyError, TypeError):
        return float("-inf")


def commit(staged: Path, listed: dict[str, Any], root: Path) -> Report:
    """Rename each staged member into place: files, then renderings, then the records (the newer page wins)."""
    report = Report()
    winners = {
        m.parts for n, (m, _, _) in listed.items() if m.kind == "record" and _fetched(staged / n) > _fetched(root / n)
    }
    report.kept_newer = sum(1 for m, _, _ in listed.values() if m.kind == "record") - len(winners)
    order = {"file": 0, "rendering": 1, "record": 2}
    for name, (member, _, size) in sorted(listed.items(), key=lambda item: order[item[1][0].kind]):
        final = root / name
        if member.kind == "file" and final.exists():
            report.already += 1
            continue
        if member.kind != "file" and (member.record or member.parts) not in winners:
            continue  # the cache's page is as new or newer: it keeps its renderings
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged / name, final)
        report.files += member.kind == "file"
        report.bytes += size if member.kind == "file" else 0
        report.pages += member.kind == "record"
    return report


def import_bundle(bundle: Path, root: Path, max_size: int) -> Report:
    """Check the whole bundle in ``<root>/tmp``, then move it into the cache; ``Refused`` leaves the cache as it was."""
    tmp = root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=tmp, prefix="import-"))
    try:
        with opened(bundle) as tar:
            listed = read_manifest(tar)["listed"]
            fits(listed, root, max_size)
            stage(tar, listed, staged)
        verify_files(staged, listed, root)
        return commit(staged, listed, root)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise Refused(f"the bundle cannot be read: {e}") from None
    finally:
        shutil.rmtree(staged, ignore_errors=True)
