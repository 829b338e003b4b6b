"""
Reading the upstream's project list (``/simple/``; the public index's has about
700,000 names, some 50 MB of HTML) as a stream of parse events, a few names at a
time, from a file: no Python object per name is ever held. ``cache.projectlist``
writes the events out as the bodies clients get.
"""

from __future__ import annotations

import codecs
import gzip
import html
import json
import re
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

from pypicached.simpleapi.simple import BadPage

#: How much of the body is read at a time.
CHUNK = 1 << 20
_ANCHOR = re.compile(r"<a\b[^>]*>(.*?)</a\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")
_META = re.compile(r"<meta\b([^>]*)>", re.I)
_ATTRIBUTE = re.compile(r"""([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))""")
#: Past this much text without a link, what came before cannot be part of one.
_CARRY = 4 * CHUNK


def events_of(raw: BinaryIO, content_type: str, encoding: str, limit: int) -> Iterator[tuple[str, Any]]:
    """
    The parse events of an upstream body: ``("key", (name, value))`` for a top-level
    key, ``projects-start``, ``("projects", entries)`` a few at a time, ``projects-end``.
    ``encoding`` is its Content-Encoding; more than ``limit`` bytes once decoded is
    refused (a gzip bomb).
    """
    media = content_type.split(";")[0].strip().lower()
    if media.endswith("+json") or media == "application/json":
        return _from_json(_decoded(raw, encoding, limit))
    if media in ("text/html", "application/vnd.pypi.simple.v1+html", ""):
        return _from_html(_decoded(raw, encoding, limit))
    raise BadPage(f"unexpected content type {content_type!r}")


def json_events(raw: BinaryIO) -> Iterator[tuple[str, Any]]:
    """The parse events of a JSON list this proxy wrote itself (no size limit)."""
    return _from_json(_decoded(raw, "", 1 << 40))


def _decoded(raw: BinaryIO, encoding: str, limit: int) -> Iterator[str]:
    """The body as text, chunk by chunk, gunzipped if it came so."""
    if encoding == "gzip":
        source: BinaryIO | gzip.GzipFile = gzip.GzipFile(fileobj=raw, mode="rb")
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
                attributes = {
                    m.group(1).lower(): html.unescape(next(g for g in m.groups()[1:] if g is not None))
                    for m in _ATTRIBUTE.finditer(tag.group(1))
                }
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
            self.buf = self.buf[self.pos :] + chunk
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
            self.pos = _SPACE.match(self.buf, self.pos).end()  # type: ignore[union-attr]  # \s* always matches
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
