"""
The daemon fetches from the upstream through treq (``treq.client.HTTPClient``),
and treq's habits (asking for gzip, decoding it, keeping cookies, re-reading the
URL) do not reach the bytes: they are taken exactly as served.
"""

from __future__ import annotations

import gzip
from typing import Any

from treq.client import HTTPClient
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.testing import MemoryReactorClock
from twisted.web.resource import Resource

from pypicached.upstream.agent import upstream_http
from pypicached.upstream.body import read_body
from pypicached.upstream.breaker import UpstreamHealth
from pypicached.upstream.client import USER_AGENT, UpstreamClient
from pypicached.upstream.report import Unreported

from .fake_upstream import PIP_ACCEPT, FakeUpstream
from .memory import World, result_of

UPSTREAM = "http://devpi_server:3141/simple/"
SDIST = gzip.compress(b"pretend this is a tar archive" * 100, mtime=0)


class Served(Resource):
    """A page and a ``.tar.gz`` labelled gzip (as ``static.File`` labels one); what each request asked for."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[dict[bytes, list[bytes]]] = []

    def render_GET(self, request: Any) -> bytes:
        self.asked.append(dict(request.requestHeaders.getAllRawHeaders()))
        request.setHeader(b"Set-Cookie", b"session=1; Path=/")
        if request.path.endswith(b".tar.gz"):
            request.setHeader(b"Content-Encoding", b"gzip")
            return SDIST
        return b"<a href='pkg-1.0.tar.gz'>pkg-1.0.tar.gz</a>"


def fetch(http: Any, flush: Any, url: str, headers: dict[str, str] | None = None) -> tuple[Any, bytes]:
    clock = MemoryReactorClock()
    client = UpstreamClient(http, clock=clock, health=UpstreamHealth(UPSTREAM, clock), report=Unreported())
    pending = client.get(url, headers)
    flush()
    response = result_of(pending)
    body = read_body(client, response)
    flush()
    return response, result_of(body)


def test_a_client_over_stubtreq_fetches_a_page_and_a_file():
    served = Served()
    stub = StubTreq(served)
    response, body = fetch(stub, stub.flush, UPSTREAM + "pkg/")
    assert response.code == 200 and b"pkg-1.0.tar.gz" in body
    assert served.asked[0][b"User-Agent"] == [USER_AGENT.encode()]
    response, body = fetch(stub, stub.flush, UPSTREAM + "pkg/pkg-1.0.tar.gz")
    assert response.code == 200
    assert body == gzip.decompress(SDIST)  # bare treq decodes what is labelled gzip: the daemon's must not


def test_the_daemons_treq_client_takes_bytes_as_served():
    served = Served()
    agent = RequestTraversalAgent(served)
    http = upstream_http(agent)
    assert isinstance(http, HTTPClient)
    response, body = fetch(http, agent.flush, UPSTREAM + "pkg/pkg-1.0.tar.gz")
    assert body == SDIST
    assert response.headers.getRawHeaders(b"Content-Encoding") == [b"gzip"]
    response, body = fetch(http, agent.flush, UPSTREAM + "pkg/", {"Accept-Encoding": "gzip"})
    assert response.headers.getRawHeaders(b"Content-Encoding") is None  # not treq's empty one
    file, page = served.asked
    assert b"Accept-Encoding" not in file and b"Cookie" not in page  # nothing treq adds, no cookie kept
    assert page[b"Accept-Encoding"] == [b"gzip"]
    assert not [name for name in file | page if name.lower().startswith(b"x-pypicached")]


def test_the_daemon_fetches_through_treq(make_world):
    world = make_world()
    assert all(isinstance(source.client.http, HTTPClient) for source in world.proxy.sources)


def test_a_gzipped_page_is_counted_by_its_wire_bytes(dists, make_world):
    world: World = make_world(FakeUpstream(dists, gzip_pages=True))
    ledger = world.proxy.metrics.ledger.all_time
    before = ledger.fetched
    response = world.get("/simple/pcx-alpha/", {"Accept": PIP_ACCEPT})
    assert response.code == 200 and response.header("Content-Encoding") is None
    fetched = ledger.fetched - before
    (asked,) = world.upstream.requests("/simple/pcx-alpha/")
    assert asked.accept_encoding == "gzip"
    wire = world.upstream_get("/simple/pcx-alpha/", {"Accept": asked.accept or "", "Accept-Encoding": "gzip"}).body
    assert wire[:2] == b"\x1f\x8b" and fetched == len(wire) < len(gzip.decompress(wire))


class Loop(Resource):
    """Redirects every request to itself."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setResponseCode(302)
        request.setHeader(b"Location", request.path)
        return b""


def test_redirects_are_followed_under_treq_and_a_loop_is_answered_anyway(make_world):
    world = make_world(Loop())
    response = world.get("/simple/pcx-alpha/", {"Accept": PIP_ACCEPT})
    assert response.code == 502 and b"redirect" in response.body.lower()
    assert not world.proxy.upstream_health.is_down  # the upstream did answer
