"""
The status page's chart as the tests read it: each day's group, its data
attributes and its bars, whether from ``chart()`` or from a browser's DOM.
"""

from __future__ import annotations

from html.parser import HTMLParser


class Drawing(HTMLParser):
    """The chart's day groups, each with its bars by class: attributes and the bar's title."""

    def __init__(self, svg: str) -> None:
        super().__init__()
        self.days: list[dict] = []
        self.svgs = 0
        self._rect: dict | None = None
        self._in_title = False
        self.feed(svg)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        self.svgs += tag == "svg"
        if tag == "g" and a.get("class") == "day":
            self.days.append({"data": {k[5:]: v for k, v in a.items() if k.startswith("data-")}, "bars": {}})
        elif tag == "rect" and self.days and a.get("class"):
            self._rect = self.days[-1]["bars"][a["class"]] = {**a, "title": ""}
        self._in_title = tag == "title"

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False
        if tag == "rect":
            self._rect = None

    def handle_data(self, data: str) -> None:
        if self._in_title and self._rect is not None:
            self._rect["title"] += data
