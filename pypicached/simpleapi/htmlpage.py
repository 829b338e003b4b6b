"""
Reading a PEP 503 HTML project page into the one form: each anchor's ``data-*``
attributes become the JSON keys PEP 691 names (unknown ones carried as they are),
the ``#sha256=`` fragment becomes ``hashes``, and the ``<meta>`` tags the page-wide
fields.
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from pypicached.simpleapi import htmlscan
from pypicached.simpleapi.fields import KEY_FOR_ATTRIBUTE, REASON_TAG, STATUS_TAG, BadPage, Page, filename_of
from pypicached.simpleapi.links import split_url

__all__ = ["parse_html"]


class _AnchorParser(HTMLParser):
    """The anchors of a page (attributes and text) and its ``<meta>`` tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.anchors: list[tuple[dict[str, str | None], str]] = []
        #: The ``<meta>`` tags' contents by name (the page-wide fields).
        self.metas: dict[str, str] = {}
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open, self._text = dict(attrs), []
        elif tag == "meta":
            found = dict(attrs)
            name, content = found.get("name"), found.get("content")
            if name and content:
                self.metas.setdefault(name, content)

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.anchors.append((self._open, "".join(self._text).strip()))
            self._open = None


def parse_html(body: bytes, scanner: bool = True) -> Page:
    """
    A PEP 503 project page in the one form, file URLs as written (``parse`` makes them
    absolute): read by the strict scanner, or by the general parser if it refuses the page.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadPage(f"HTML is not UTF-8: {e}") from None
    found = htmlscan.scan(text) if scanner else None
    anchors, metas = found if found is not None else read_generally(text)
    meta = {"api-version": metas.get("pypi:repository-version", "1.0")}
    page: Page = {"meta": meta, "files": [_file_from_anchor(a) for a in anchors if a.get("href")]}
    marker = {key: metas[tag] for key, tag in (("status", STATUS_TAG), ("reason", REASON_TAG)) if tag in metas}
    if marker:
        page["project-status"] = marker
    return page


def read_generally(text: str) -> htmlscan.Anchors:
    """The anchors and ``<meta>`` tags of any page, by the general HTML parser."""
    parser = _AnchorParser()
    parser.feed(text)
    parser.close()
    return [a for a, _ in parser.anchors], parser.metas


def _file_from_anchor(attributes: dict[str, str | None]) -> dict[str, Any]:
    url, hashes = split_url(attributes["href"] or "")
    entry: dict[str, Any] = {"filename": filename_of(url), "url": url, "hashes": hashes}
    for name, value in attributes.items():
        if name == "href" or not name.startswith("data-"):
            continue
        key = KEY_FOR_ATTRIBUTE.get(name, name)
        if key == "yanked":
            entry[key] = value or True
        elif key == "core-metadata" or key == "gpg-sig":
            entry[key] = _metadata_value(value) if key == "core-metadata" else value == "true"
        else:
            entry[key] = value or ""
    return entry


def _metadata_value(value: str | None) -> bool | dict[str, str]:
    if not value or value.lower() == "true":
        return True
    if value.lower() == "false":
        return False
    name, sep, digest = value.partition("=")
    return {name: digest} if sep else True
