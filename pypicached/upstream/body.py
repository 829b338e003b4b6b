"""
Reading an upstream body as it streams in: bounded in time (an idle timeout) and
size, and telling a complete body from a cut-short one, which ``treq.collect``
does not.
"""

from __future__ import annotations

from typing import BinaryIO, cast
from typing import Protocol as Structural

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse

from pypicached.base.disk import write_all
from pypicached.upstream.errors import UpstreamError, failure_reason
from pypicached.upstream.report import UpstreamReport

#: No index page of any real project comes near this; the public project list is ~40 MB.
MAX_PAGE_BYTES = 256 * 1024 * 1024


class Noted(Structural):
    """Where a broken body is remembered: one upstream's health, or an index's over its mirrors."""

    def note(self, reason: str) -> float: ...


class Fetcher(Structural):
    """What a body reader needs of the client that fetched it (``UpstreamClient`` is one)."""

    clock: IReactorTime
    idle_timeout: float
    report: UpstreamReport

    @property
    def health(self) -> Noted: ...


class BodyReader(Protocol):
    """
    Consumes an upstream body, abandoning it when no byte arrives for
    ``idle_timeout`` seconds, and tells a complete body from a cut-short one
    (which ``treq.collect`` does not).
    """

    #: Whether a body delimited only by the connection closing counts as whole;
    #: only where a digest will check it.
    unframed_is_complete = False

    def __init__(self, client: Fetcher) -> None:
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
        _producer(self).stopProducing()

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:
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
        _producer(self).stopProducing()

    def received(self, data: bytes) -> None:
        raise NotImplementedError

    def ended(self, error: UpstreamError | None) -> None:
        """The body is over: complete if ``error`` is None."""
        raise NotImplementedError


def _producer(body: Protocol) -> IPushProducer:
    """The transport ``IResponse.deliverBody`` gives a body's protocol, which is also its producer."""
    return cast(IPushProducer, body.transport)


class _Collector(BodyReader):
    """Keeps a bounded body: in memory, or written to ``out`` as it arrives."""

    def __init__(self, client: Fetcher, limit: int, out: BinaryIO | None = None) -> None:
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


def read_body(client: Fetcher, response: IResponse, limit: int = MAX_PAGE_BYTES) -> Deferred[bytes]:
    """The whole body, or an ``UpstreamError`` if it stalled, was cut short or is too large."""
    collector = _Collector(client, limit)
    response.deliverBody(collector)
    return cast("Deferred[bytes]", collector.done)  # without ``out``, the body itself


def read_body_into(client: Fetcher, response: IResponse, out: BinaryIO, limit: int = MAX_PAGE_BYTES) -> Deferred[int]:
    """Like ``read_body``, but the body goes to ``out`` as it arrives (a page too big to hold); its size."""
    collector = _Collector(client, limit, out)
    response.deliverBody(collector)
    return cast("Deferred[int]", collector.done)  # with ``out``, the size written


def discard_body(client: Fetcher, response: IResponse) -> None:
    """Read and drop a body so its pooled connection is released, not paused forever."""
    read_body(client, response, limit=1 << 20).addErrback(lambda _: None)
