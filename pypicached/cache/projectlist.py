"""
The upstream's project list (``/simple/``; the public index's has about 700,000
names, some 50 MB of HTML) written as the bodies clients get: HTML and JSON,
plain and gzip, as files, in one streaming pass in a disk thread.

No Python object per name is ever held: names flow from the parser
(``simpleapi.projectlist``) to the output files a few at a time, so memory stays
flat however long the list grows. Its HTML has the head, title and rows of
``simple``'s pages.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import attrs

from pypicached.base.disk import durable_file
from pypicached.base.names import normalize
from pypicached.cache.forms import Form
from pypicached.cache.rendered import CHUNK, GZIP_MIN, gzip_file, prune_versions
from pypicached.simpleapi.projectlist import events_of, json_events
from pypicached.simpleapi.simple import (
    HTML_TAIL,
    INDEX_TITLE,
    BadPage,
    capped_meta,
    html_head,
    index_rows,
    is_project_entry,
)

#: The forms of the project list: its links are relative, so one depth serves.
PLAIN_FORMS = (Form(json=False, depth=1), Form(json=True, depth=1))


@attrs.frozen
class ProjectList:
    """What the proxy keeps in memory of the list: its ``meta``, how many names, and its version."""

    meta: dict[str, Any]
    count: int
    version: str


def convert(source: Path, *, content_type: str, encoding: str, directory: Path, tmp: Path, limit: int) -> ProjectList:
    """
    (In a disk thread.) Read the upstream body in ``source`` and write every form
    under ``directory/<version>/``. ``encoding`` is its Content-Encoding; more than
    ``limit`` bytes once decoded is refused (a gzip bomb).
    """
    with open(source, "rb") as raw:
        return _publish(events_of(raw, content_type, encoding, limit), directory, tmp)


def union(
    sources: list[tuple[Path, Callable[[str], bool]]], meta: dict[str, Any], *, directory: Path, tmp: Path
) -> ProjectList:
    """
    (In a disk thread.) One list of the names in several (the JSON renderings in
    ``sources``, each with which of its names it may offer), each name once, under
    ``directory/<version>/``, the other versions there removed. Only the names of all
    lists but the longest are held (to leave out their repeats from it), so memory
    grows with the shorter lists alone.
    """
    ordered = sorted(sources, key=lambda source: source[0].stat().st_size)
    seen: set[str] = set()

    def events() -> Iterator[tuple[str, Any]]:
        yield "key", ("meta", meta)
        yield "projects-start", None
        for number, (source, offers) in enumerate(ordered, 1):
            with open(source, "rb") as raw:
                for event, value in json_events(raw):
                    if event == "projects":
                        yield "projects", _new_names(value, seen, offers, remember=number < len(ordered))
        yield "projects-end", None

    listing = _publish(events(), directory, tmp)
    prune_versions(directory, listing.version)
    return listing


def _new_names(
    entries: list[Any], seen: set[str], offers: Callable[[str], bool], *, remember: bool
) -> list[dict[str, str]]:
    fresh = []
    for entry in entries:
        if is_project_entry(entry) and (name := normalize(entry["name"])) not in seen and offers(name):
            if remember:
                seen.add(name)
            fresh.append({"name": entry["name"]})
    return fresh


def _publish(events: Iterator[tuple[str, Any]], directory: Path, tmp: Path) -> ProjectList:
    """
    Write the forms in a new folder in ``tmp``, then move it to ``directory/<version>``
    (unless that version is there).
    """
    staging = Path(tempfile.mkdtemp(dir=tmp, prefix="list-"))
    try:
        listing = _write(events, staging, tmp)
        final = directory / listing.version
        if not final.exists():
            for form in PLAIN_FORMS:
                plain = staging / form.filename
                if plain.stat().st_size >= GZIP_MIN:
                    gzip_file(plain, staging / attrs.evolve(form, gzip=True).filename, tmp)
            directory.mkdir(parents=True, exist_ok=True)
            staging.rename(final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return listing


def _write(events: Iterator[tuple[str, Any]], staging: Path, tmp: Path) -> ProjectList:
    """Stream parse events into the JSON body and the HTML rows, then put the HTML together."""
    rows_path = staging / "rows"
    json_form, html_form = PLAIN_FORMS[1], PLAIN_FORMS[0]
    with durable_file(staging / json_form.filename, tmp) as out, open(rows_path, "w", encoding="utf-8") as rows:
        writer = _JSONWriter(out, rows)
        for event, value in events:
            writer.handle(event, value)
        writer.emit("}")
    if not writer.seen_projects:
        raise BadPage("project list has no 'projects'")
    with durable_file(staging / html_form.filename, tmp) as out, open(rows_path, "rb") as rows_in:
        out.write(html_head({"meta": writer.meta}, INDEX_TITLE).encode("utf-8"))
        shutil.copyfileobj(rows_in, out, CHUNK)
        out.write(("\n" + HTML_TAIL).encode("utf-8"))
    rows_path.unlink()
    return ProjectList(writer.meta, writer.count, writer.hasher.hexdigest())


class _JSONWriter:
    """Writes the JSON body as the events come (hashing it for the version), and the HTML rows beside it."""

    def __init__(self, out: BinaryIO, rows: TextIO) -> None:
        self._out = out
        self._rows = rows
        self.meta: dict[str, Any] = {}
        self.count = 0
        self.seen_projects = False
        self.hasher = hashlib.blake2b(digest_size=12)
        self._separator = ""
        self.emit("{")

    def emit(self, text: str) -> None:
        data = text.encode("utf-8")
        self.hasher.update(data)
        self._out.write(data)

    def handle(self, event: str, value: Any) -> None:
        handlers: dict[str, Callable[[Any], None]] = {
            "key": self._key,
            "projects-start": self._start,
            "projects": self._names,
            "projects-end": self._end,
        }
        handlers[event](value)

    def _key(self, value: tuple[str, Any]) -> None:
        name, item = value
        if name == "meta":  # sent as the proxy's: its api-version capped like a project page's
            item = self.meta = capped_meta(item)
        self.emit(self._separator + _dumps(name) + ":" + _dumps(item))
        self._separator = ","

    def _start(self, value: None) -> None:
        self.emit(self._separator + '"projects":[')
        self._separator, self.seen_projects = ",", True

    def _names(self, value: list[Any]) -> None:
        entries = [entry for entry in value if is_project_entry(entry)]
        if entries:
            self.emit(("," if self.count else "") + _dumps(entries)[1:-1])
            self._rows.write(("\n" if self.count else "") + index_rows([entry["name"] for entry in entries]))
            self.count += len(entries)

    def _end(self, value: None) -> None:
        self.emit("]")


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
