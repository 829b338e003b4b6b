"""
The upstream's project list (``/simple/``; the public index's has about 700,000
names, some 50 MB of HTML) turned into the bodies clients get: HTML and JSON,
plain and gzip, as files, in one streaming pass in a disk thread.

No Python object per name is ever held: names flow from the upstream's body on
disk to the output files a few at a time, so memory stays flat however long
the list grows. Its HTML has the head, title and rows of ``simple``'s pages.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import html
import json
import re
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

import attrs

from pypicached.cache.disk import durable_file
from pypicached.cache.rendered import CHUNK, GZIP_MIN, Form, gzip_file, prune_versions
from pypicached.index.names import normalize
from pypicached.index.simple import HTML_TAIL, INDEX_TITLE, BadPage, capped_meta, html_head, index_rows, is_project_entry

#: The forms of the project list: its links are relative, so one depth serves.
PLAIN_FORMS = (Form(json=False, depth=1), Form(json=True, depth=1))

_ANCHOR = re.compile(r"<a\b[^>]*>(.*?)</a\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")
_META = re.compile(r"<meta\b([^>]*)>", re.I)
_ATTRIBUTE = re.compile(r"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")
#: Past this much text without a link, what came before cannot be part of one.
_CARRY = 4 * CHUNK


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
    media = content_type.split(";")[0].strip().lower()
    if media.endswith("+json") or media == "application/json":
        parse = _from_json
    elif media in ("text/html", "application/vnd.pypi.simple.v1+html", ""):
        parse = _from_html
    else:
        raise BadPage(f"unexpected content type {content_type!r}")
    with open(source, "rb") as raw:
        return _publish(parse(_decoded(raw, encoding, limit)), directory, tmp)


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
                for event, value in _from_json(_decoded(raw, "", 1 << 40)):
                    if event == "projects":
                        yield "projects", _new_names(value, seen, offers, remember=number < len(ordered))
        yield "projects-end", None

    listing = _publish(events(), directory, tmp)
    prune_versions(directory, listing.version)
    return listing


def _new_names(entries: list[Any], seen: set[str], offers: Callable[[str], bool], *, remember: bool) -> list[dict[str, str]]:
    fresh = []
    for entry in entries:
        if is_project_entry(entry) and (name := normalize(entry["name"])) not in seen and offers(name):
            if remember:
                seen.add(name)
            fresh.append({"name": entry["name"]})
    return fresh


def _publish(events: Iterator[tuple[str, Any]], directory: Path, tmp: Path) -> ProjectList:
    """Write the forms in a new folder in ``tmp``, then move it to ``directory/<version>`` (unless that version is there)."""
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
    meta: dict[str, Any] = {}
    count = 0
    seen_projects = False
    hasher = hashlib.blake2b(digest_size=12)
    rows_path = staging / "rows"
    json_form, html_form = PLAIN_FORMS[1], PLAIN_FORMS[0]
    with durable_file(staging / json_form.filename, tmp) as out, open(rows_path, "w", encoding="utf-8") as rows:

        def emit(text: str) -> None:
            data = text.encode("utf-8")
            hasher.update(data)
            out.write(data)

        emit("{")
        separator = ""
        for event, value in events:
            if event == "key":
                name, item = value
                if name == "meta":  # sent as the proxy's: its api-version capped like a project page's
                    item = meta = capped_meta(item)
                emit(separator + _dumps(name) + ":" + _dumps(item))
                separator = ","
            elif event == "projects-start":
                emit(separator + '"projects":[')
                separator, seen_projects = ",", True
            elif event == "projects":
                entries = [entry for entry in value if is_project_entry(entry)]
                if entries:
                    emit(("," if count else "") + _dumps(entries)[1:-1])
                    rows.write(("\n" if count else "") + index_rows([entry["name"] for entry in entries]))
                    count += len(entries)
            elif event == "projects-end":
                emit("]")
        emit("}")
    if not seen_projects:
        raise BadPage("project list has no 'projects'")
    with durable_file(staging / html_form.filename, tmp) as out, open(rows_path, "rb") as rows_in:
        out.write(html_head({"meta": meta}, INDEX_TITLE).encode("utf-8"))
        shutil.copyfileobj(rows_in, out, CHUNK)
        out.write(("\n" + HTML_TAIL).encode("utf-8"))
    rows_path.unlink()
    return ProjectList(meta, count, hasher.hexdigest())


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- reading ----------------------------------------------------------------------


def _decoded(raw: BinaryIO, encoding: str, limit: int) -> Iterator[str]:
    """The body as text, chunk by chunk, gunzipped if it came so."""
    if encoding == "gzip":
        source: BinaryIO = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
    elif encoding in ("", "identity"):
        source = raw
    else:
        raise BadPage(f"unsupported Content-Encoding {encoding!r}")
    decoder = codecs.getincrementaldecoder("utf-8")()
    total = 0
    try:
        while True:
            chunk = source.read(CHUNK)
            total += len(chunk)
            if total > limit:
                raise BadPage(f"page larger than {limit} bytes once decompressed")
            if not chunk:
                tail = decoder.decode(b"", final=True)
                if tail:
                    yield tail
                return
            yield decoder.decode(chunk)
    except (OSError, EOFError, zlib.error) as e:
        raise BadPage(f"broken gzip body: {e}") from None
    except UnicodeDecodeError as e:
        raise BadPage(f"page is not UTF-8: {e}") from None


def _from_html(text: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """Events from a PEP 503 list: ``meta``'s api-version if given, then the anchors' texts as names."""
    meta = {"api-version": "1.0"}
    buffer, started = "", False
    for chunk in text:
        buffer += chunk
        if not started:
            for tag in _META.finditer(buffer):
                attributes = {m.group(1).lower(): html.unescape(next(g for g in m.groups()[1:] if g is not None))
                              for m in _ATTRIBUTE.finditer(tag.group(1))}
                if attributes.get("name") == "pypi:repository-version" and attributes.get("content"):
                    meta["api-version"] = attributes["content"]
        names, end = [], 0
        for anchor in _ANCHOR.finditer(buffer):
            names.append(_anchor_text(anchor.group(1)))
            end = anchor.end()
        if names and not started:
            started = True
            yield "key", ("meta", meta)
            yield "projects-start", None
        if names:
            yield "projects", [{"name": name} for name in names if name]
        buffer = buffer[end:]
        if len(buffer) > _CARRY:
            buffer = buffer[-CHUNK:]
    if not started:
        yield "key", ("meta", meta)
        yield "projects-start", None
    yield "projects-end", None


def _anchor_text(inner: str) -> str:
    if "<" in inner or "&" in inner:
        inner = html.unescape(_TAG.sub("", inner))
    return inner.strip()


class _Window:
    """The decoded text as a parser sees it: a window that refills as the parser needs more."""

    _decoder = json.JSONDecoder()

    def __init__(self, text: Iterator[str]) -> None:
        self._text = text
        self.buf = ""
        self.pos = 0
        self.eof = False

    def _more(self) -> None:
        chunk = next(self._text, None)
        if chunk is None:
            self.eof = True
        else:
            self.buf = self.buf[self.pos:] + chunk
            self.pos = 0

    def next_char(self) -> str:
        """The next character that is not white space, consumed ("" at the end)."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf):
                self.pos += 1
                return self.buf[self.pos - 1]
            if self.eof:
                return ""
            self._more()

    def peek(self) -> str:
        char = self.next_char()
        if char:
            self.pos -= 1
        return char

    def value(self) -> Any:
        """The next JSON value, read whole even when it spans chunks."""
        self.peek()
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:
                    self.pos = end
                    return value
            except json.JSONDecodeError as e:
                if self.eof:
                    raise BadPage(f"invalid JSON: {e}") from None
            self._more()

    def items(self) -> Iterator[list[Any]]:
        """The values of the array whose ``[`` was just read, in batches, up to its ``]``."""
        if self.peek() == "]":
            self.next_char()
            return
        batch: list[Any] = []
        while True:
            run = _FLAT_RUN.match(self.buf, self.pos)
            if run is not None:  # many items without nested objects: decoded at C speed in one go
                try:
                    batch.extend(json.loads("[" + run.group()[:-1] + "]"))
                    self.pos = run.end()
                    if len(batch) >= _BATCH:
                        yield batch
                        batch = []
                    continue
                except ValueError:  # a brace or comma inside a string: item by item below
                    pass
            self.pos = _SPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
                separator = _SEPARATOR.match(self.buf, end)
            except json.JSONDecodeError as e:
                if self.eof:
                    raise BadPage(f"invalid JSON: {e}") from None
                separator = None
            if separator is None:  # the value or what follows it is still to come
                if self.eof:
                    raise BadPage("invalid JSON: expected ',' or ']' in 'projects'")
                self._more()
                continue
            batch.append(value)
            self.pos = separator.end()
            if separator.group(1) == "]":
                yield batch
                return
            if len(batch) >= _BATCH:
                yield batch
                batch = []


_SEPARATOR = re.compile(r"[ \t\r\n]*([,\]])")
_SPACE = re.compile(r"[ \t\r\n]*")
#: A run of array items that are objects with no object inside, each followed by a comma.
_FLAT_RUN = re.compile(r"(?:[ \t\r\n]*\{[^{}]*\}[ \t\r\n]*,){1,1000}")
#: How many names are encoded at a time: C-speed encoding, bounded memory.
_BATCH = 5000


def _from_json(text: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """Events from a PEP 691 list: each top-level key in order, ``projects`` a batch at a time."""
    window = _Window(text)
    if window.next_char() != "{":
        raise BadPage("JSON page is not an object")
    if window.peek() == "}":
        window.next_char()
        return
    while True:
        name = window.value()
        if not isinstance(name, str) or window.next_char() != ":":
            raise BadPage("invalid JSON object")
        if name == "projects" and window.peek() == "[":
            window.next_char()
            yield "projects-start", None
            for batch in window.items():
                yield "projects", batch
            yield "projects-end", None
        else:
            yield "key", (name, window.value())
        char = window.next_char()
        if char == "}":
            if window.peek():
                raise BadPage("invalid JSON: data after the object")
            return
        if char != ",":
            raise BadPage("invalid JSON: expected ',' or '}'")
