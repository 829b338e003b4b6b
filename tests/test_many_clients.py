"""Many clients (#19 part 4): thousands of idle connections, then a normal request, all served."""

from __future__ import annotations

import resource
import socket

from pytest_twisted import ensureDeferred
from twisted.internet import reactor
from twisted.internet.task import deferLater

from .proxy_rig import until
from .test_systemd import UNITS

IDLE = 3000
#: Connections opened at once: fewer than the listen backlog (50), so none waits on a SYN retry.
BATCH = 40


def test_both_units_raise_the_descriptor_limit():
    for unit in ("pypicached.service", "pypicached@.service"):
        lines = (UNITS / unit).read_text().splitlines()
        limits = [int(line.split("=", 1)[1]) for line in lines if line.startswith("LimitNOFILE=")]
        assert limits and limits[-1] >= 65536, unit


@ensureDeferred
async def test_3000_idle_connections_then_a_request_are_served(fake_upstream_json, start_proxy):
    # this process holds both ends of every connection, and the proxy's own descriptors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * IDLE + 512
    assert hard == resource.RLIM_INFINITY or hard >= needed, f"the hard limit {hard} is below {needed}"
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    proxy = await start_proxy(fake_upstream_json.simple_url)
    accepted = []
    build = proxy.proxy.site.buildProtocol
    proxy.proxy.site.buildProtocol = lambda addr: accepted.append(addr) or build(addr)  # type: ignore[method-assign]
    clients: list[socket.socket] = []
    try:
        for _ in range(IDLE // BATCH):
            for _ in range(BATCH):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", proxy.port_number))
                clients.append(s)
            # the reactor accepts this batch before the next one connects
            await until(lambda: len(accepted) == len(clients), turns=100000)
        reply = await proxy.get("/simple/pcx-alpha/")
        assert reply.code == 200 and b"pcx_alpha" in await reply.content()
        await deferLater(reactor, 0, lambda: None)
        assert len(accepted) == IDLE + 1
        for s in clients:  # every idle connection is still open: nothing to read, not closed
            try:
                data = s.recv(1)
            except BlockingIOError:
                continue
            raise AssertionError(f"an idle connection was closed or answered: {data!r}")
    finally:
        for s in clients:
            s.close()
        if soft != resource.RLIM_INFINITY and soft < needed:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
