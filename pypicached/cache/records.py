"""
A page as last validated upstream, and its record on disk: what the cache
keeps of each page, how an upstream body becomes one, and how it goes away.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from pathlib import Path
from typing import Any

import attrs

from pypicached.cache.forms import Form, Rendering
from pypicached.cache.pagekind import PageKey, Parse
from pypicached.simpleapi import chunkedjson, simple
from pypicached.simpleapi.links import FileLink, proxy_path
from pypicached.upstream.body import MAX_PAGE_BYTES


@attrs.define(eq=False)
class StoredPage:
    """
    A page as last validated upstream, in the one form ``simple`` reads and writes
    (for the project list, only its ``meta`` and size: its bodies are files).
    """

    key: PageKey
    url: str
    fetched: float
    etag: str | None
    last_modified: str | None
    page: dict[str, Any]
    #: Names this page's content, whatever its age: its renderings are kept per version.
    version: str = ""
    #: The renderings made so far, while the page is in memory.
    renderings: dict[Form, Rendering] = attrs.field(factory=dict, repr=False)
    #: When its record's access time was last set (the disk budget's "last used").
    touched: float = attrs.field(default=0.0, init=False, repr=False)
    _links: dict[tuple[str, ...], FileLink] | None = attrs.field(default=None, init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.version:
            self.version = content_version(self.page)

    def links(self) -> dict[tuple[str, ...], FileLink]:
        """Every file (and advertised metadata file) of a project page, by proxy path."""
        if self._links is None:
            table: dict[tuple[str, ...], FileLink] = {}
            for link, meta in simple.file_links(self.page).values():
                path = proxy_path(link.url, dict(link.hashes).get("sha256", ""))
                table[path] = link
                if meta is not None:
                    table[path[:-1] + (path[-1] + ".metadata",)] = meta
            self._links = table
        return self._links

    def to_json(self) -> bytes:
        return chunkedjson.dumps(  # in pieces: a big page's record must not hold the GIL for long
            {
                "format": 1,
                "url": self.url,
                "fetched": self.fetched,
                "etag": self.etag,
                "last_modified": self.last_modified,
                "version": self.version,
                "page": self.page,
            }
        ).encode("utf-8")

    @classmethod
    def from_json(cls, key: PageKey, data: bytes) -> StoredPage:
        record = chunkedjson.loads(data)
        if record.get("format") != 1 or not isinstance(record.get("page"), dict):
            raise ValueError("not a page record of this version")
        if key.kind.parse is None and not record.get("version"):
            raise ValueError("a project list stored before its bodies were kept as files")
        return cls(
            key,
            str(record["url"]),
            float(record["fetched"]),
            record.get("etag"),
            record.get("last_modified"),
            record["page"],
            str(record.get("version") or ""),
        )


def content_version(page: dict[str, Any]) -> str:
    """
    A short digest of a page's content, for a record stored before versions were
    (a new page's version is the digest of the body it came in).
    """
    text = json.dumps(page, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.blake2b(text, digest_size=12).hexdigest()


def gunzip(data: bytes, limit: int) -> bytes:
    """A gzip body's content, refusing more than ``limit`` bytes of it (a gzip bomb)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit)
    except zlib.error as e:
        raise simple.BadPage(f"broken gzip body: {e}") from None
    if inflater.unconsumed_tail:
        raise simple.BadPage(f"page larger than {limit} bytes once decompressed")
    if not inflater.eof:
        raise simple.BadPage("gzip body cut short")
    return out


def parse_page(parse: Parse, body: bytes, encoding: str, content_type: str, url: str) -> tuple[dict[str, Any], str]:
    """(In a disk thread.) An upstream body as a page in the one form, and its content version."""
    if encoding == "gzip":
        body = gunzip(body, MAX_PAGE_BYTES)
    elif encoding not in ("", "identity"):
        raise simple.BadPage(f"unsupported Content-Encoding {encoding!r}")
    page = parse(body, content_type, url)
    return page, hashlib.blake2b(body, digest_size=12).hexdigest()


def project_records(root: Path, project: str) -> list[Path]:
    """A project's page records under one index's ``root`` (renderings: ``record.with_suffix(".r")``)."""
    records = [root / "simple" / f"{project}.json", root / "json" / f"{project}.json"]
    versions = root / "json" / project
    if versions.is_dir():
        records += sorted(versions.glob("*.json"))
    return [path for path in records if path.is_file()]


def remove_project_records(root: Path, project: str) -> int:
    """Delete a project's page records under one upstream's ``root``; how many went."""
    removed = 0
    records = project_records(root, project)
    versions = root / "json" / project
    for path in records:
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
    for rendered in (root / "simple" / f"{project}.r", root / "json" / f"{project}.r", versions):
        shutil.rmtree(rendered, ignore_errors=True)
    return removed


def unlink(path: Path) -> None:
    """Remove ``path`` if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
