"""Which representation of a simple-API page a client asked for (PEP 691)."""

from __future__ import annotations

import enum
import functools

JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_V1 = "application/vnd.pypi.simple.v1+html"
TEXT_HTML = "text/html"

#: What the proxy asks its upstream for: JSON first, HTML as a fallback.
UPSTREAM_ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, {TEXT_HTML};q=0.01"


class Format(enum.Enum):
    """A page representation, named by the exact Content-Type it is sent with."""

    JSON = JSON_V1
    HTML_V1 = HTML_V1
    HTML = TEXT_HTML + "; charset=utf-8"

    @property
    def is_json(self) -> bool:
        return self is Format.JSON


_ALIASES = {
    JSON_V1: Format.JSON,
    "application/vnd.pypi.simple.latest+json": Format.JSON,
    HTML_V1: Format.HTML_V1,
    "application/vnd.pypi.simple.latest+html": Format.HTML_V1,
    TEXT_HTML: Format.HTML,
    "*/*": Format.HTML,
    "text/*": Format.HTML,
}
_PREFERENCE = (Format.JSON, Format.HTML_V1, Format.HTML)


@functools.lru_cache(maxsize=256)  # a farm sends a handful of distinct Accept headers
def choose_format(accept: str | None) -> Format:
    """
    The best format for an ``Accept`` header; HTML when it is missing, is ``*/*``
    or names nothing we serve (PEP 691 allows defaulting instead of a 406).
    """
    if not accept:
        return Format.HTML
    best: dict[Format, float] = {}
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        fmt = _ALIASES.get(media.lower())
        if fmt is None:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        best[fmt] = max(best.get(fmt, 0.0), q)
    candidates = [f for f in _PREFERENCE if best.get(f, 0.0) > 0]
    if not candidates:
        return Format.HTML
    return max(candidates, key=lambda f: (best[f], -_PREFERENCE.index(f)))
