"""
What needs sockets of the outage and memory work: real pip against a proxy whose
upstream was killed with every page expired, and a client that reads nothing of
a big page (the kernel's socket buffers are part of what is measured).
"""

from __future__ import annotations

import socket

from pytest_twisted import ensureDeferred
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import Site

from .installers import run_pip, tool_bin
from .observe import ClientLog
from .proxy_rig import read_until_closed, until
from .wheels import build_wheel

DOZEN = [f"pcx-dozen-{i:02d}" for i in range(12)]


@ensureDeferred
async def test_pip_installs_with_the_upstream_killed_and_every_page_expired(serve_upstream, start_proxy, tmp_path):
    served = serve_upstream("json", {p: [build_wheel(p, "1.0")] for p in DOZEN})
    clock = Clock()  # the proxy's timers: pages expire, and the probe waits, when the test says
    running = await start_proxy(served.simple_url, clock=clock)
    clients = ClientLog.attach(running.proxy.site)
    pip = tool_bin("pip", "python")

    async def install(phase: str) -> None:
        target = tmp_path / phase
        result = await run_pip(
            ["install", "--target", str(target), *DOZEN], running.index_url, python=pip, home=tmp_path / f"home-{phase}"
        )
        assert result.code == 0, result.output
        installed = sorted(p.name for p in target.iterdir() if p.name.endswith(".dist-info"))
        assert installed == [f"pcx_dozen_{i:02d}-1.0.dist-info" for i in range(12)]

    await install("warm")
    fetched = len(served.upstream.log)
    clock.advance(running.proxy.settings.index_ttl + 1)  # every page has expired
    clients.mark("outage")
    await served.stop()  # the upstream is gone: connections refused
    await install("outage")

    assert len(served.upstream.log) == fetched
    health = running.proxy.upstream_health
    assert health.is_down
    registry = running.proxy.metrics.registry
    # one attempt found the upstream gone; nothing else waited on it
    assert registry.get_sample_value("pypicached_upstream_requests_total", {"outcome": "error"}) == 1
    pages = clients.matching(lambda r: r.is_page, since="outage")
    assert len(pages) == 12 and {r.cache for r in pages} == {"STALE"} and {r.code for r in pages} == {200}
    files = clients.matching(lambda r: r.is_file, since="outage")
    assert files and {r.cache for r in files} == {"HIT"}
    assert health.spared == 11  # all but the first page answered without trying the upstream


class BigList(Resource):
    """An upstream whose project list is bigger than every socket buffer between proxy and client."""

    isLeaf = True

    def __init__(self, names: int) -> None:
        super().__init__()
        rows = "".join(
            f'<a href="/simple/project-number-{i:07d}/">project-number-{i:07d}</a><br/>\n' for i in range(names)
        )
        self.body = f"<!DOCTYPE html><html><body>\n{rows}</body></html>\n".encode()

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        request.setHeader(b"Content-Type", b"text/html")
        return self.body


@ensureDeferred
async def test_a_client_that_reads_nothing_does_not_make_the_proxy_buffer_the_page(start_proxy):
    upstream = BigList(140_000)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(upstream))
    try:
        running = await start_proxy(f"http://127.0.0.1:{port.getHost().port}/simple/")
        reply = await running.get("/simple/", {"Accept": "text/html"})
        size = reply.length
        assert len(await reply.content()) == size > 9_000_000

        requests = []
        resource = running.proxy.site.resource
        render = resource.render
        resource.render = lambda request: (requests.append(request), render(request))[1]
        with socket.socket() as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.connect(("127.0.0.1", running.port_number))
            client.sendall(b"GET /simple/ HTTP/1.1\r\nHost: x\r\nAccept: text/html\r\nConnection: close\r\n\r\n")
            client.setblocking(False)
            await until(
                lambda: (
                    bool(requests) and requests[0].channel is not None and requests[0].channel.transport.producerPaused
                )
            )
            request = requests[0]
            stalled_at = request.sentLength
            for _ in range(200):  # the client still reads nothing; the proxy must not go on writing
                await until(lambda: True)
            transport = request.channel.transport
            buffered = len(transport.dataBuffer) + transport._tempDataLen
            # what left the proxy fits the kernel's buffers (4 MiB at most here), not the page
            assert request.sentLength == stalled_at < 6_000_000 < size
            assert buffered < 1_000_000
            data, closed = await read_until_closed(client)
        assert closed and data.endswith(b"</html>\n") and b"Content-Length: %d" % size in data
    finally:
        await port.stopListening()
