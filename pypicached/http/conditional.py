"""
Conditional and range requests, for files and pages alike: validators
(``If-None-Match``, ``If-Modified-Since``, ``If-Range``) and single byte ranges.
"""

from __future__ import annotations

import attrs
from twisted.web.http import stringToDatetime
from twisted.web.server import Request


@attrs.frozen
class ByteRange:
    start: int
    stop: int  # exclusive

    def content_range(self, size: int) -> bytes:
        return b"bytes %d-%d/%d" % (self.start, self.stop - 1, size)


class Unsatisfiable(Exception):
    """A syntactically valid range that selects nothing: 416."""


def parse_range(header: bytes, size: int) -> ByteRange | None:
    """
    One ``bytes=`` range against a file of ``size`` bytes; ``None`` means send the
    whole file (a malformed header, or several ranges, which we do not split).
    """
    unit, _, spec = header.decode("latin-1").strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first:
            length = int(last)
            if length <= 0:
                raise Unsatisfiable()
            return ByteRange(max(0, size - length), size)
        start = int(first)
        stop = int(last) + 1 if last else max(size, start + 1)
    except ValueError:
        return None
    if start < 0 or stop <= start:
        return None
    if start >= size:
        raise Unsatisfiable()
    return ByteRange(start, min(stop, size))


def etag_matches(header: bytes, etag: bytes) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weakly, as RFC 9110 compares there) or is ``*``."""
    tags = [t.strip() for t in header.split(b",")]
    return b"*" in tags or any(t.removeprefix(b"W/") == etag for t in tags)


def _date(header: bytes) -> int | None:
    try:
        return stringToDatetime(header)
    except (ValueError, IndexError):
        return None


def not_modified(request: Request, etag: bytes | None, modified: float | None = None) -> bool:
    """Whether the client's copy is current: 304. ``If-None-Match`` wins over ``If-Modified-Since``."""
    none_match = request.getHeader(b"if-none-match")
    if none_match is not None:
        return etag is not None and etag_matches(none_match, etag)
    since = request.getHeader(b"if-modified-since")
    if since is not None and modified is not None:
        when = _date(since)
        return when is not None and int(modified) <= when
    return False


def if_range_holds(request: Request, etag: bytes | None, modified: float | None) -> bool:
    """Whether a ``Range`` may be honoured: no ``If-Range``, or one naming this version (strongly)."""
    value = request.getHeader(b"if-range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(b'"'):
        return etag is not None and value == etag
    if value.startswith(b"W/"):
        return False
    when = _date(value)
    return when is not None and modified is not None and int(modified) == when
