"""
A page as the policy lets clients see it: the stored page with the files it
holds back left out, made from the cached page at answer time. The stored page
keeps every file, so a policy change or a release coming of age shows at once.

A view is a ``StoredPage`` of its own, whose version is the page's plus a tag
naming what it hides, so it is rendered and validated (ETag) like any page, and
a new view is a new rendering, never a stale one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from packaging.version import Version

from pypicached.base.names import parse_version, version_of
from pypicached.cache.records import StoredPage
from pypicached.policy.judge import FileVerdict, Judge, Verdict
from pypicached.simpleapi import pypijson
from pypicached.simpleapi.simple import project_status

Entry = dict[str, Any]


@attrs.frozen
class View:
    """What the policy does to one page version, until ``until`` (or a new advisory snapshot)."""

    page: StoredPage
    #: The files held back, by filename, and those only flagged (shown, counted).
    hidden: dict[str, Verdict]
    flagged: dict[str, Verdict]
    until: float
    advisories: str
    #: The whole page is refused (a denied project, or a JSON release whose every file is held back).
    refusal: Verdict | None = None
    #: The project's PEP 792 status it was made under.
    status: str = "active"


@attrs.frozen
class Shape:
    """Where a kind of page keeps its file entries, and how it is rebuilt without some of them."""

    entries: Callable[[dict[str, Any]], Iterator[Entry]]
    uploaded: Callable[[Entry], str | None]
    status: Callable[[dict[str, Any]], str]
    without: Callable[[dict[str, Any], str, set[str]], dict[str, Any]]


def view(judge: Judge, stored: StoredPage, now: float, advisories: str, status: str | None = None) -> View:
    """The policy's view of ``stored`` at ``now`` (``status``: the project's, where the page does not say)."""
    project = stored.key.project
    shape = SHAPES[stored.key.kind.name]
    status = status or shape.status(stored.page)
    refusal = judge.project(project)
    if refusal is not None:
        return View(stored, {}, {}, math.inf, advisories, refusal, status)
    hidden: dict[str, Verdict] = {}
    flagged: dict[str, Verdict] = {}
    until = math.inf
    for entry in shape.entries(stored.page):
        filename = entry.get("filename")
        if not isinstance(filename, str):
            continue
        found: FileVerdict = judge.file(project, filename, shape.uploaded(entry), status, now)
        until = min(until, found.until)
        if found.verdict is not None:
            (hidden if found.verdict.hides else flagged)[filename] = found.verdict
    if not hidden:
        return View(stored, hidden, flagged, until, advisories, status=status)
    tag = hashlib.blake2b("\n".join(sorted(hidden)).encode(), digest_size=6).hexdigest()
    page = StoredPage(
        stored.key,
        stored.url,
        stored.fetched,
        stored.etag,
        stored.last_modified,
        shape.without(stored.page, project, set(hidden)),
        f"{stored.version}.{tag}",
    )
    return View(page, hidden, flagged, until, advisories, _all_held(stored, hidden), status)


def _all_held(stored: StoredPage, hidden: dict[str, Verdict]) -> Verdict | None:
    """For one release's JSON document: its first file's verdict, if every file is held back."""
    if not stored.key.version:
        return None
    names = [e.get("filename", "") for e in stored.page.get("urls") or () if isinstance(e, dict)]
    return hidden[names[0]] if names and all(n in hidden for n in names) else None


# --- the simple API's project page ------------------------------------------------------


def _project_entries(page: dict[str, Any]) -> Iterator[Entry]:
    yield from (f for f in page.get("files", ()) if isinstance(f, dict))


def _project_without(page: dict[str, Any], project: str, hidden: set[str]) -> dict[str, Any]:
    """The page without the hidden files; ``versions`` without those whose every file is hidden."""
    out = dict(page)
    out["files"] = [f for f in _project_entries(page) if f.get("filename") not in hidden]
    versions = page.get("versions")
    if isinstance(versions, list):
        shown: set[Version] = set()
        held: set[Version] = set()
        for entry in _project_entries(page):
            version = version_of(project, str(entry.get("filename")))
            if version is not None:
                (held if entry.get("filename") in hidden else shown).add(version)
        gone = held - shown
        out["versions"] = [v for v in versions if parse_version(v) not in gone]
    return out


# --- the JSON API document ---------------------------------------------------------------


def _json_uploaded(entry: Entry) -> str | None:
    return entry.get("upload_time_iso_8601") or entry.get("upload-time")


def _json_without(page: dict[str, Any], project: str, hidden: set[str]) -> dict[str, Any]:
    """The document without the hidden files; a release whose every file is hidden is left out."""
    out = dict(page)
    if isinstance(page.get("urls"), list):
        out["urls"] = [f for f in page["urls"] if not (isinstance(f, dict) and f.get("filename") in hidden)]
    releases = page.get("releases")
    if isinstance(releases, dict):
        kept = {}
        for version, files in releases.items():
            if not isinstance(files, list):
                kept[version] = files
                continue
            left = [f for f in files if not (isinstance(f, dict) and f.get("filename") in hidden)]
            if left or not files:
                kept[version] = left
        out["releases"] = kept
        _newest_shown(out, releases)
    return out


def _newest_shown(out: dict[str, Any], releases: dict[str, Any]) -> None:
    """
    If the release ``info`` describes is held back whole, point ``info.version`` and
    ``urls`` at the newest one shown (a final release if there is one), so that a tool
    taking ``info.version`` as the latest never pins what it would be refused.
    """
    info = out.get("info")
    if not isinstance(info, dict):
        return
    latest = info.get("version")
    if not isinstance(latest, str) or latest not in releases or latest in out["releases"]:
        return
    shown = [(v, text) for text in out["releases"] if out["releases"][text] and (v := parse_version(text)) is not None]
    finals = [item for item in shown if not item[0].is_prerelease] or shown
    if finals:
        newest = max(finals)[1]
        out["info"] = {**info, "version": newest}
        out["urls"] = out["releases"][newest]


SHAPES = {
    "project": Shape(
        _project_entries, lambda e: e.get("upload-time"), lambda page: project_status(page)[0], _project_without
    ),
    "json": Shape(pypijson.file_entries, _json_uploaded, lambda page: "active", _json_without),
}
