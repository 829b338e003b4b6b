"""
Sending a cached file to a client: validators, conditional requests, single
byte ranges, and a producer that follows the file while it grows.

The same code serves a committed file and one still downloading, so HEAD,
ranges and resumption behave identically in both cases.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from twisted.web.server import Request
from zope.interface import implementer

from pypicached.cache.growing import GrowingFile, State
from pypicached.cache.outcome import HEADER, CacheStatus
from pypicached.http.conditional import ByteRange, Unsatisfiable, if_range_holds, not_modified, parse_range

log = Logger()

CHUNK = 64 * 1024
IMMUTABLE = b"max-age=365000000, immutable"


def etag_for(segments: tuple[str, ...], size: int) -> bytes:
    """
    A strong validator from the file's identity. A path's content never changes
    once committed (it must match the same digest), so path and size suffice
    and the tag is the same while downloading and after.
    """
    key = ("/".join(segments) + f":{size}").encode("utf-8")
    return b'"' + hashlib.blake2b(key, digest_size=12).hexdigest().encode() + b'"'


def send_file(
    request: Request,
    growing: GrowingFile,
    handle: BinaryIO | None,
    segments: tuple[str, ...],
    status: CacheStatus,
    *,
    clock: IReactorTime,
    stall_timeout: float = 60.0,
) -> None:
    """
    Answer ``request`` from ``growing``, which has started (its size is known if ever),
    reading through ``handle``, which this closes once it is not needed.
    """
    size = growing.size
    etag = _describe(request, growing, segments, status, size)
    if not_modified(request, etag, growing.modified):
        request.setResponseCode(304)
        _done(request, handle)
        return

    wanted = ByteRange(0, size) if size is not None else None
    header = request.getHeader(b"range")
    if header is not None and size is not None and if_range_holds(request, etag, growing.modified):
        try:
            wanted = _partial(request, header, size, wanted)
        except Unsatisfiable:
            request.setResponseCode(416)
            request.setHeader(b"Content-Range", b"bytes */%d" % size)
            request.setHeader(b"Content-Length", b"0")
            _done(request, handle)
            return
    if wanted is not None:
        request.setHeader(b"Content-Length", b"%d" % (wanted.stop - wanted.start))
    if request.method == b"HEAD":
        _done(request, handle)
        return
    FileSender(request, growing, handle, wanted, clock, stall_timeout).begin()


def _describe(
    request: Request, growing: GrowingFile, segments: tuple[str, ...], status: CacheStatus, size: int | None
) -> bytes | None:
    """The headers that say what the file is (type, caching, validators); its ETag, once its size is known."""
    request.setHeader(b"Content-Type", b"application/octet-stream")
    request.setHeader(b"Cache-Control", IMMUTABLE)
    request.setHeader(HEADER, status.value.encode())
    etag = etag_for(segments, size) if size is not None else None
    if etag is not None:
        request.setHeader(b"ETag", etag)
        request.setHeader(b"Accept-Ranges", b"bytes")
    if growing.modified is not None:
        request.setHeader(b"Last-Modified", datetimeToString(int(growing.modified)))
    return etag


def _partial(request: Request, header: bytes, size: int, whole: ByteRange | None) -> ByteRange | None:
    """The part a ``Range`` header asks for, answered as 206; ``Unsatisfiable`` if none of it exists."""
    header_range = parse_range(header, size)
    wanted = header_range or whole
    if wanted is not None and header_range is not None:
        request.setResponseCode(206)
        request.setHeader(b"Content-Range", wanted.content_range(size))
    return wanted


def send_whole(
    request: Request, path: Path, handle: BinaryIO, size: int, *, clock: IReactorTime, stall_timeout: float = 60.0
) -> None:
    """Answer with the whole of a committed file (a page's rendering) of ``size`` bytes, open as ``handle``."""
    request.setHeader(b"Content-Length", b"%d" % size)
    if request.method == b"HEAD":
        _done(request, handle)
        return
    growing = GrowingFile(path, State.COMPLETE, size, size)
    FileSender(request, growing, handle, None, clock, stall_timeout).begin()


def _done(request: Request, handle: BinaryIO | None) -> None:
    """Finish an answer that sends no body, closing the file it would have come from."""
    if handle is not None:
        handle.close()
    request.finish()


@implementer(IPushProducer)
class FileSender:
    """
    Streams a byte range of a ``GrowingFile`` to one client.

    It holds one chunk at a time, pauses when the client's socket is full and
    waits for the download when it has caught up with it, so a slow client costs
    one open file and one chunk, and never slows the download or anyone else. A
    client that stops reading for ``stall_timeout`` seconds is dropped.
    """

    def __init__(
        self,
        request: Request,
        growing: GrowingFile,
        handle: BinaryIO | None,
        wanted: ByteRange | None,
        clock: IReactorTime,
        stall_timeout: float,
    ) -> None:
        self._request = request
        self._clock = clock
        self._stall_timeout = stall_timeout
        self._stall_timer: IDelayedCall | None = None
        self._growing = growing
        self._pos = wanted.start if wanted else 0
        self._stop = wanted.stop if wanted else None
        self._file = handle
        self._paused = False
        self._waiting = False
        self._done = False

    def begin(self) -> None:
        self._request.notifyFinish().addErrback(self._client_gone)
        self._request.registerProducer(self, True)
        self._pump()

    def pauseProducing(self) -> None:
        self._paused = True
        if self._stall_timeout and self._stall_timer is None and not self._done:
            self._stall_timer = self._clock.callLater(self._stall_timeout, self._client_stalled)

    def resumeProducing(self) -> None:
        self._paused = False
        self._cancel_stall_timer()
        self._pump()

    def _client_stalled(self) -> None:
        self._stall_timer = None
        log.info("Dropping a client that read nothing for {t:g}s", t=self._stall_timeout)
        self._abort()

    def _cancel_stall_timer(self) -> None:
        if self._stall_timer is not None and self._stall_timer.active():
            self._stall_timer.cancel()
        self._stall_timer = None

    def stopProducing(self) -> None:
        self._close()

    def _client_gone(self, _: Failure) -> None:
        self._close()

    def _pump(self) -> None:
        growing = self._growing
        while not (self._done or self._paused or self._waiting):
            stop = self._stop if self._stop is not None else growing.available()
            if self._pos >= stop and (self._stop is not None or growing.state is State.COMPLETE):
                self._finish()
                return
            ready = min(growing.available(), stop) - self._pos
            if ready > 0:
                data = self._growing.read(self._file, self._pos, min(CHUNK, ready))
                if not data:
                    self._abort()
                    return
                self._pos += len(data)
                self._request.write(data)
            elif growing.state is State.FAILED:
                self._abort()
                return
            else:
                self._waiting = True
                growing.changed().addCallback(self._wake)

    def _wake(self, _: None) -> None:
        self._waiting = False
        self._pump()

    def _finish(self) -> None:
        self._close()
        self._request.unregisterProducer()
        self._request.finish()

    def _abort(self) -> None:
        """Break the connection so the client cannot mistake what it got for the whole file."""
        self._close()
        self._request.unregisterProducer()
        transport = self._request.channel.transport if self._request.channel else None
        if transport is not None:
            abort = getattr(transport, "abortConnection", transport.loseConnection)
            abort()

    def _close(self) -> None:
        self._done = True
        self._cancel_stall_timer()
        if self._file is not None:
            self._file.close()
            self._file = None
