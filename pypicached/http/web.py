"""
The HTTP face of the proxy: one leaf resource that checks the path once, finds
its row in the route table (``http.table``) and answers with an index
page, a package file or the operator's side; every failure becomes one status
and a one-line reason.
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import BinaryIO, cast

from twisted.internet.defer import ensureDeferred
from twisted.internet.interfaces import IReactorTime, ITCPTransport
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource

from pypicached.base.names import is_valid_name, is_valid_version, normalize, projects_for_filename
from pypicached.base.paths import BadPath, RequestPath
from pypicached.cache import HEADER, INDEX, INDEX_HEADER, CacheStatus, PageKey, PageKind
from pypicached.cache import form as page_form
from pypicached.http.access import Access
from pypicached.http.conditional import not_modified
from pypicached.http.routes import GET_HEAD, Found, NoRoute, route
from pypicached.http.serving import send_file, send_whole
from pypicached.http.site import MAX_URI, AccessLog, ProxyRequest
from pypicached.http.table import METHODS, ROUTES, is_open
from pypicached.ops.control import Answer, Control
from pypicached.policy.answers import UNAVAILABLE, Answers, Denied, NotFound, PageAnswer

errors = Logger(namespace="pypicached")


Headers = tuple[tuple[bytes, bytes], ...]


class HTTPError(Exception):
    """Answer with ``status`` and a one-line plain-text ``reason``."""

    def __init__(self, status: int, reason: str, cache: CacheStatus = CacheStatus.PASS, headers: Headers = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.cache = cache
        self.headers = headers


class ProxyResource(Resource):
    isLeaf = True

    def __init__(
        self,
        *,
        answers: Answers,
        clock: IReactorTime,
        control: Control,
        access_log: AccessLog,
        client_timeout: float = 60.0,
        access: Access | None = None,
    ) -> None:
        super().__init__()
        self._access = access
        self._answers = answers
        self._clock = clock
        self.control = control
        self._access_log = access_log
        self._client_timeout = client_timeout

    def render(self, request: ProxyRequest) -> int:
        request.started = self._clock.seconds()
        request.notifyFinish().addBoth(lambda _: self._access_log(request))
        ensureDeferred(self._answer(request))
        return server.NOT_DONE_YET

    async def _answer(self, request: ProxyRequest) -> None:
        try:
            if self._access is not None and not is_open(request.path):
                refused = self._access.check(request)
                if refused is not None:
                    raise HTTPError(refused.status, refused.reason, headers=refused.headers)
            if request.method not in METHODS:
                raise NoRoute(GET_HEAD)
            if len(request.uri) > MAX_URI:
                raise HTTPError(414, "request URI too long")
            try:
                path = RequestPath.parse(request.path)
            except BadPath as e:
                raise HTTPError(400, f"bad path: {e}") from None
            found = route(ROUTES, request.method, path)
            request.kind = found.route.kind
            await found.route.handler(self, request, found)
        except NoRoute as e:
            if e.allowed:
                request.setHeader(b"Allow", b", ".join(e.allowed))
            self._error(request, HTTPError(405 if e.allowed else 404, str(e)))
        except HTTPError as e:
            self._error(request, e)
        except NotFound as e:
            self._error(request, HTTPError(404, str(e)))
        except Denied as e:
            self._error(request, HTTPError(403, e.verdict.reason, CacheStatus.DENIED))
        except UNAVAILABLE as e:
            self._error(request, HTTPError(e.status, str(e), CacheStatus.ERROR))
        except Exception:
            errors.failure("Unexpected error answering {path!r}", path=request.path)
            self._error(request, HTTPError(500, "internal error; see the proxy's log"))

    async def answer_control(self, request: ProxyRequest, answer: Answer | Awaitable[Answer]) -> None:
        """Send what the operator's side answered."""
        self._send_answer(request, answer if isinstance(answer, Answer) else await answer)

    def _key(self, kind: PageKind, values: dict[str, str]) -> PageKey:
        """The page a path names; 404 for a name or version that cannot be one."""
        project, version = values.get("project", ""), values.get("version", "")
        if "project" in values and not is_valid_name(project):
            raise HTTPError(404, "invalid project name")
        if version and not is_valid_version(version):
            raise HTTPError(404, "invalid version")
        return PageKey(kind, normalize(project) if project else "", version)

    # --- index pages ---------------------------------------------------------------

    async def answer_page(self, request: ProxyRequest, kind: PageKind, found: Found) -> None:
        """
        A page in the form the client asked for, from the index that answers for it (or
        the one its ``/index/<name>/`` path names); any other spelling of its path (a
        name not normalized, a missing slash) is redirected to the canonical one,
        whose depth the relative links start from.
        """
        key = self._key(kind, found.values)
        name = found.values.get("index")
        path = (f"/index/{name}" if name is not None else "") + key.path
        if found.path.text() != path:
            return self._redirect(request, path)
        request.project = key.project or None
        fmt = key.kind.format_for(_header(request, b"accept"))
        compress = b"gzip" in (request.getHeader(b"accept-encoding") or b"").lower()
        # the project list's links are relative to itself: its one depth serves every path it has
        depth = 1 if key.kind is INDEX else path.count("/") - 1
        answer = await self._answers.page(key, page_form(fmt.is_json, depth, compress), name)
        request.index = answer.index
        if request.channel is None:  # the client went away meanwhile
            return _close(answer.handle)
        self._send_page(request, key.kind.content_type(fmt), answer)

    def _send_page(self, request: ProxyRequest, content_type: str, answer: PageAnswer) -> None:
        rendering = answer.rendering
        request.upstream_seconds = answer.upstream_seconds
        request.setHeader(b"Content-Type", content_type.encode())
        request.setHeader(b"Vary", b"Accept, Accept-Encoding")
        request.setHeader(b"ETag", rendering.etag)
        request.setHeader(b"Cache-Control", b"max-age=%d, public" % max(0, int(answer.max_age)))
        request.setHeader(INDEX_HEADER, answer.index.encode())
        if rendering.gzipped:
            request.setHeader(b"Content-Encoding", b"gzip")
        if answer.warning:
            request.setHeader(b"Warning", answer.warning.encode())
        request.setHeader(HEADER, answer.status.value.encode())
        if not_modified(request, rendering.etag):
            request.setResponseCode(304)
            _close(answer.handle)
            request.finish()
            return
        if answer.handle is None:  # the headers are all set: just the body, from memory
            request.setHeader(b"Content-Length", b"%d" % rendering.size)
            if request.method != b"HEAD":
                request.write(rendering.body or b"")
            request.finish()
            return
        send_whole(
            request,
            cast(Path, rendering.path),  # a handle is open: the rendering is on disk
            answer.handle,
            rendering.size,
            clock=self._clock,
            stall_timeout=self._client_timeout,
        )

    # --- files ---------------------------------------------------------------------

    async def answer_file(self, request: ProxyRequest, found: Found) -> None:
        segments = found.path.segments
        request.kind = "metadata" if segments[-1].endswith(".metadata") else "file"
        request.project = next(iter(projects_for_filename(segments[-1])), None)
        answer = await self._answers.file(segments)
        request.upstream_seconds = answer.upstream_seconds
        if request.channel is None:
            return _close(answer.handle)
        send_file(
            request,
            answer.file,
            answer.handle,
            segments,
            answer.status,
            clock=self._clock,
            stall_timeout=self._client_timeout,
        )

    # --- plain responses -----------------------------------------------------------

    def _send(
        self,
        request: ProxyRequest,
        code: int,
        body: bytes,
        content_type: str,
        cache: CacheStatus = CacheStatus.PASS,
    ) -> None:
        if request.channel is None:
            return
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", content_type.encode())
        request.setHeader(b"Content-Length", b"%d" % len(body))
        request.setHeader(HEADER, cache.value.encode())
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    def _send_answer(self, request: ProxyRequest, answer: Answer) -> None:
        """A complete answer from the operator's side; the status pages are never cached by browsers."""
        for name, value in answer.headers:
            request.setHeader(name, value)
        if answer.code == 200 and request.kind == "status":
            request.setHeader(b"Cache-Control", b"no-store")
        self._send(request, answer.code, answer.body, answer.content_type)

    def _redirect(self, request: ProxyRequest, location: str) -> None:
        """A 301 to a path on this proxy, never built from the ``Host`` header."""
        request.setHeader(b"Location", location.encode("utf-8"))
        self._send(request, 301, b"moved to " + location.encode("utf-8") + b"\n", "text/plain; charset=utf-8")

    def _error(self, request: ProxyRequest, e: HTTPError) -> None:
        if request.channel is None or request.finished:
            return
        if request.startedWriting:
            cast(ITCPTransport, request.channel.transport).abortConnection()  # TCP or TLS: both abort
            return
        for name in (b"ETag", b"Cache-Control", b"Content-Encoding", b"Vary", b"Accept-Ranges", b"Warning"):
            request.responseHeaders.removeHeader(name)
        for name, value in e.headers:
            request.setHeader(name, value)
        self._send(request, e.status, e.reason.encode("utf-8", "replace") + b"\n", "text/plain; charset=utf-8", e.cache)


def _close(handle: BinaryIO | None) -> None:
    if handle is not None:
        handle.close()


def _header(request: server.Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    return value.decode("latin-1") if value is not None else None
