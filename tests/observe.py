"""What clients sent the proxy and what it answered; and a relay that cuts a response short.

Why: the fake upstream's log shows what reached the upstream, but the compatibility matrix must
also prove what each installer asked the *proxy* for (``Range: bytes=-10000`` from poetry,
``HEAD`` then ranges from uv, ``Cache-Control: max-age=0`` from old pip, ``If-Range`` on a
resumed download) and how the proxy answered (status, ``Content-Range``, ``X-Pypi-Cache``).
:class:`ClientLog` records that at the proxy's own ``Site``, for every request, including those
the client abandoned.  :class:`CuttingRelay` sits between an installer and the proxy and closes
the connection in the middle of one file's body, as a proxy dropping a client would, so the
installer's resume logic is exercised against the proxy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.web.resource import Resource

__all__ = ["ClientRequest", "ClientLog", "CuttingRelay"]


@attrs.define
class ClientRequest:
    """One request a client made to the proxy, completed with the answer once it is sent."""

    method: str
    path: str  # as sent (still percent-encoded), without the query string
    headers: dict[str, str]  # lower-case names, first value
    code: int | None = None
    cache: str | None = None  # X-Pypi-Cache
    content_range: str | None = None
    etag: str | None = None
    sent: int = 0  # body bytes the proxy wrote
    finished: bool = False  # False: the client went away first (or it is still running)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def range(self) -> str | None:
        return self.header("range")

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def is_page(self) -> bool:
        return self.path.startswith(("/simple/", "/pypi/"))

    @property
    def is_file(self) -> bool:
        return self.path.startswith("/packages/")

    @property
    def user_agent(self) -> str:
        return self.header("user-agent") or ""


class _Recording(Resource):
    isLeaf = True

    def __init__(self, inner: Resource, log: ClientLog) -> None:
        super().__init__()
        self._inner = inner
        self._log = log

    def render(self, request: Any) -> Any:
        record = ClientRequest(
            method=request.method.decode("latin-1"),
            path=request.uri.decode("latin-1").partition("?")[0],
            headers={
                name.decode("latin-1").lower(): values[0].decode("latin-1")
                for name, values in request.requestHeaders.getAllRawHeaders()
            },
        )
        self._log.requests.append(record)

        def done(result: Any) -> None:
            record.finished = result is None
            record.code = request.code
            record.sent = request.sentLength
            for attribute, header in (
                ("cache", b"x-pypi-cache"),
                ("content_range", b"content-range"),
                ("etag", b"etag"),
            ):
                values = request.responseHeaders.getRawHeaders(header)
                setattr(record, attribute, values[0].decode("latin-1") if values else None)

        request.notifyFinish().addBoth(done)
        return self._inner.render(request)


class ClientLog:
    """Every request the proxy's ``Site`` receives from now on (see :meth:`attach`)."""

    def __init__(self) -> None:
        self.requests: list[ClientRequest] = []
        self._marks: dict[str, int] = {}

    @classmethod
    def attach(cls, site: Any) -> ClientLog:
        """Record at ``site`` (the proxy's ``ProxySite``): wraps its root resource."""
        log = cls()
        site.resource = _Recording(site.resource, log)
        return log

    def mark(self, name: str) -> None:
        """Remember where the log is now; :meth:`since` returns what came after."""
        self._marks[name] = len(self.requests)

    def since(self, name: str) -> list[ClientRequest]:
        return self.requests[self._marks[name] :]

    def matching(self, predicate: Callable[[ClientRequest], bool], *, since: str | None = None) -> list[ClientRequest]:
        pool = self.since(since) if since is not None else self.requests
        return [r for r in pool if predicate(r)]

    def for_file(self, filename: str, *, since: str | None = None) -> list[ClientRequest]:
        """Requests for a file itself (not its ``.metadata``)."""
        return self.matching(lambda r: r.is_file and r.filename == filename, since=since)

    def by(self, agent: str, *, since: str | None = None) -> list[ClientRequest]:
        """Requests whose ``User-Agent`` starts with ``agent`` (``"pip/"``, ``"uv/"``, ...)."""
        return self.matching(lambda r: r.user_agent.startswith(agent), since=since)


# --------------------------------------------------------------------------------------------


class _Side(Protocol):
    peer: _Side | None = None
    cut = False

    def connectionLost(self, reason: Any) -> None:
        peer, self.peer = self.peer, None
        if peer is not None and peer.transport is not None:
            peer.transport.loseConnection()


class _ToProxy(_Side):
    """The relay's connection to the proxy: answers flow back to the installer."""

    downstream: _FromClient

    def connectionMade(self) -> None:
        down = self.downstream
        self.peer, down.peer = down, self
        # Flow control both ways, as twisted.protocols.portforward does.
        self.transport.registerProducer(down.transport, True)
        down.transport.registerProducer(self.transport, True)
        if down.pending:
            self.transport.write(b"".join(down.pending))
            down.pending.clear()
        down.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        down = self.downstream
        if down.cut:
            return
        if down.budget is not None:
            if len(data) >= down.budget:
                data, down.budget = data[: down.budget], 0
                down.cut = True
                # No more flow control: a paused producer would keep loseConnection waiting.
                down.transport.unregisterProducer()
                self.transport.unregisterProducer()
                down.transport.write(data)
                # Close (FIN after the bytes already written) towards the installer, and drop
                # the proxy side: the installer sees a body that ends early.
                down.transport.loseConnection()
                self.transport.abortConnection()
                down.relay._cut_done(down.cut_request)
                return
            down.budget -= len(data)
        down.transport.write(data)


class _FromClient(_Side):
    """The installer's connection to the relay."""

    relay: CuttingRelay

    def connectionMade(self) -> None:
        self.pending: list[bytes] = []
        self.seen = b""
        self.budget: int | None = None
        self.cut_request = b""
        self.transport.pauseProducing()
        factory = ClientFactory()
        factory.protocol = _ToProxy

        def build(addr: Any) -> _ToProxy:
            proto = _ToProxy()
            proto.downstream = self
            return proto

        factory.buildProtocol = build  # type: ignore[method-assign]
        factory.clientConnectionFailed = lambda connector, reason: self.transport.loseConnection()  # type: ignore[method-assign]
        self.relay.reactor.connectTCP(self.relay.host, self.relay.port, factory)

    def dataReceived(self, data: bytes) -> None:
        if self.relay.armed and self.budget is None:
            self.seen = (self.seen + data)[-8192:]
            line = self.relay.request_line_with(self.seen)
            if line is not None:
                self.relay.armed = False
                self.budget = self.relay.cut_after
                self.cut_request = line
        if self.peer is None:
            self.pending.append(data)
        else:
            self.peer.transport.write(data)


class CuttingRelay:
    """A TCP relay to ``host:port`` that cuts one response short, once.

    The first ``GET`` whose request target contains ``target`` gets ``cut_after`` bytes of the
    proxy's answer (status line and headers included), then its connection closes; every other
    request, and every later connection, passes through untouched.  Clients must keep one
    request in flight per connection (installers do), so the bytes that follow a request line
    are that request's answer.
    """

    def __init__(self, host: str, port: int, *, target: str, cut_after: int, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.host = host
        self.port = port
        self.target = target.encode("latin-1")
        self.cut_after = cut_after
        self.armed = True
        self.cut: Deferred[bytes] = Deferred()  # fires with the request line that was cut
        self._listening: Any = None

    def request_line_with(self, seen: bytes) -> bytes | None:
        for line in seen.split(b"\r\n"):
            parts = line.split(b" ")
            if len(parts) >= 2 and parts[0] == b"GET" and self.target in parts[1]:
                return line
        return None

    def _cut_done(self, line: bytes) -> None:
        if not self.cut.called:
            self.cut.callback(line)

    def listen(self, interface: str = "127.0.0.1") -> int:
        """Start listening on a free port of ``interface``; returns the port number."""
        factory = Factory()

        def build(addr: Any) -> _FromClient:
            proto = _FromClient()
            proto.relay = self
            return proto

        factory.buildProtocol = build  # type: ignore[method-assign]
        factory.noisy = False
        self._listening = self.reactor.listenTCP(0, factory, interface=interface)
        return self._listening.getHost().port

    def stop(self) -> Any:
        return self._listening.stopListening() if self._listening is not None else None
