"""
The status page's picture of the last days, for people who would rather look
than read: per day, a bar of the bytes fetched from the upstream with the bytes
served from the cache stacked on it, and below, the day's hit ratio.

A pure function from the ``days`` rows of ``/stats`` to inline SVG: no script,
no font, no link, so it draws on a LAN without internet. Every day's numbers
are on its ``<g>`` as data attributes, the very ones ``/stats`` reports, and in
``<title>`` text that browsers show on hover and screen readers read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

import attrs

from pypicached.ops.summary import human_bytes, percent

WIDTH, LEFT, RIGHT = 760, 64, 8
#: Where each panel starts and how tall it is.
BYTES_TOP, BYTES_HEIGHT = 28, 150
RATIO_TOP, RATIO_HEIGHT = 206, 60
HEIGHT = RATIO_TOP + RATIO_HEIGHT + 34
FETCHED, CACHED, RATIO, GRID, INK = "#8796b0", "#2e9d6b", "#d08a1e", "#e4e4e4", "#555"
UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
#: A date under every this many bars, counted back from today.
LABEL_EVERY = 7
Row = Mapping[str, Any]


@attrs.frozen
class ByteScale:
    """The bytes axis: its top, the gap between gridlines, in a unit a person reads."""

    top: float
    step: float
    unit: str
    factor: int

    @classmethod
    def fitting(cls, largest: float) -> ByteScale:
        """Round gridlines (1, 2 or 5 times a power of ten, in the largest value's unit) above ``largest``."""
        power = 0
        while power < len(UNITS) - 1 and largest >= 1024 ** (power + 1):
            power += 1
        factor = 1024**power
        value = max(largest / factor, 1.0)
        step = _round_up(value / 4)
        if power == 0:
            step = max(step, 1.0)  # no fractions of a byte
        return cls(math.ceil(value / step - 1e-9) * step * factor, step * factor, UNITS[power], factor)

    def label(self, nbytes: float) -> str:
        return f"{nbytes / self.factor:g} {self.unit}"

    def ticks(self) -> list[float]:
        return [i * self.step for i in range(round(self.top / self.step) + 1)]


def _round_up(x: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least ``x``."""
    base = 10 ** math.floor(math.log10(x))
    return next(m * base for m in (1, 2, 5, 10) if m * base >= x * (1 - 1e-9))


def stacked(row: Row) -> int:
    """A day's bar height in bytes: fetched, plus what the cache served beyond it."""
    return int(row["fetched_bytes"]) + int(row["saved_bytes"])


def chart(days: Sequence[Row]) -> str:
    """The SVG for ``days`` (``/stats`` rows, oldest first), for inline use in an HTML page."""
    scale = ByteScale.fitting(max((stacked(d) for d in days), default=0))
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(days))
    first, last = (days[0]["day"], days[-1]["day"]) if days else ("-", "-")
    parts = [
        f'<svg id="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img" '
        f'aria-labelledby="chart-title chart-desc" font-family="sans-serif" font-size="11" fill="{INK}">',
        '<title id="chart-title">Bytes fetched and served from the cache, and the hit ratio, per UTC day</title>',
        f'<desc id="chart-desc">{len(days)} days from {escape(first)} to {escape(last)}; '
        "hover over a bar for its figures.</desc>",
        _legend(),
        _byte_axis(scale),
        _ratio_axis(),
        *(_day(i, row, slot, scale) for i, row in enumerate(days)),
        _day_labels(days, slot),
        "</svg>",
    ]
    if not days:
        parts.insert(
            -1, f'<text x="{WIDTH / 2}" y="{BYTES_TOP + BYTES_HEIGHT / 2}" text-anchor="middle">no figures yet</text>'
        )
    return "\n".join(parts)


def _legend() -> str:
    keys = (("fetched from upstream", FETCHED), ("served from the cache", CACHED), ("hit ratio", RATIO))
    return "".join(
        f'<rect x="{LEFT + i * 170}" y="6" width="10" height="10" fill="{colour}"/>'
        f'<text x="{LEFT + i * 170 + 14}" y="15">{escape(name)}</text>'
        for i, (name, colour) in enumerate(keys)
    )


def _gridline(y: float, label: str) -> str:
    return (
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.2f}" y2="{y:.2f}" stroke="{GRID}"/>'
        f'<text x="{LEFT - 4}" y="{y + 4:.2f}" text-anchor="end">{escape(label)}</text>'
    )


def _byte_axis(scale: ByteScale) -> str:
    bottom = BYTES_TOP + BYTES_HEIGHT
    return "".join(_gridline(bottom - tick / scale.top * BYTES_HEIGHT, scale.label(tick)) for tick in scale.ticks())


def _ratio_axis() -> str:
    bottom = RATIO_TOP + RATIO_HEIGHT
    return "".join(_gridline(bottom - share * RATIO_HEIGHT, f"{share * 100:g} %") for share in (0, 0.5, 1))


def _bar(kind: str, x: float, width: float, bottom: float, height: float, colour: str, title: str) -> str:
    return (
        f'<rect class="{kind}" x="{x:.2f}" y="{bottom - height:.2f}" width="{width:.2f}" height="{height:.2f}" '
        f'fill="{colour}"><title>{escape(title)}</title></rect>'
    )


def _day(index: int, row: Row, slot: float, scale: ByteScale) -> str:
    """One day: a transparent column to hover even on an empty day, its stacked bytes, its hit ratio."""
    day, ratio = str(row["day"]), row["hit_ratio"]
    fetched, saved = int(row["fetched_bytes"]), int(row["saved_bytes"])
    x, width = LEFT + index * slot + slot * 0.15, slot * 0.7
    summary = (
        f"{day}: {human_bytes(row['served_bytes'])} served, {human_bytes(saved)} of it from the cache; "
        f"{human_bytes(fetched)} fetched from upstream; hit ratio {percent(ratio)}"
    )
    px = BYTES_HEIGHT / scale.top
    bottom = BYTES_TOP + BYTES_HEIGHT
    hits = f"{day}: hit ratio {percent(ratio)} ({row['hits']} hits, {row['misses']} misses)"
    bars = [
        ("column", LEFT + index * slot, slot, RATIO_TOP + RATIO_HEIGHT, RATIO_TOP + RATIO_HEIGHT - BYTES_TOP,
         "transparent", summary),
        ("fetched", x, width, bottom, fetched * px, FETCHED, f"{day}: {human_bytes(fetched)} fetched from upstream"),
        ("cached", x, width, bottom - fetched * px, saved * px, CACHED,
         f"{day}: {human_bytes(saved)} served from the cache"),
        ("ratio", x, width, RATIO_TOP + RATIO_HEIGHT, (ratio or 0) * RATIO_HEIGHT, RATIO, hits),
    ]  # fmt: skip
    return f'<g class="day" {_day_data(row)}>' + "".join(_bar(*bar) for bar in bars) + "</g>"


def _day_data(row: Row) -> str:
    """A day's ``/stats`` numbers as data attributes (the browser test reads them back)."""
    ratio = row["hit_ratio"]
    data = {
        "day": str(row["day"]),
        "served": row["served_bytes"],
        "fetched": int(row["fetched_bytes"]),
        "saved": int(row["saved_bytes"]),
        "hits": row["hits"],
        "misses": row["misses"],
        "hit-ratio": "" if ratio is None else repr(float(ratio)),
    }
    return " ".join(f'data-{name}="{escape(str(value))}"' for name, value in data.items())


def _day_labels(days: Sequence[Row], slot: float) -> str:
    """Every seventh date, ending on today's, and what the axis counts."""
    y = RATIO_TOP + RATIO_HEIGHT + 14
    labels = "".join(
        f'<text x="{LEFT + (i + 0.5) * slot:.2f}" y="{y}" text-anchor="middle">{escape(str(row["day"])[5:])}</text>'
        for i, row in enumerate(days)
        if (len(days) - 1 - i) % LABEL_EVERY == 0
    )
    return labels + f'<text x="{WIDTH - RIGHT}" y="{y + 16}" text-anchor="end">UTC day (month-day)</text>'
