"""The index's per-project JSON API (``/pypi/<project>/json``), with file URLs rewritten."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pypicached.simpleapi import chunkedjson
from pypicached.simpleapi.simple import BadPage, HrefFor, Page, parse_json_object


def parse(body: bytes) -> Page:
    """The upstream's JSON document, checked only as far as the proxy relies on it."""
    page = parse_json_object(body)
    if not isinstance(page.get("info"), dict):
        raise BadPage("JSON API document has no 'info'")
    return page


def file_entries(page: Page) -> Iterator[dict[str, Any]]:
    """Every file entry of the document: the latest release's ``urls``, then each release's files."""
    for entry in page.get("urls") or ():
        if isinstance(entry, dict):
            yield entry
    releases = page.get("releases")
    if isinstance(releases, dict):
        for files in releases.values():
            for entry in files if isinstance(files, list) else ():
                if isinstance(entry, dict):
                    yield entry


def render(page: Page, href_for: HrefFor) -> bytes:
    """The document with every file ``url`` pointing back at the proxy."""
    out = chunkedjson.loads(chunkedjson.dumps(page))  # a deep copy, in pieces
    for entry in file_entries(out):
        if isinstance(entry.get("url"), str):
            digests = entry.get("digests")
            sha256 = digests.get("sha256", "") if isinstance(digests, dict) else ""
            entry["url"] = href_for(entry["url"], str(sha256), "")
    return chunkedjson.dumps(out, ensure_ascii=False).encode("utf-8")
