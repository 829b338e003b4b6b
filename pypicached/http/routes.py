"""
The proxy's paths as one table. Each row says which methods a path pattern
takes and what answers it; one matcher finds the row, and derives 404, 405 and
``Allow`` from the table, so a new endpoint is one new row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs

from pypicached.base.paths import RequestPath

GET_HEAD = (b"GET", b"HEAD")
POST = (b"POST",)

#: Answers a matched request: (the resource, the request, what matched).
Handler = Callable[[Any, Any, "Found"], Any]


@attrs.frozen
class Route:
    """
    One row: ``pattern`` is literal segments, ``{name}`` for one segment and
    ``{*name}`` (zero or more) or ``{+name}`` (one or more) for the rest, as a tuple.
    ``slash`` False refuses a trailing slash (a file, a JSON document); None takes
    either (a page redirects to its canonical spelling itself).
    """

    methods: tuple[bytes, ...]
    pattern: tuple[str, ...]
    handler: Handler
    #: The request's kind in the access log and the metrics.
    kind: str
    slash: bool | None = None

    def match(self, path: RequestPath) -> dict[str, Any] | None:
        """The pattern's values for ``path``, or None if it does not fit."""
        if self.slash is False and path.trailing_slash and path.segments:
            return None
        values: dict[str, Any] = {}
        segments = path.segments
        for i, part in enumerate(self.pattern):
            if part.startswith(("{*", "{+")):
                rest = segments[i:]
                if part[1] == "+" and not rest:
                    return None
                values[part[2:-1]] = rest
                return values
            if i >= len(segments):
                return None
            if part.startswith("{"):
                values[part[1:-1]] = segments[i]
            elif part != segments[i]:
                return None
        return values if len(segments) == len(self.pattern) else None


@attrs.frozen
class Found:
    """The row that takes a request, the values its pattern gave, and the path as parsed."""

    route: Route
    values: dict[str, Any]
    path: RequestPath


class NoRoute(Exception):
    """No row takes this request: 404, or 405 with the methods the path does take."""

    def __init__(self, allowed: tuple[bytes, ...] = ()) -> None:
        super().__init__("not found" if not allowed else f"only {' and '.join(m.decode() for m in allowed)} here")
        self.allowed = allowed


def route(table: Iterable[Route], method: bytes, path: RequestPath) -> Found:
    """The first row whose pattern fits ``path`` and which takes ``method``."""
    allowed: list[bytes] = []
    for row in table:
        values = row.match(path)
        if values is None:
            continue
        if method in row.methods:
            return Found(row, values, path)
        allowed += [m for m in row.methods if m not in allowed]
    raise NoRoute(tuple(allowed))


def methods_of(table: Iterable[Route]) -> tuple[bytes, ...]:
    """Every method some row takes."""
    seen: list[bytes] = []
    for row in table:
        seen += [m for m in row.methods if m not in seen]
    return tuple(seen)
