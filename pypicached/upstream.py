"""
The upstream index: where it is (a value), and the HTTP client that talks to it.

Every response is fetched unbuffered; callers either stream the body through
``deliverBody`` or read a bounded page with ``read_body``, which, unlike
``treq.collect``, refuses a body that was cut short.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import attrs
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from pypicached import __version__

USER_AGENT = f"pypicached/{__version__}"
#: No index page of any real project comes near this; the public project list is ~40 MB.
MAX_PAGE_BYTES = 256 * 1024 * 1024


class UpstreamError(Exception):
    """The upstream failed to give a usable answer; ``status`` is what clients get."""

    def __init__(self, reason: str, status: int = 502) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@attrs.frozen
class UpstreamIndex:
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
    """Fetches from upstream over one persistent connection pool, which it owns."""

    def __init__(self, reactor, *, connect_timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
        self._reactor = reactor
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 8
        self._http = HTTPClient(Agent(reactor, pool=self._pool, connectTimeout=connect_timeout))

    def get(self, url: str, headers: Mapping[str, str] | None = None) -> "Deferred[IResponse]":
        """Start a GET; the body is left for the caller to consume."""
        sent = Headers({"User-Agent": [USER_AGENT]})
        for name, value in (headers or {}).items():
            sent.setRawHeaders(name, [value])
        return self._http.get(url, headers=sent, unbuffered=True, reactor=self._reactor).addCallback(
            lambda r: r.original
        )

    def close(self) -> "Deferred[None]":
        return self._pool.closeCachedConnections()


class _Collector(Protocol):
    def __init__(self, done: "Deferred[bytes]", limit: int) -> None:
        self._done = done
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            self.transport.stopProducing()  # type: ignore[union-attr]
            if not self._done.called:
                self._done.errback(UpstreamError(f"upstream page larger than {self._limit} bytes"))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = ResponseDone()) -> None:  # type: ignore[assignment]
        if self._done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(
                UpstreamError(f"upstream body broken off: {reason.getErrorMessage()}")
            )


def read_body(response: IResponse, limit: int = MAX_PAGE_BYTES) -> "Deferred[bytes]":
    """The whole body, or an ``UpstreamError`` if it was cut short or too large."""
    done: Deferred[bytes] = Deferred()
    response.deliverBody(_Collector(done, limit))
    return done


def discard_body(response: IResponse) -> None:
    """Read and drop a body so its pooled connection is released, not paused forever."""
    read_body(response, limit=1 << 20).addErrback(lambda _: None)
