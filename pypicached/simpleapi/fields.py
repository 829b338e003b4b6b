"""
A simple-API page in the one form (PEP 691's JSON, as a dict), and the names its
fields take in HTML: what both reading an HTML page and writing one need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from pypicached.simpleapi.links import is_plain_url

__all__ = [
    "ATTRIBUTE_FOR_KEY",
    "KEY_FOR_ATTRIBUTE",
    "REASON_TAG",
    "STATUS_TAG",
    "BadPage",
    "HrefFor",
    "Page",
    "filename_of",
]

#: PEP 792's ``<meta>`` tags in HTML, for the ``project-status`` key in JSON.
STATUS_TAG, REASON_TAG = "pypi:project-status", "pypi:project-status-reason"


class BadPage(ValueError):
    """The upstream sent something that is not a simple-API page."""


Page = dict[str, Any]
#: Maps an absolute upstream file URL, its sha256 ("" if unknown) and the fragment to
#: send to the href clients get.
HrefFor = Callable[[str, str, str], str]

ATTRIBUTE_FOR_KEY = {
    "requires-python": "data-requires-python",
    "yanked": "data-yanked",
    "gpg-sig": "data-gpg-sig",
    "core-metadata": "data-core-metadata",
    "provenance": "data-provenance",
}
KEY_FOR_ATTRIBUTE = {a: k for k, a in ATTRIBUTE_FOR_KEY.items()}
KEY_FOR_ATTRIBUTE["data-dist-info-metadata"] = "core-metadata"


def filename_of(url: str) -> str:
    """The file name a URL ends in, unquoted."""
    if is_plain_url(url):  # nearly always: no urllib needed
        name = url.partition("#")[0].rsplit("/", 1)[-1]
        return unquote(name) if "%" in name else name
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])
