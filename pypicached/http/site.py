"""
The HTTP connection and site: request-line and header limits, the header
timeout, and one access-log line per request, also for those a client abandoned.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from twisted.internet.interfaces import IReactorTime, ITransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource

from pypicached.cache.outcome import HEADER, CacheStatus
from pypicached.ops.metrics import Metrics

log = Logger(namespace="pypicached.access")
errors = Logger(namespace="pypicached")

MAX_URI = 8192
MAX_REQUEST_LINE = MAX_URI + 64
MAX_HEADER_BYTES = 16 * 1024


class ProxyRequest(server.Request):
    """A request that knows when it started, what it asked for, and how long it waited on upstream."""

    #: Set before any resource renders (Twisted 22.4 types it Optional).
    path: bytes
    started: float = 0.0
    upstream_seconds: float | None = None
    #: page, file, metadata, status, admin, or other: the metrics' ``kind`` label.
    kind: str = "other"
    project: str | None = None
    #: The index a page came from ("*": all of them), where the answer names one.
    index: str | None = None
    #: The token it came with (``http.access.Grant``), once a tokens file is configured.
    grant: Any = None


class ProxyChannel(HTTPChannel):
    """
    An HTTP connection that gives a client ``header_timeout`` seconds to send
    each request's headers (so a trickle of header bytes cannot hold a
    connection forever) and answers an over-long request line with 414 and
    over-long headers with 431, where Twisted would send a bare 400.
    """

    header_timeout: float = 30.0
    _header_bytes = 0
    _line_count = 0
    _header_timer: Any = None
    _in_request = False
    _host: Any = None
    _peer: Any = None

    def getHost(self) -> Any:
        """The local address, asked of the socket once per connection, not once per request."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        # The clock starts once a request's headers have begun and are not all here (most
        # arrive in one read, and then no timer is needed); an idle keep-alive connection
        # is the client_timeout's business, and closed silently.
        if (
            not self._in_request
            and self._header_timer is None
            and self.header_timeout
            and (self._line_count or self._buffer)
            and not getattr(self.transport, "disconnecting", False)
        ):
            self._header_timer = self.callLater(self.header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        self._refuse(408, b"Request Timeout", b"request headers not received in time")

    def lineReceived(self, line: bytes) -> None:
        if self._line_count == 0 and not line:
            return super().lineReceived(line)  # blank lines between requests are allowed
        self._line_count += 1
        self._header_bytes += len(line)
        if self._line_count == 1 and len(line) > MAX_REQUEST_LINE:
            return self._refuse(414, b"URI Too Long", b"request URI too long")
        if self._header_bytes > MAX_HEADER_BYTES:
            return self._refuse(431, b"Request Header Fields Too Large", b"request headers too large")
        return super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._line_count == 0:
            self._refuse(414, b"URI Too Long", b"request URI too long")
        else:
            self._refuse(431, b"Request Header Fields Too Large", b"request headers too large")

    def allHeadersReceived(self) -> None:
        self._cancel_header_timer()
        self._in_request = True
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        self._in_request = False
        self._header_bytes = self._line_count = 0
        super().requestDone(request)  # may start a pipelined request at once

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None and self._header_timer.active():
            self._header_timer.cancel()
        self._header_timer = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_header_timer()
        super().connectionLost(reason)

    def _refuse(self, code: int, phrase: bytes, reason: bytes) -> None:
        body = reason + b"\n"
        transport = cast(ITransport, self.transport)  # refused while reading a request: connected
        transport.write(
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
            b"X-Pypi-Cache: PASS\r\nConnection: close\r\n\r\n%s" % (code, phrase, len(body), body)
        )
        errors.info("Refused a client request: {code} {reason}", code=code, reason=reason.decode())
        transport.loseConnection()
        self.setRawMode()  # ignore whatever else the client sends


class ProxySite(server.Site):
    """A ``Site`` whose access log covers every request, also those the client abandoned."""

    requestFactory = ProxyRequest
    protocol = ProxyChannel  # type: ignore[assignment, unused-ignore]  # newer Twisted: only its HTTP/2 wrapper

    def __init__(
        self,
        resource: Resource,
        clock: IReactorTime,
        *,
        client_timeout: float = 60.0,
        header_timeout: float = 30.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, timeout=client_timeout or None, reactor=clock, **kwargs)
        self._header_timeout = header_timeout

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.header_timeout = self._header_timeout
        return channel

    def log(self, request: Any) -> None:
        """Replaced by ``ProxyResource._log_when_done``, which also sees aborted requests."""


class AccessLog:
    """One line per request when it ends, however it ends; the request counted in the metrics."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        metrics: Metrics,
        log_format: str = "text",
        served: Callable[[Any, int], None] | None = None,
    ) -> None:
        self._clock = clock
        self._metrics = metrics
        self._log_format = log_format
        #: Told of each request that came with a token (its grant, the bytes sent).
        self._served = served

    def __call__(self, request: ProxyRequest) -> None:
        """One access-log line per request, and the request counted in the metrics."""
        total = self._clock.seconds() - request.started
        raw_status = (request.responseHeaders.getRawHeaders(HEADER) or [b""])[0].decode()
        try:
            cache: CacheStatus | None = CacheStatus(raw_status)
        except ValueError:
            cache = None
        self._metrics.answered(request.kind, cache, request.sentLength, request.project)
        client = request.getClientAddress()
        fields = {
            "client": getattr(client, "host", "-"),
            "method": request.method.decode("latin-1"),
            "path": request.uri.decode("latin-1")[:512],
            "status": request.code if request.finished else "aborted",
            "bytes": request.sentLength,
            "cache": raw_status or "-",
            "total": round(total, 3),
            "upstream": None if request.upstream_seconds is None else round(request.upstream_seconds, 3),
            "index": request.index,
        }
        grant = request.grant
        if grant is not None:  # the token's name and the client's user name; never the token
            fields["user"], fields["token"] = grant.user, grant.name
            if self._served is not None:
                self._served(grant, request.sentLength)
        if self._log_format == "json":
            log.info("{json}", json=json.dumps(fields), **fields)
            return
        upstream = "-" if fields["upstream"] is None else f"{fields['upstream']:.3f}s"
        # formatted here, once: the observer then has no format string to parse per request
        log.info(
            "{line}",
            line=f'{fields["client"]} "{fields["method"]} {fields["path"]}" {fields["status"]} {fields["bytes"]} '
            f"{fields['cache']} {total:.3f}s upstream={upstream}"
            + (f" index={request.index}" if request.index else "")
            + (f" user={grant.user} token={grant.name}" if grant is not None else ""),
            **fields,
        )
