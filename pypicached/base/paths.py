"""Request paths, checked once at the door, and where cached things live on disk."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote_to_bytes

import attrs

MAX_PATH = 2048


class BadPath(ValueError):
    """The request path is not one this proxy could ever serve."""


@attrs.frozen
class RequestPath:
    """
    A request path split into decoded segments.

    ``trailing_slash`` is kept apart because it is meaningful to the simple API.
    Every segment is a plain name: never empty, ``.``, ``..``, and never holding
    a slash, backslash or control character once decoded, so a segment can be
    joined under a directory without escaping it.
    """

    segments: tuple[str, ...]
    trailing_slash: bool

    @classmethod
    def parse(cls, raw: bytes) -> RequestPath:
        if len(raw) > MAX_PATH:
            raise BadPath("path too long")
        path = raw.split(b"?", 1)[0]
        if not path.startswith(b"/"):
            raise BadPath("path must start with /")
        pieces = path[1:].split(b"/")
        trailing = len(pieces) > 1 and pieces[-1] == b""
        if trailing or pieces == [b""]:
            pieces = pieces[:-1]
        segments = []
        for piece in pieces:
            try:
                segment = (unquote_to_bytes(piece) if b"%" in piece else piece).decode("utf-8")
            except UnicodeDecodeError:
                raise BadPath("path is not UTF-8") from None
            if len(piece) > 255 * 3 or len(segment.encode("utf-8")) > 255:
                raise BadPath("path segment longer than a file name may be")
            if not is_plain_segment(segment):
                raise BadPath(f"illegal path segment {segment!r}")
            segments.append(segment)
        return cls(tuple(segments), trailing or not segments)

    def text(self) -> str:
        """The normalized path, for logs and for joining under the cache root."""
        return "/" + "/".join(self.segments) + ("/" if self.trailing_slash and self.segments else "")


def is_plain_segment(segment: str) -> bool:
    """A name that can stand for one directory entry: never empty, ``.``, ``..``, a slash or a control character."""
    return segment not in ("", ".", "..") and _NOT_PLAIN.search(segment) is None


#: What a plain segment never holds (one regex: this runs for every file link of every page rendered).
_NOT_PLAIN = re.compile(r"[/\\\x00-\x1f\x7f]")


def under(root: Path, segments: tuple[str, ...]) -> Path:
    """
    ``root`` joined with plain segments, which cannot climb out of it; refuses any
    other. A lexical check: resolving the path would cost a system call per
    component on every request, and nothing but the daemon writes under ``root``.
    """
    if not all(is_plain_segment(s) for s in segments):
        raise BadPath("path escapes the cache")
    return root.joinpath(*segments)
