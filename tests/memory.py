"""
In-memory HTTP for tests: the proxy and its fake upstream talk through
``iosim`` pumps on one ``Clock``, with disk work inline, so a test drives
timeouts, probes and TTLs by advancing the clock and never opens a socket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from twisted.web.server import Site
from zope.interface import implementer

from pypicached.config import Settings
from pypicached.cache.disk import run_inline
from pypicached.ops.health import MAX_LAG
from pypicached.service import Proxy

from .fake_upstream import FakeUpstream

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


@attrs.define
class _Endpoints:
    reactor: MemoryReactorClock

    def endpointForURI(self, uri: Any) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(self.reactor, uri.host, uri.port)


@implementer(IAgent)
class SiteAgent:
    """An ``IAgent`` whose every connection goes to ``site``, in memory, until ``flush`` moves the bytes."""

    def __init__(self, site: Site) -> None:
        self._site = site
        self._connector = MemoryReactorClock()
        self._agent = Agent.usingEndpointFactory(self._connector, _Endpoints(self._connector))
        self._pumps: list[iosim.IOPump] = []

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None, bodyProducer: Any = None) -> Deferred:
        d = self._agent.request(method, uri, headers, bodyProducer)
        _, port, factory, _, _ = self._connector.tcpClients.pop()
        client_address = IPv4Address("TCP", "127.0.0.1", 40000 + len(self._pumps))
        server_address = IPv4Address("TCP", "127.0.0.1", port)
        server = self._site.buildProtocol(client_address)
        client = factory.buildProtocol(server_address)
        self._pumps.append(iosim.connect(
            server, iosim.FakeTransport(server, isServer=True, hostAddress=server_address, peerAddress=client_address),
            client, iosim.FakeTransport(client, isServer=False, hostAddress=client_address, peerAddress=server_address),
            greet=False,
        ))
        return d

    def flush(self) -> bool:
        """Move every byte waiting on any connection; whether anything moved."""
        moved = False
        for pump in list(self._pumps):
            moved = pump.flush() or moved
            if pump.clientIO.disconnected and pump.serverIO.disconnected:
                self._pumps.remove(pump)
        return moved


@implementer(IAgent)
class ScriptedAgent:
    """
    The upstream's network as a test sets it: working (``mode`` None), refusing
    connections, failing name resolution, or accepting and never answering.
    """

    def __init__(self, inner: IAgent) -> None:
        self.inner = inner
        self.mode: str | None = None
        self.attempts = 0
        self.hanging: list[Deferred] = []

    def request(self, method: bytes, uri: bytes, headers: Headers | None = None, bodyProducer: Any = None) -> Deferred:
        self.attempts += 1
        if self.mode == "refuse":
            return fail(ConnectionRefusedError("Connection was refused by other side"))
        if self.mode == "dns":
            return fail(DNSLookupError("upstream.test"))
        if self.mode == "hang":
            d: Deferred = Deferred()
            self.hanging.append(d)
            return d
        return self.inner.request(method, uri, headers, bodyProducer)


class World:
    """A proxy and a fake upstream on one ``Clock``, joined in memory."""

    def __init__(self, dists: Any, cache_dir: Path, flavour: str = "json", **settings: Any) -> None:
        self.clock = MemoryReactorClock()
        self.upstream = upstream = FakeUpstream(dists, flavour, reactor=self.clock)  # type: ignore[arg-type]
        upstream.base_url = "http://upstream.test"
        self._upstream_agent = SiteAgent(Site(upstream))
        self.network = ScriptedAgent(self._upstream_agent)
        self.proxy = Proxy(
            Settings(upstream=upstream.simple_url, cache_dir=cache_dir, **settings),
            self.clock, clock=self.clock, run_in_thread=run_inline, agent=self.network,
        )
        self.proxy.start()
        self._client = SiteAgent(self.proxy.site)

    def flush(self) -> None:
        """Run everything that can run now, without moving the clock on."""
        for _ in range(1000):
            self.clock.advance(0)
            if not (self._upstream_agent.flush() | self._client.flush()):
                return
        raise AssertionError("the pumps never settled")

    def advance(self, seconds: float) -> None:
        """
        Move the clock on in steps shorter than the heartbeat's stall limit, letting
        what became due run at each: ``/health`` then sees time pass, not a stalled loop.
        """
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(MAX_LAG - 1, end - self.clock.seconds()))
            self.flush()

    def request(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> "Deferred[IResponse]":
        sent = Headers({k: [v] for k, v in (headers or {}).items()})
        d = self._client.request(method.encode(), b"http://pip.example.lan" + path.encode(), sent)
        self.flush()
        return d

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> "Reply":
        """The whole answer to a request that the proxy answers without waiting on the clock."""
        return self.reply(self.request(path, headers, method))

    def reply(self, pending: "Deferred[IResponse]") -> "Reply":
        """The answer to a request made earlier, which must have arrived by now."""
        self.flush()
        response = _result(pending)
        body = readBody(response)
        self.flush()
        return Reply(response, _result(body))

    def page(self, project: str) -> "Reply":
        return self.get(f"/simple/{project}/", {"Accept": PIP_ACCEPT})

    def stop(self) -> None:
        from twisted.internet.defer import ensureDeferred

        d = ensureDeferred(self.proxy.stop())
        self.flush()
        _result(d)


def answered(d: Deferred) -> bool:
    """Whether a request made earlier has had its answer (``called`` is also true while it waits on another Deferred)."""
    box: list[Any] = []
    d.addBoth(lambda result: (box.append(result), result)[1])
    return bool(box)


def _result(d: Deferred) -> Any:
    """A Deferred's result now; fails the test if it has not fired."""
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "no answer yet"
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


@attrs.frozen
class Reply:
    response: IResponse
    body: bytes

    @property
    def code(self) -> int:
        return self.response.code

    def header(self, name: str) -> str | None:
        values = self.response.headers.getRawHeaders(name)
        return values[0] if values else None
