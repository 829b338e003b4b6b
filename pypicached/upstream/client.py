"""
The upstream index: where it is (a value), and the HTTP client that talks to it.

Every response is fetched unbuffered; callers either stream the body through
``deliverBody`` or read a bounded page with ``read_body``, which, unlike
``treq.collect``, refuses a body that was cut short.
"""

from __future__ import annotations

import hashlib
from typing import Any, BinaryIO, Mapping

import attrs
from hyperlink import URL
from twisted.internet.defer import CancelledError, Deferred, TimeoutError as DeferredTimeout, fail
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import TimeoutError
from twisted.web.error import SchemeNotSupported
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import _HTTP11ClientFactory, Agent, BrowserLikePolicyForHTTPS, BrowserLikeRedirectAgent, HTTPConnectionPool, ResponseDone, ResponseFailed, ResponseNeverReceived
from twisted.web.http import PotentialDataLoss
from twisted.web.error import Error as WebError
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse

from pypicached import __version__
from pypicached.base.disk import write_all
from pypicached.upstream.breaker import UpstreamHealth
from pypicached.upstream.report import UpstreamReport

USER_AGENT = f"pypicached/{__version__}"
#: Seconds between connection attempts at a host's addresses (happy eyeballs).
ATTEMPT_DELAY = 0.05
#: A probe's limit when ``response_timeout`` is 0 (no limit for requests).
PROBE_TIMEOUT = 10.0
#: No index page of any real project comes near this; the public project list is ~40 MB.
MAX_PAGE_BYTES = 256 * 1024 * 1024


class UpstreamError(Exception):
    """The upstream failed to give a usable answer; ``status`` is what clients get."""

    def __init__(self, reason: str, status: int = 502) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


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


class UpstreamClient:
    """
    Fetches from one upstream through an ``IAgent`` (in the daemon, a pooled
    ``Agent`` that the service owns; in tests, one over an in-memory upstream).

    Waiting for response headers is bounded here, on ``clock``; a body that
    stalls is bounded by ``BodyReader``. Every answer and failure is reported to
    the upstream's ``health``, which is how one failure spares every other
    request the wait.
    """

    def __init__(
        self,
        agent: IAgent,
        *,
        clock: IReactorTime,
        health: UpstreamHealth,
        report: UpstreamReport,
        response_timeout: float = 10.0,
        file_timeout: float = 30.0,
        idle_timeout: float = 60.0,
    ) -> None:
        self._agent = agent
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
    ) -> "Deferred[IResponse]":
        """
        Start a request; the body is left for the caller to consume, exactly as it
        came (no content decoding: a package file's digest is of its bytes as
        served, and a ``.tar.gz`` is often labelled gzip).
        """
        sent = Headers({"User-Agent": [USER_AGENT]})
        for name, value in (headers or {}).items():
            sent.setRawHeaders(name, [value])
        started = self.clock.seconds()
        try:
            uri = _as_uri(url)
        except Exception as e:  # a link no request can be made of: this page's fault, not the upstream's
            return fail(UpstreamError(f"cannot request {url!r}: {e}"))
        d = self._agent.request(method, uri, sent)
        wait = self.response_timeout if timeout is None else timeout
        if wait:
            d.addTimeout(wait, self.clock)

        def answered(response: IResponse) -> IResponse:
            self.report.upstream_answered(self.clock.seconds() - started, response.code)
            self.health.answered(response.code)
            return response

        def failed(failure: Failure) -> Failure:
            error = _as_upstream_error(failure, url)
            self.report.upstream_failed(error.value.reason, answered=False)
            if _answered_anyway(failure):
                self.health.note(error.value.reason)
            else:
                self.health.failed(error.value.reason)
            return error

        return d.addCallbacks(answered, failed)

    def probe(self, url: str) -> "Deferred[None]":
        """A HEAD request whose only use is the answer it reports to ``health``."""

        def drop(response: IResponse) -> None:
            discard_body(self, response)

        # always bounded: a probe that never ends would leave the upstream down for good
        timeout = self.response_timeout or PROBE_TIMEOUT
        return self.get(url, method=b"HEAD", timeout=timeout).addCallbacks(drop, lambda _: None)


class _QuietFactory(_HTTP11ClientFactory):
    noisy = False


def pooled_agent(reactor, connect_timeout: float) -> tuple[IAgent, HTTPConnectionPool]:  # type: ignore[no-untyped-def]
    """
    The daemon's agent: persistent connections (owned by the caller, who closes
    the pool at stop) and redirects followed, as browsers and installers do.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 8
    pool._factory = _QuietFactory  # no "Starting factory" line per upstream connection
    agent = Agent.usingEndpointFactory(reactor, _Endpoints(reactor, connect_timeout or None), pool=pool)
    return BrowserLikeRedirectAgent(agent), pool


@attrs.frozen
class _Endpoints:
    """
    Agent's usual endpoints (TCP, TLS with the browser-like policy), but with a short
    delay between attempts at a host's addresses: with the default 0.3 s, a refused
    connection to a host of one address is reported only that much later.
    """

    reactor: Any
    timeout: float | None
    policy: Any = attrs.field(factory=BrowserLikePolicyForHTTPS)

    def endpointForURI(self, uri: Any) -> Any:
        host = uri.host.decode("ascii")
        endpoint = HostnameEndpoint(self.reactor, host, uri.port, timeout=self.timeout or 30, attemptDelay=ATTEMPT_DELAY)
        if uri.scheme == b"https":
            return wrapClientTLS(self.policy.creatorForNetloc(uri.host, uri.port), endpoint)
        if uri.scheme != b"http":
            raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
        return endpoint


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
    reasons = failure.value.reasons if failure.check(ResponseFailed) else [failure]
    return any(r.check(WebError) for r in reasons)


def _as_upstream_error(failure: Failure, url: str) -> Failure:
    """Any way a request can fail, as one ``UpstreamError`` naming what went wrong."""
    inner = failure.value.reasons if failure.check(ResponseFailed, ResponseNeverReceived) else [failure]
    if any(f.check(CancelledError, TimeoutError, DeferredTimeout) for f in inner):
        return Failure(UpstreamError(f"upstream timed out: no response from {url}", 504))
    if failure.check(ResponseFailed, ResponseNeverReceived):
        return Failure(UpstreamError(f"upstream connection failed for {url}: {failure_reason(failure.value)}"))
    return Failure(UpstreamError(f"upstream unreachable for {url}: {failure.getErrorMessage()}"))


class BodyReader(Protocol):
    """
    Consumes an upstream body, abandoning it when no byte arrives for
    ``idle_timeout`` seconds, and tells a complete body from a cut-short one
    (which ``treq.collect`` does not).
    """

    #: Whether a body delimited only by the connection closing counts as whole;
    #: only where a digest will check it.
    unframed_is_complete = False

    def __init__(self, client: "UpstreamClient") -> None:
        self._clock = client.clock
        self._idle = client.idle_timeout
        self._report = client.report
        self._health = client.health
        self._timer: IDelayedCall | None = None
        self._stalled = False

    def connectionMade(self) -> None:
        if self._idle:
            self._timer = self._clock.callLater(self._idle, self._stall)

    def dataReceived(self, data: bytes) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.reset(self._idle)
        self._report.fetched(len(data))
        self.received(data)

    def _stall(self) -> None:
        self._stalled = True
        self.transport.stopProducing()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # type: ignore[assignment]
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        if self._stalled:
            error: UpstreamError | None = UpstreamError(f"upstream body stalled: no data for {self._idle:g}s", 504)
        elif reason.check(ResponseDone) or (reason.check(PotentialDataLoss) and self.unframed_is_complete):
            error = None
        elif reason.check(PotentialDataLoss):
            error = UpstreamError("upstream closed the connection with no sign the body was complete")
        else:
            error = UpstreamError(f"upstream body broken off: {failure_reason(reason.value)}")
        if error is not None:
            self._report.upstream_failed(error.reason, answered=True)
            self._health.note(error.reason)
        self.ended(error)

    def abandon(self) -> None:
        """Stop reading; the connection is closed rather than returned to the pool."""
        self.transport.stopProducing()  # type: ignore[union-attr]

    def received(self, data: bytes) -> None:
        raise NotImplementedError

    def ended(self, error: UpstreamError | None) -> None:
        """The body is over: complete if ``error`` is None."""
        raise NotImplementedError


def failure_reason(error: BaseException) -> str:
    """What went wrong, in words: Twisted's wrapped failures (``reasons``) joined, else the error's own text."""
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(error) or type(error).__name__


class _Collector(BodyReader):
    """Keeps a bounded body: in memory, or written to ``out`` as it arrives."""

    def __init__(self, client: UpstreamClient, limit: int, out: BinaryIO | None = None) -> None:
        super().__init__(client)
        self.done: Deferred[bytes | int] = Deferred()
        self._limit = limit
        self._out = out
        self._chunks: list[bytes] = []
        self._size = 0

    def received(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._give_up(UpstreamError(f"upstream page larger than {self._limit} bytes"))
            return
        if self._out is None:
            self._chunks.append(data)
            return
        try:
            write_all(self._out, data)
        except OSError as e:
            self._give_up(UpstreamError(f"cannot store the upstream page: {e.strerror}", 503))

    def _give_up(self, error: UpstreamError) -> None:
        self.done.errback(error)
        self.abandon()

    def ended(self, error: UpstreamError | None) -> None:
        if self.done.called:
            return
        if error is not None:
            self.done.errback(error)
        elif self._out is None:
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.callback(self._size)


def read_body(client: UpstreamClient, response: IResponse, limit: int = MAX_PAGE_BYTES) -> "Deferred[bytes]":
    """The whole body, or an ``UpstreamError`` if it stalled, was cut short or is too large."""
    collector = _Collector(client, limit)
    response.deliverBody(collector)
    return collector.done  # type: ignore[return-value]


def read_body_into(client: UpstreamClient, response: IResponse, out: BinaryIO, limit: int = MAX_PAGE_BYTES) -> "Deferred[int]":
    """Like ``read_body``, but the body goes to ``out`` as it arrives (a page too big to hold); its size."""
    collector = _Collector(client, limit, out)
    response.deliverBody(collector)
    return collector.done  # type: ignore[return-value]


def discard_body(client: UpstreamClient, response: IResponse) -> None:
    """Read and drop a body so its pooled connection is released, not paused forever."""
    read_body(client, response, limit=1 << 20).addErrback(lambda _: None)
