"""Hostile and broken clients: refused cleanly, never a 5xx, never a file or fetch outside the cache."""

from __future__ import annotations

import re
import socket

from pytest_twisted import ensureDeferred
from twisted.internet.task import Clock

from .proxy_rig import read_until_closed, until

PATHS = [
    "/simple/../../etc/passwd",
    "/packages/../../../etc/passwd",
    "/packages/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/packages/..%2f..%2f..%2fetc%2fpasswd",
    "/packages/%2fetc%2fpasswd",
    "/packages/%252e%252e/etc/passwd",
    "/packages/..\\..\\etc\\passwd",
    "/packages/%5c..%5c..%5cetc%5cpasswd",
    "//etc/passwd",
    "/simple//etc/passwd",
    "/packages//etc/passwd",
    "/packages/./x.whl",
    "/%00",
    "/simple/%00/",
    "/packages/a%00b.whl",
    "/packages/%c0%ae%c0%ae/etc/passwd",
    "/simple/%3Cscript%3E/",
    "/simple/" + "a" * 300 + "/",
    "/packages/" + "b" * 300 + ".whl",
    "/packages/ab/" + "%41" * 300 + "/x.whl",
    "/packages/a-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1-1.tar.gz",
    "/pypi/../../etc/passwd/json",
    "/pypi/pcx-alpha/..%2f..%2fetc/json",
    "http://evil.example/simple/pcx-alpha/",
    "https://evil.example:443/packages/x.whl",
]


def status_of(reply: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", reply)
    assert match, reply[:200]
    return int(match.group(1))


def all_files(root) -> set:
    return {p for p in root.rglob("*") if p.is_file()}


@ensureDeferred
async def test_hostile_requests(fake_upstream_json, tmp_path, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url, cache_dir=tmp_path / "cache")
    await (await proxy.get("/simple/pcx-alpha/")).content()
    await proxy.proxy.disk_work.idle()
    fake_upstream_json.clear_log()
    before = all_files(tmp_path)

    async def send(request: bytes) -> bytes:
        return await proxy.raw(request)

    statuses = {}
    for path in PATHS:
        reply = await send(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
        statuses[path] = status_of(reply)
        assert statuses[path] in (400, 404), (path, reply[:300])
        assert b"X-Pypi-Cache: PASS" in reply

    for method in ("POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH"):
        reply = await send(
            f"{method} /simple/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        assert status_of(reply) == 405 and b"Allow: GET, HEAD" in reply, method
    reply = await send(b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 405
    reply = await send(b"GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")  # Twisted answers this one itself
    assert status_of(reply) in (400, 404, 405)

    reply = await send(b"GET /simple/" + b"a" * 20000 + b"/ HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(reply) == 414
    reply = await send(b"GET /simple/" + b"a" * 9000 + b"/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 414
    reply = await send(b"GET /simple/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
    assert status_of(reply) == 431
    many = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(200))
    reply = await send(b"GET /simple/ HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert status_of(reply) == 431
    reply = await send(b"GET /simple/\x00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(reply) == 400
    reply = await send(b"GARBAGE\r\n\r\n")
    assert status_of(reply) == 400

    # a hostile Host header never reaches a response: links and redirects are relative
    hostile = 'evil.example"><script>alert(1)</script>'
    for path in (
        "/simple/pcx-alpha/",
        "/simple/PCX_Alpha/",
        "/simple/pcx-alpha",
        "/simple/",
        "/",
        "/pypi/pcx-alpha/json",
        "/nope",
    ):
        for accept in ("text/html", "application/vnd.pypi.simple.v1+json"):
            reply = await send(
                f"GET {path} HTTP/1.1\r\nHost: {hostile}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n".encode()
            )
            assert status_of(reply) < 500
            assert b"evil" not in reply and b"<script>" not in reply, path

    # nothing was written outside the cache, and the upstream saw only the legitimate requests
    assert {p for p in all_files(tmp_path) - before if tmp_path / "cache" not in p.parents} == set()
    # (a file name's possible projects may be looked up on the index, never more than three)
    seen = [r.path for r in fake_upstream_json.log]
    assert fake_upstream_json.file_requests() == [], seen
    assert all(p in ("/simple/", "/pypi/pcx-alpha/json") or p.startswith("/simple/a-1-") for p in seen), seen
    assert len([p for p in seen if p.startswith("/simple/a-1-")]) <= 3, seen


def timer_pending(clock: Clock, delay: float) -> bool:
    return any(abs(c.getTime() - clock.seconds() - delay) < 1e-6 for c in clock.getDelayedCalls())


@ensureDeferred
async def test_slow_headers_get_a_408(fake_upstream_json, start_proxy):
    clock = Clock()
    proxy = await start_proxy(fake_upstream_json.simple_url, clock=clock, header_timeout=30)
    client = socket.create_connection(("127.0.0.1", proxy.port_number))
    client.setblocking(False)
    try:
        client.send(b"GET /simple/ HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        await until(lambda: timer_pending(clock, 30))
        clock.advance(31)
        reply, closed = await read_until_closed(client)
        assert closed and status_of(reply) == 408
    finally:
        client.close()


@ensureDeferred
async def test_a_client_that_stops_reading_is_dropped_and_the_download_goes_on(fake_upstream_json, dists, start_proxy):
    clock = Clock()
    proxy = await start_proxy(
        fake_upstream_json.simple_url, clock=clock, client_timeout=60, response_timeout=0, idle_timeout=0
    )
    big = dists["pcx-big"][0]
    await (await proxy.get("/simple/pcx-big/")).content()
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", proxy.port_number))
    client.setblocking(False)
    try:
        client.send(f"GET {big.pypi_path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stored = proxy.proxy.settings.cache_dir / "files" / big.pypi_path.lstrip("/")
        # The download completes on its own while the client reads nothing; the only
        # 60 s timer left is then the sender's (the connection's idle timer is off
        # while a request is answered): the proxy paused because the client's socket is full.
        await until(lambda: stored.exists() and timer_pending(clock, 60))
        assert stored.read_bytes() == big.data
        clock.advance(61)
        received, closed = await read_until_closed(client)
        assert closed and len(received) < big.size
    finally:
        client.close()
