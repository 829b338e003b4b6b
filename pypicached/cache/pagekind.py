"""
The three kinds of index page as values: the project list, a project's page and
its JSON API document. Each says where its pages are stored, where upstream they
come from, how they are read and how they are rendered, so the code that caches
and serves pages never asks which kind it holds.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from pypicached.cache.forms import Form
from pypicached.simpleapi import pypijson, simple
from pypicached.simpleapi.links import proxy_path, relative_href, split_url
from pypicached.simpleapi.negotiation import UPSTREAM_ACCEPT, Format, choose_format
from pypicached.upstream.client import UpstreamURLs

#: Reads an upstream body (decoded) given its Content-Type and URL.
Parse = Callable[[bytes, str, str], simple.Page]
#: Renders a project's page for a client: the page, the project name, the form.
Render = Callable[[simple.Page, str, Form], bytes]


@attrs.frozen(
    repr=False, eq=False
)  # one value per kind: compared and hashed by identity, as lookups do on every request
class PageKind:
    """How pages of one kind are stored, fetched, read and rendered."""

    name: str
    #: What the proxy asks its upstream to send.
    accept: str
    #: The record's path below an upstream's page directory, for a project and version.
    record: Callable[[str, str], tuple[str, ...]]
    #: The page's canonical path on the proxy: any other spelling is redirected there.
    path: Callable[[str, str], str]
    #: The upstream URL, or None if this upstream has no such page.
    upstream_url: Callable[[UpstreamURLs, str, str], str | None]
    #: Read from the upstream's body; None for the project list, which is streamed to disk instead.
    parse: Parse | None
    #: Rendered on a client's first request; None for the project list, rendered when fetched.
    render: Render | None
    #: Always sent as JSON, whatever the client accepts (the JSON API).
    json_only: bool = False

    def __repr__(self) -> str:
        return f"PageKind({self.name})"

    def format_for(self, accept: str | None) -> Format:
        """The representation a client gets: what its ``Accept`` asks for, unless this kind has one only."""
        return Format.JSON if self.json_only else choose_format(accept)

    def content_type(self, fmt: Format) -> str:
        return "application/json" if self.json_only else fmt.value


def _links_from(depth: int) -> simple.HrefFor:
    def href_for(url: str, sha256: str, fragment: str) -> str:
        return relative_href(depth, proxy_path(split_url(url)[0], sha256), fragment)

    return href_for


def _render_project(page: simple.Page, project: str, form: Form) -> bytes:
    fmt = Format.JSON if form.json else Format.HTML
    return simple.render_project(page, project, fmt, _links_from(form.depth))


def _render_json(page: simple.Page, project: str, form: Form) -> bytes:
    return pypijson.render(page, _links_from(form.depth))


INDEX = PageKind(
    "index",
    UPSTREAM_ACCEPT,
    record=lambda project, version: ("index.json",),
    path=lambda project, version: "/simple/",
    upstream_url=lambda index, project, version: index.simple_url,
    parse=None,
    render=None,
)
PROJECT = PageKind(
    "project",
    UPSTREAM_ACCEPT,
    record=lambda project, version: ("simple", project + ".json"),
    path=lambda project, version: f"/simple/{project}/",
    upstream_url=lambda index, project, version: index.project_url(project),
    parse=lambda body, content_type, url: simple.parse(body, content_type, url),
    render=_render_project,
)
JSON_API = PageKind(
    "json",
    "application/json",
    record=lambda project, version: ("json", project, version + ".json") if version else ("json", project + ".json"),
    path=lambda project, version: f"/pypi/{project}/{version}/json" if version else f"/pypi/{project}/json",
    upstream_url=lambda index, project, version: index.json_url(project, version or None),
    parse=lambda body, content_type, url: pypijson.parse(body),
    render=_render_json,
    json_only=True,
)


@attrs.frozen(cache_hash=True)  # a key of the page tables, looked up on every request
class PageKey:
    """Which page: its kind, and for a project's pages the project (and the JSON API's version)."""

    kind: PageKind
    project: str = ""
    version: str = ""

    def relpath(self) -> tuple[str, ...]:
        return self.kind.record(self.project, self.version)

    def upstream_url(self, index: UpstreamURLs) -> str | None:
        return self.kind.upstream_url(index, self.project, self.version)

    @property
    def path(self) -> str:
        """Where the proxy serves this page."""
        return self.kind.path(self.project, self.version)
