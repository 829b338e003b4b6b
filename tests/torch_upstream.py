"""A PyTorch-like package index (``download.pytorch.org/whl/<variant>/``) with a request log.

Why: the proxy must serve projects from such an index beside the public one, and the PyTorch
index differs from the public one in every way that matters to a proxy.  This fake reproduces
those ways, so that a test fails where a proxy built for the public index alone would:

- HTML only: whatever the ``Accept`` header asks for (PEP 691 JSON included), the answer is
  ``text/html``; there is no JSON API beside it.
- File links are absolute URLs on another host: the index listens on 127.0.0.1, the files
  on a "CDN" listening on 127.0.0.2 (another loopback address, so another host name in the URL).
- Local version labels are percent-encoded in links (``torch-2.5.1%2Bcu124-…whl``), the anchor
  text is not.  Like the S3 bucket behind the real one, the CDN reads a literal ``+`` in a
  request path as a space: only the ``%2B`` spelling finds the file.
- ``data-dist-info-metadata`` and ``data-core-metadata`` name the metadata file's sha256, and the
  metadata file is served at ``<file URL>.metadata``; links carry ``#sha256=`` fragments; there
  are no upload times and no ``data-requires-python`` (its wheels declare none).
- Pages and files carry an ``ETag`` and ``Last-Modified`` and answer ``If-None-Match`` with 304,
  as an object store does; there is no ``Cache-Control``.

Every request to either server is logged (:class:`TorchRequest`: which server, method, path,
``Host``), so a test can assert which index each page and file came from.
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Iterable
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, unquote

import attrs
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.web.resource import Resource
from twisted.web.server import Request

from .fake_upstream import _QuietSite, _TrackingFactory
from .wheels import Dist, normalize_project

__all__ = ["FILES_HOST", "INDEX_HOST", "ServedTorch", "TorchRequest", "TorchUpstream", "start_torch_upstream"]

#: Where the index listens, and where its files are: two host names, as on the real one.
INDEX_HOST = "127.0.0.1"
FILES_HOST = "127.0.0.2"
#: Every page and file is dated this (an object store's Last-Modified).
_LAST_MODIFIED = formatdate(1730000000, usegmt=True)


@attrs.frozen
class TorchRequest:
    """One request as it reached the index or its file host."""

    seq: int
    server: str  # "index" or "files"
    method: str
    host: str | None  # the Host header
    raw_path: str  # as sent, still percent-encoded, without the query
    accept: str | None
    user_agent: str | None

    @property
    def path(self) -> str:
        """The path percent-decoded (``+`` stays ``+``)."""
        return unquote(self.raw_path)

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def is_page(self) -> bool:
        return self.server == "index"

    @property
    def is_file(self) -> bool:
        return self.server == "files" and not self.is_metadata

    @property
    def is_metadata(self) -> bool:
        return self.server == "files" and self.raw_path.endswith(".metadata")


class TorchUpstream:
    """The index's content, its request log, and the two resources that serve it.

    Start it with :func:`start_torch_upstream`; until then its URLs are unset.
    """

    def __init__(self, dists: Iterable[Dist], *, variant: str = "cu124") -> None:
        self.variant = variant
        self._projects: dict[str, list[Dist]] = {}
        for dist in dists:
            self._projects.setdefault(dist.project, []).append(dist)
        self.log: list[TorchRequest] = []
        #: Set to a status (503, say) to have every request to both servers answered with it.
        self.failing: int | None = None
        self.index_base = ""  # http://127.0.0.1:PORT
        self.files_base = ""  # http://127.0.0.2:PORT
        self.index_resource = _Server(self, "index")
        self.files_resource = _Server(self, "files")

    # -- URLs -----------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return f"/whl/{self.variant}/"

    @property
    def simple_url(self) -> str:
        """The index URL to configure (``…/whl/cu124/``, as on the real one)."""
        return self.index_base + self.prefix

    def page_path(self, project: str) -> str:
        return f"{self.prefix}{normalize_project(project)}/"

    def file_path(self, dist: Dist) -> str:
        """The file's path on the file host, decoded (as :attr:`TorchRequest.path` reads)."""
        return self.prefix + dist.filename

    def file_url(self, dist: Dist) -> str:
        """The absolute link, on the file host, the local version's ``+`` encoded as ``%2B``."""
        return self.files_base + self.prefix + quote(dist.filename)

    def dists(self, project: str) -> list[Dist]:
        return list(self._projects.get(normalize_project(project), ()))

    # -- the log --------------------------------------------------------------------------

    def requests(self, server: str | None = None) -> list[TorchRequest]:
        return [r for r in self.log if server is None or r.server == server]

    def asked(self, server: str | None = None) -> set[tuple[str, str]]:
        """``(server, path)`` of every request (paths decoded)."""
        return {(r.server, r.path) for r in self.requests(server)}

    def about(self, project: str) -> list[TorchRequest]:
        """Every request for ``project``'s page or one of its files."""
        project = normalize_project(project)
        files = {self.file_path(d) for d in self.dists(project)}
        return [
            r
            for r in self.log
            if r.path == self.page_path(project) or r.path in files or r.path.removesuffix(".metadata") in files
        ]

    # -- answers --------------------------------------------------------------------------

    def _project_list(self) -> bytes:
        links = "".join(
            f'    <a href="{self.prefix}{project}/">{html.escape(project)}</a><br/>\n'
            for project in sorted(self._projects)
        )
        return f"<!DOCTYPE html>\n<html>\n  <body>\n{links}  </body>\n</html>\n".encode()

    def _project_page(self, project: str) -> bytes:
        rows = []
        for dist in self._projects[project]:
            metadata = f"sha256={dist.metadata_sha256}"
            rows.append(
                f'    <a href="{html.escape(self.file_url(dist))}#sha256={dist.sha256}" '
                f'data-dist-info-metadata="{metadata}" data-core-metadata="{metadata}">'
                f"{html.escape(dist.filename)}</a><br/>\n"
            )
        return (
            "<!DOCTYPE html>\n<html>\n  <body>\n"
            f"    <h1>Links for {html.escape(project)}</h1>\n{''.join(rows)}  </body>\n</html>\n"
        ).encode()

    def answer(self, server: str, raw_path: str) -> tuple[int, str, bytes]:
        """Status, Content-Type and body for a GET of ``raw_path`` on ``server``."""
        if self.failing is not None:
            return self.failing, "text/plain", b"upstream trouble\n"
        if server == "index":
            if raw_path == self.prefix:
                return 200, "text/html", self._project_list()
            name = raw_path.removeprefix(self.prefix).rstrip("/")
            if raw_path.startswith(self.prefix) and raw_path.endswith("/") and name in self._projects:
                return 200, "text/html", self._project_page(name)
            return 404, "text/plain", b"Not Found\n"
        # An S3 key: "+" in the path is a space, so only "%2B" names a local version's file.
        key = unquote(raw_path.replace("+", " "))
        for dists in self._projects.values():
            for dist in dists:
                if key == self.file_path(dist):
                    return 200, "binary/octet-stream", dist.data
                if key == self.file_path(dist) + ".metadata":
                    return 200, "binary/octet-stream", dist.metadata
        return 404, "application/xml", b"<Error><Code>NoSuchKey</Code></Error>\n"


class _Server(Resource):
    """One of the two hosts: logs the request, then answers from the shared content."""

    isLeaf = True

    def __init__(self, upstream: TorchUpstream, server: str) -> None:
        super().__init__()
        self._upstream = upstream
        self._server = server

    def render(self, request: Request) -> bytes:
        raw_path = request.uri.decode("latin-1").partition("?")[0]
        log = self._upstream.log

        def header(name: bytes) -> str | None:
            value = request.getHeader(name)
            return None if value is None else value.decode("latin-1")

        log.append(
            TorchRequest(
                seq=len(log),
                server=self._server,
                method=request.method.decode("ascii"),
                host=header(b"host"),
                raw_path=raw_path,
                accept=header(b"accept"),
                user_agent=header(b"user-agent"),
            )
        )
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            return b""
        status, content_type, body = self._upstream.answer(self._server, raw_path)
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", content_type.encode())
        if status == 200:
            etag = '"' + hashlib.md5(body).hexdigest() + '"'
            request.setHeader(b"ETag", etag.encode())
            request.setHeader(b"Last-Modified", _LAST_MODIFIED.encode())
            if header(b"if-none-match") == etag:
                request.setResponseCode(304)
                return b""
        request.setHeader(b"Content-Length", str(len(body)).encode())
        return b"" if request.method == b"HEAD" else body


@attrs.define
class ServedTorch:
    """A listening PyTorch-like index (both hosts), which a test can stop, once or more."""

    upstream: TorchUpstream
    _listening: list[tuple[Any, _TrackingFactory]]
    _stopped: Deferred[None] | None = None

    @property
    def simple_url(self) -> str:
        return self.upstream.simple_url

    def stop(self) -> Deferred[None]:
        """Stop both hosts and close every connection; fires when they are gone."""
        if self._stopped is None:
            waits = []
            for port, factory in self._listening:
                waits.append(maybeDeferred(port.stopListening))
                for wrapper in list(factory.protocols):
                    wrapper.transport.abortConnection()
                waits.append(factory.when_empty())
            self._stopped = DeferredList(waits, fireOnOneErrback=True, consumeErrors=True)
            self._stopped.addCallback(lambda _: None)
        done: Deferred[None] = Deferred()
        self._stopped.addBoth(lambda result: (done.callback(None), result)[1])
        return done


def start_torch_upstream(upstream: TorchUpstream, *, reactor: Any = None) -> ServedTorch:
    """Listen on free ports of the two hosts; sets the upstream's URLs."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    listening = []
    for resource, host, attribute in (
        (upstream.index_resource, INDEX_HOST, "index_base"),
        (upstream.files_resource, FILES_HOST, "files_base"),
    ):
        factory = _TrackingFactory(_QuietSite(resource))
        port = reactor.listenTCP(0, factory, interface=host)
        setattr(upstream, attribute, f"http://{host}:{port.getHost().port}")
        listening.append((port, factory))
    return ServedTorch(upstream, listening)
