"""
In-memory HTTP for tests: the proxy and its fake upstream talk through
``iosim`` pumps on one ``Clock``, with disk work inline, so a test drives
timeouts, probes and TTLs by advancing the clock and never opens a socket.

The upstream is a ``FakeUpstream`` (built from dists, or passed in built with
options) or any other ``Resource`` (an upstream that lies), always at
``http://upstream.test``; clients reach the proxy at ``http://pip.example.lan``
(or any URL a test passes whole: every connection goes to the proxy).
"""

from __future__ import annotations

import copy
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
from twisted.web.client import Agent, BrowserLikeRedirectAgent, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer

from pypicached.base.disk import run_inline
from pypicached.config import Settings
from pypicached.ops.health import MAX_LAG
from pypicached.service import Proxy

from .fake_upstream import FakeUpstream
from .proxy_rig import ResponseView

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
UPSTREAM = "http://upstream.test"


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
        self._pumps.append(
            iosim.connect(
                server,
                iosim.FakeTransport(server, isServer=True, hostAddress=server_address, peerAddress=client_address),
                client,
                iosim.FakeTransport(client, isServer=False, hostAddress=client_address, peerAddress=server_address),
                greet=False,
            )
        )
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
    """A proxy and an upstream on one ``Clock``, joined in memory."""

    base_url = "http://pip.example.lan"

    def __init__(
        self, upstream: Any, cache_dir: Path, flavour: str = "json", now: float = 0.0, **settings: Any
    ) -> None:
        """
        ``upstream``: the dists of a ``FakeUpstream`` of ``flavour``, a ``FakeUpstream``, or any ``Resource``;
        ``now``: the clock's time at the start (POSIX seconds).
        """
        self.clock = MemoryReactorClock()
        self.clock.advance(now)
        self._agents: list[SiteAgent] = []  # every connection, shared with chained worlds
        self._chained: list[World] = []
        if not isinstance(upstream, Resource):
            upstream = FakeUpstream(upstream, flavour)  # type: ignore[arg-type]
        if isinstance(upstream, FakeUpstream):
            upstream.base_url = UPSTREAM
            upstream._reactor = self.clock  # its bodies go out one chunk per turn of this clock
        self.upstream = upstream
        self._upstream_agent = self._connect(Site(upstream))
        self.network = ScriptedAgent(self._upstream_agent)
        self._start_with(dict(upstream=UPSTREAM + "/simple/", cache_dir=cache_dir, **settings))

    def _connect(self, site: Site) -> SiteAgent:
        agent = SiteAgent(site)
        self._agents.append(agent)
        return agent

    def _start_with(self, values: dict[str, Any]) -> None:
        """Start a proxy with settings from flat ``values`` (as ``Settings.of`` takes them), kept for ``restart``."""
        self._values = values
        self._start(Settings.of(**values))

    def _start(self, settings: Settings) -> None:
        # redirects followed, as the daemon's pooled agent does
        self.proxy = Proxy(
            settings,
            self.clock,
            clock=self.clock,
            run_in_thread=run_inline,
            agent=BrowserLikeRedirectAgent(self.network),
        )
        self.proxy.start()
        self._client = self._connect(self.proxy.site)

    def restart(self, **changes: Any) -> None:
        """Stop the proxy (if it runs) and start a new one on the same cache, with ``changes`` to its settings."""
        self.stop()
        self._start_with({**self._values, **changes})

    def chained(self, cache_dir: Path, **settings: Any) -> World:
        """A second proxy on this clock whose upstream is this world's proxy (a site's proxy behind a central one)."""
        other = copy.copy(self)  # the clock, the upstream and the list of connections are shared
        other._chained = []
        other.network = ScriptedAgent(self._connect(self.proxy.site))
        other._start_with(dict(upstream=self.base_url + "/simple/", cache_dir=cache_dir, **settings))
        self._chained.append(other)
        return other

    def flush(self) -> None:
        """Run everything that can run now, without moving the clock on."""
        for _ in range(1000):
            self.clock.advance(0)
            moved = False
            for agent in list(self._agents):
                moved = agent.flush() or moved
            if not moved:
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

    def request(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET", flush: bool = True
    ) -> Deferred[IResponse]:
        """
        Send a request to the proxy (``path``, or a whole URL); with ``flush=False`` its bytes
        wait for the next flush, so that several requests arrive together.
        """
        url = path if "://" in path else self.base_url + path
        d = self._client.request(method.encode(), url.encode(), _headers(headers))
        if flush:
            self.flush()
        return d

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> Reply:
        """The whole answer to a request that the proxy answers without waiting on the clock."""
        return self.reply(self.request(path, headers, method))

    def upstream_get(self, path: str, headers: dict[str, str] | None = None) -> Reply:
        """The upstream's own answer to ``GET path``, asked directly (not through the proxy)."""
        d = self._upstream_agent.request(b"GET", (UPSTREAM + path).encode(), _headers(headers))
        return self.reply(d)

    def response(self, pending: Deferred[IResponse]) -> IResponse:
        """The response (status and headers, body unread) to a request made earlier: it must have arrived."""
        self.flush()
        return result_of(pending)

    def read(self, response: IResponse) -> Deferred[bytes]:
        """Start reading a body and move every byte that can move; see ``result_of`` and ``failure_of``."""
        body = readBody(response)
        self.flush()
        return body

    def reply(self, pending: Deferred[IResponse]) -> Reply:
        """The answer to a request made earlier, which must have arrived by now."""
        response = self.response(pending)
        return Reply(response, result_of(self.read(response)))

    def page(self, project: str) -> Reply:
        return self.get(f"/simple/{project}/", {"Accept": PIP_ACCEPT})

    def stop(self) -> None:
        """Stop the proxy (and any chained to it); does nothing to one already stopped."""
        from twisted.internet.defer import ensureDeferred

        for other in self._chained:
            other.stop()
        d = ensureDeferred(self.proxy.stop())
        self.flush()
        result_of(d)


def _headers(headers: dict[str, str] | None) -> Headers:
    return Headers({k: [v] for k, v in (headers or {}).items()})


def answered(d: Deferred) -> bool:
    """
    Whether a request made earlier has had its answer (``called`` is also true while
    it waits on another Deferred).
    """
    box: list[Any] = []
    d.addBoth(lambda result: (box.append(result), result)[1])
    return bool(box)


def outcome_of(d: Deferred) -> Any:
    """What a Deferred fired with, result or ``Failure``; fails the test if it has not fired."""
    box: list[Any] = []
    d.addBoth(lambda result: (box.append(result), None)[1])
    assert box, "no answer yet"
    return box[0]


def failure_of(d: Deferred) -> Failure:
    """How a Deferred failed; fails the test if it has not fired, or succeeded."""
    outcome = outcome_of(d)
    assert isinstance(outcome, Failure), f"succeeded with {outcome!r}"
    return outcome


def result_of(d: Deferred) -> Any:
    """A Deferred's result now (its failure raised); fails the test if it has not fired."""
    outcome = outcome_of(d)
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome


@attrs.frozen
class Reply(ResponseView):
    """A whole answer: its status line and headers, and its body as read."""

    response: IResponse
    body: bytes
