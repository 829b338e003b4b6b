"""
The upstream index: where it is (a value), and the client that talks to it.

Every request goes through a treq ``HTTPClient`` (in the daemon, one built by
``agent.upstream_http`` over the pooled agent; in tests, ``StubTreq`` or one over
an in-memory upstream), unbuffered: callers either stream the body through
``deliverBody`` or read a bounded page with ``body.read_body``, which, unlike
``treq.collect``, refuses a body that was cut short.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

import attrs
from hyperlink import URL
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.client import ResponseFailed, ResponseNeverReceived
from twisted.web.error import Error as WebError
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from pypicached import __version__
from pypicached.upstream.agent import ExactURL, as_sent, as_served
from pypicached.upstream.body import discard_body
from pypicached.upstream.breaker import UpstreamHealth
from pypicached.upstream.errors import UpstreamError, failure_reason
from pypicached.upstream.report import UpstreamReport

USER_AGENT = f"pypicached/{__version__}"
#: A probe's limit when ``response_timeout`` is 0 (no limit for requests).
PROBE_TIMEOUT = 10.0


@attrs.frozen
class UpstreamURLs:
    """A simple-API index the proxy fills its cache from."""

    simple_url: str

    @property
    def key(self) -> str:
        """A short, stable name for this index's part of the cache."""
        return hashlib.blake2b(self.simple_url.encode(), digest_size=6).hexdigest()

    def project_url(self, project: str) -> str:
        return f"{self.simple_url}{project}/"

    def json_url(self, project: str, version: str | None) -> str | None:
        """The per-project JSON API beside a ``…/simple/`` index, if it has one."""
        if not self.simple_url.endswith("/simple/"):
            return None
        base = self.simple_url[: -len("simple/")] + "pypi/" + project + "/"
        return base + (f"{version}/json" if version else "json")


class Requests(Protocol):
    """What the client needs of treq: ``treq.client.HTTPClient`` and ``treq.testing.StubTreq`` both fit."""

    # Deferred[Any]: treq answers with its own response class, which is private
    def request(
        self,
        method: str,
        url: Any,
        *,
        headers: Headers | None = ...,
        unbuffered: bool = ...,
        allow_redirects: bool = ...,
        reactor: Any = ...,
    ) -> Deferred[Any]: ...


class UpstreamClient:
    """
    Fetches from one upstream through treq (``http``: in the daemon, an
    ``agent.upstream_http`` over a pooled ``Agent`` that the service owns; in
    tests, one over an in-memory upstream, or ``StubTreq``), always unbuffered.

    Waiting for response headers is bounded here, on ``clock``; a body that
    stalls is bounded by ``BodyReader``. Every answer and failure is reported to
    the upstream's ``health``, which is how one failure spares every other
    request the wait.
    """

    def __init__(
        self,
        http: Requests,
        *,
        clock: IReactorTime,
        health: UpstreamHealth,
        report: UpstreamReport,
        response_timeout: float = 10.0,
        file_timeout: float = 30.0,
        idle_timeout: float = 60.0,
    ) -> None:
        self.http = http
        self.clock = clock
        self.health = health
        self.report = report
        self.response_timeout = response_timeout
        #: Seconds to wait for a package file's response headers (a big file's first byte can take longer).
        self.file_timeout = file_timeout
        self.idle_timeout = idle_timeout

    def get(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
        method: bytes = b"GET",
    ) -> Deferred[IResponse]:
        """
        Start a request; the body is left for the caller to consume, exactly as it
        came (no content decoding: a package file's digest is of its bytes as
        served, and a ``.tar.gz`` is often labelled gzip).
        """
        try:
            exact = ExactURL.of(_as_uri(url))
        except Exception as e:  # a link no request can be made of: this page's fault, not the upstream's
            return fail(UpstreamError(f"cannot request {url!r}: {e}"))
        sent = Headers({"User-Agent": [USER_AGENT]})
        for name, value in (headers or {}).items():
            sent.setRawHeaders(name, [value])
        started = self.clock.seconds()
        d = self.http.request(
            method.decode("ascii"),
            exact,
            headers=as_sent(sent),
            unbuffered=True,
            allow_redirects=False,
            reactor=self.clock,
        )
        wait = self.response_timeout if timeout is None else timeout
        if wait:
            d.addTimeout(wait, self.clock)
        return d.addCallbacks(self._answered, self._failed, callbackArgs=(started,), errbackArgs=(url,))

    def _answered(self, response: IResponse, started: float) -> IResponse:
        self.report.upstream_answered(self.clock.seconds() - started, response.code)
        self.health.answered(response.code)
        return as_served(response)

    def _failed(self, failure: Failure, url: str) -> Failure:
        error = _as_upstream_error(failure, url)
        self.report.upstream_failed(error.reason, answered=False)
        if _answered_anyway(failure):
            self.health.note(error.reason)
        else:
            self.health.failed(error.reason)
        return Failure(error)

    def moved(self, url: str) -> bool:
        """Whether a page linking ``url`` is better asked anew, from another mirror: never, for one upstream."""
        return False

    def probe(self, url: str) -> Deferred[None]:
        """A HEAD request whose only use is the answer it reports to ``health``."""

        def drop(response: IResponse) -> None:
            discard_body(self, response)

        # always bounded: a probe that never ends would leave the upstream down for good
        timeout = self.response_timeout or PROBE_TIMEOUT
        return self.get(url, method=b"HEAD", timeout=timeout).addCallbacks(drop, lambda _: None)


def _as_uri(url: str) -> bytes:
    """
    An absolute URL as the ASCII bytes an agent sends: as it is when it is plain ASCII
    (a host like ``devpi_server`` is no IDNA name, but a fine one to connect to), else
    with its non-ASCII characters encoded.
    """
    if url.isascii() and url.isprintable() and " " not in url:
        return url.encode("ascii")
    return URL.from_text(url).to_uri().to_text().encode("ascii")


def _answered_anyway(failure: Failure) -> bool:
    """A redirect loop or a redirect without a Location: the upstream did answer, so it is not down."""
    error = failure.value
    reasons = error.reasons if isinstance(error, ResponseFailed) else [failure]
    return any(r.check(WebError) for r in reasons)


def _as_upstream_error(failure: Failure, url: str) -> UpstreamError:
    """Any way a request can fail, as one ``UpstreamError`` naming what went wrong."""
    error = failure.value
    inner = error.reasons if isinstance(error, (ResponseFailed, ResponseNeverReceived)) else [failure]
    if any(f.check(CancelledError, TimeoutError, DeferredTimeout) for f in inner):
        return UpstreamError(f"upstream timed out: no response from {url}", 504)
    if isinstance(error, (ResponseFailed, ResponseNeverReceived)):
        return UpstreamError(f"upstream connection failed for {url}: {failure_reason(error)}")
    return UpstreamError(f"upstream unreachable for {url}: {failure.getErrorMessage()}")
