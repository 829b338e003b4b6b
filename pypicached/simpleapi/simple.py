"""
The simple repository API (PEP 503 HTML, PEP 691 JSON): read either from
upstream into one form, and write that form back out in whichever the client
asked for, with file links pointing at the proxy.

The one form is PEP 691's JSON with absolute upstream URLs. An HTML page is
translated into it attribute by attribute (``data-requires-python`` to
``requires-python``, ``data-yanked`` to ``yanked``, ``#sha256=`` to ``hashes`` and
so on); unknown JSON keys and unknown ``data-*`` attributes are carried along,
so nothing the upstream said is lost in either direction. Project-wide fields
travel as ``<meta>`` tags in HTML and keys in JSON (PEP 792's ``project-status``);
file-level fields HTML has no attribute for (PEP 700's ``size``, ``upload-time``)
exist in JSON only.

Reading HTML is ``htmlpage``'s; the form and the HTML names of its fields are ``fields``'.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urljoin

from pypicached.base.names import normalize
from pypicached.simpleapi import chunkedjson
from pypicached.simpleapi.fields import ATTRIBUTE_FOR_KEY, REASON_TAG, STATUS_TAG, BadPage, HrefFor, Page, filename_of
from pypicached.simpleapi.htmlpage import parse_html
from pypicached.simpleapi.links import FileLink, hashes_of, join, origin_of, split_url
from pypicached.simpleapi.negotiation import Format

__all__ = [
    "API_VERSION",
    "HTML_TAIL",
    "INDEX_TITLE",
    "BadPage",
    "HrefFor",
    "Page",
    "capped_api_version",
    "capped_meta",
    "core_metadata",
    "file_links",
    "html_head",
    "index_rows",
    "is_project_entry",
    "parse",
    "parse_json_object",
    "project_status",
    "render_project",
]


#: The newest simple-API version this proxy writes faithfully (PEP 792's 1.4). Pages
#: claim the lower of this and the upstream's: claiming more would promise fields the
#: proxy does not know how to carry (and a higher major makes installers refuse the page,
#: PEP 629); claiming more than the upstream would promise fields its page lacks.
API_VERSION = "1.4"
_VERSION = re.compile(r"\s*(\d+)\.(\d+)\s*")
_CORE_METADATA_KEYS = ("core-metadata", "data-dist-info-metadata", "dist-info-metadata")


# --- reading -------------------------------------------------------------------------


def parse(body: bytes, content_type: str, page_url: str) -> Page:
    """A project page in the one form (the project list is ``projectlist``'s, streamed)."""
    media = content_type.split(";")[0].strip().lower()
    if media.endswith("+json") or media == "application/json":
        page = parse_json_object(body)
    elif media in ("text/html", "application/vnd.pypi.simple.v1+html", ""):
        page = parse_html(body)
    else:
        raise BadPage(f"unexpected content type {content_type!r}")
    files = page.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        raise BadPage("project page has no 'files' list")
    origin = origin_of(page_url)
    for entry in files:
        url = entry.get("url")
        if not isinstance(url, str):
            raise BadPage("a file entry has no 'url'")
        entry["url"] = join(page_url, origin, url)
        if not isinstance(entry.get("filename"), str):
            entry["filename"] = filename_of(entry["url"])
        if isinstance(entry.get("provenance"), str) and entry["provenance"]:  # PEP 740: kept absolute, like urls
            entry["provenance"] = urljoin(page_url, entry["provenance"])
    return page


def parse_json_object(body: bytes) -> Page:
    """A JSON body that must be an object, or ``BadPage`` saying why not."""
    try:
        page = chunkedjson.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadPage(f"invalid JSON: {e}") from None
    if not isinstance(page, dict):
        raise BadPage("JSON page is not an object")
    return page


# --- links ---------------------------------------------------------------------------


def file_links(page: Page) -> dict[str, tuple[FileLink, FileLink | None]]:
    """Each file of a project page by filename: the file and, if advertised, its metadata."""
    found: dict[str, tuple[FileLink, FileLink | None]] = {}
    for entry in page.get("files", ()):
        bare, fragment_hash = split_url(entry["url"])
        hashes = hashes_of(entry.get("hashes")) or hashes_of(fragment_hash)
        link = FileLink(url=bare, filename=entry["filename"], hashes=hashes)
        metadata = core_metadata(entry)
        meta_link = None
        if metadata is not False:
            meta_link = FileLink(
                url=bare + ".metadata",
                filename=entry["filename"] + ".metadata",
                hashes=hashes_of(metadata),
            )
        found[link.filename] = (link, meta_link)
    return found


def core_metadata(entry: dict[str, Any]) -> bool | dict[str, str]:
    """What a file entry says of its PEP 658 metadata, under any of its three names."""
    for key in _CORE_METADATA_KEYS:
        value = entry.get(key)
        if value is not None and value is not False:
            return value if isinstance(value, dict) else True
    return False


# --- page-wide fields ----------------------------------------------------------------


def capped_api_version(upstream: Any) -> str:
    """The api-version a page is sent with: the upstream's, at most ``API_VERSION``; "1.0" if unreadable."""
    match = _VERSION.fullmatch(upstream) if isinstance(upstream, str) else None
    if match is None:
        return "1.0"
    theirs = (int(match[1]), int(match[2]))
    ours = tuple(int(part) for part in API_VERSION.split("."))
    return f"{theirs[0]}.{theirs[1]}" if theirs < ours else API_VERSION


def capped_meta(meta: Any) -> dict[str, Any]:
    """A page's ``meta`` as sent: every key kept, ``api-version`` capped (in its place)."""
    kept = dict(meta) if isinstance(meta, dict) else {}
    return {**kept, "api-version": capped_api_version(kept.get("api-version"))}


def project_status(page: Page) -> tuple[str, str]:
    """A project's PEP 792 status (lower case) and reason, for policy; ("active", "") if none is given."""
    status, reason = _marker(page)
    status = status.strip().lower() if isinstance(status, str) else ""
    return status or "active", reason if isinstance(reason, str) else ""


def _marker(page: Page) -> tuple[Any, Any]:
    """
    The upstream's PEP 792 status and reason, as given (None where absent). ``state``
    is read too: the PEP's prose names it where its example (and the index) use ``status``.
    """
    marker = page.get("project-status")
    if not isinstance(marker, dict):
        return None, None
    return marker.get("status", marker.get("state")), marker.get("reason")


def _status_tags(page: Page) -> list[tuple[str, str]]:
    """PEP 792's ``<meta>`` tags, for exactly what the upstream said (nothing when it said nothing)."""
    return [
        (tag, value) for tag, value in zip((STATUS_TAG, REASON_TAG), _marker(page)) if isinstance(value, str) and value
    ]


# --- writing -------------------------------------------------------------------------


def render_project(page: Page, name: str, fmt: Format, href_for: HrefFor) -> bytes:
    """A project page for a client, every file link replaced by ``href_for``."""
    files = []
    for entry in page.get("files", ()):
        out = dict(entry)
        out["url"] = href_for(entry["url"], _sha256(entry), "" if fmt.is_json else _fragment(entry))
        metadata = core_metadata(entry)
        for key in _CORE_METADATA_KEYS:
            out.pop(key, None)
        if metadata is not False:
            out["core-metadata"] = out["data-dist-info-metadata"] = metadata
        files.append(out)
    if fmt.is_json:
        body = dict(page)
        body["meta"] = capped_meta(page.get("meta"))
        body["files"] = files
        body.setdefault("name", name)
        return _json(body)
    rows = [
        f'    <a href="{html.escape(f["url"])}"{_anchor_attributes(f)}>{html.escape(f["filename"])}</a><br />'
        for f in files
    ]
    return _html(page, f"Links for {name}", rows)


def _sha256(entry: dict[str, Any]) -> str:
    _, fragment_hash = split_url(entry["url"])
    return (dict(hashes_of(entry.get("hashes"))) or fragment_hash).get("sha256", "")


def _fragment(entry: dict[str, Any]) -> str:
    _, fragment_hash = split_url(entry["url"])
    hashes = dict(hashes_of(entry.get("hashes"))) or fragment_hash
    for name in ("sha256", *sorted(hashes)):
        if name in hashes:
            return f"{name}={hashes[name]}"
    return ""


def _anchor_attributes(entry: dict[str, Any]) -> str:
    out = []
    for key, value in entry.items():
        attribute = ATTRIBUTE_FOR_KEY.get(key, key if key.startswith("data-") else None)
        if attribute is None or value is None or value is False:
            continue
        if key == "data-dist-info-metadata" or key == "core-metadata":
            value = _metadata_attribute(value)
        elif key == "yanked":
            value = "" if value is True else str(value)
        elif key == "gpg-sig":
            value = "true" if value else "false"
        out.append(f' {attribute}="{html.escape(str(value))}"')
    return "".join(out)


def _metadata_attribute(value: Any) -> str:
    if isinstance(value, dict) and value:
        name = "sha256" if "sha256" in value else sorted(value)[0]
        return f"{name}={value[name]}"
    return "true"


INDEX_TITLE = "Simple index"
HTML_TAIL = "  </body>\n</html>\n"


def is_project_entry(entry: Any) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("name"), str)


def index_rows(names: list[str]) -> str:
    """The HTML rows of the project list for ``names``, one a line, without the last newline."""
    joined = "\n".join(names)
    if _PLAIN_NAMES.fullmatch(joined):  # nearly always: normalize all at once, nothing to escape
        links = _NAME_SEPARATORS.sub("-", joined).lower().split("\n")
        return "\n".join(f'    <a href="{link}/">{name}</a><br />' for link, name in zip(links, names))
    return "\n".join(f'    <a href="{html.escape(normalize(n))}/">{html.escape(n)}</a><br />' for n in names)


_PLAIN_NAMES = re.compile(r"[A-Za-z0-9._\n-]*")
_NAME_SEPARATORS = re.compile(r"[-_.]+")


def html_head(page: Page, title: str) -> str:
    """The page's head, with its capped repository version and any PEP 792 status tags."""
    version = capped_api_version((page.get("meta") or {}).get("api-version"))
    tags = [("pypi:repository-version", version), *_status_tags(page)]
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        + "".join(f'    <meta name="{name}" content="{html.escape(value)}">\n' for name, value in tags)
        + f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n"
    )


def _html(page: Page, title: str, rows: list[str]) -> bytes:
    return (html_head(page, title) + "\n".join(rows) + "\n" + HTML_TAIL).encode("utf-8")


def _json(value: Any) -> bytes:
    return chunkedjson.dumps(value, ensure_ascii=False).encode("utf-8")
