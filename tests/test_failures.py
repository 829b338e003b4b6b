"""Upstream outages, lying upstreams, stalled bodies and a failing disk: each provoked, each answered."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import socket
from pathlib import Path
from urllib.parse import urljoin

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from pypicached.cache.pagekind import PROJECT, PageKey

from .observe import ClientLog
from .proxy_rig import settled, start_proxy as start_rig, until

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


def files_in(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "files").rglob("*") if p.is_file())


def tmp_in(cache: Path) -> list[Path]:
    return sorted((cache / "tmp").iterdir())


async def page(proxy, project: str = "pcx-alpha"):
    response = await proxy.get(f"/simple/{project}/", {"Accept": PIP_ACCEPT})
    return response, await response.content()


GZ_SDIST = gzip.compress(b"pretend this is a tar archive" * 100, mtime=0)


class Liar(Resource):
    """An upstream that answers with whatever broken thing a test names in ``mode``."""

    isLeaf = True
    mode = "malformed-json"

    def render_GET(self, request):  # type: ignore[no-untyped-def]
        if self.mode == "malformed-json":
            request.setHeader(b"Content-Type", b"application/vnd.pypi.simple.v1+json")
            return b'{"files": [ {"url": '
        if self.mode == "not-a-page":
            request.setHeader(b"Content-Type", b"application/vnd.pypi.simple.v1+json")
            return b'["files"]'
        if self.mode == "redirect-loop":
            request.setResponseCode(302)
            request.setHeader(b"Location", request.path)
            return b""
        if self.mode == "gzip-labelled":  # what static.File does for a .tar.gz
            if request.path.endswith(b".tar.gz"):
                request.setHeader(b"Content-Type", b"application/x-tar")
                request.setHeader(b"Content-Encoding", b"gzip")
                return GZ_SDIST
            request.setHeader(b"Content-Type", b"application/vnd.pypi.simple.v1+json")
            files = [{"filename": "pkg-1.0.tar.gz", "url": "/files/pkg-1.0.tar.gz",
                      "hashes": {"sha256": hashlib.sha256(GZ_SDIST).hexdigest()}}]
            return json.dumps({"meta": {"api-version": "1.0"}, "name": "pkg", "files": files}).encode()
        if self.mode == "chunked-cut":
            request.setHeader(b"Content-Type", b"application/vnd.pypi.simple.v1+json")
            request.write(b'{"meta": {"api-version": "1.1"}, "files": [')  # chunked: no length
            request.transport.abortConnection()
            return NOT_DONE_YET
        raise AssertionError(self.mode)


@pytest.fixture
def liar():
    resource = Liar()
    port = pytest_twisted.blockon(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Site(resource)))
    resource.url = f"http://127.0.0.1:{port.getHost().port}/simple/"
    yield resource
    pytest_twisted.blockon(port.stopListening())




# --- index pages ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["malformed-json", "not-a-page", "redirect-loop", "chunked-cut"])
@ensureDeferred
async def test_a_lying_upstream_is_a_502_never_a_404(liar, mode, start_proxy):
    liar.mode = mode
    proxy = await start_proxy(liar.url)
    response, body = await page(proxy)
    assert response.code == 502, body
    assert response.header("Content-Type") == "text/plain; charset=utf-8"
    assert response.header("X-Pypi-Cache") == "ERROR"
    assert body.count(b"\n") == 1 and b"upstream" in body


@ensureDeferred
async def test_a_tar_gz_labelled_gzip_is_stored_as_served(liar, start_proxy):
    liar.mode = "gzip-labelled"
    proxy = await start_proxy(liar.url)
    response, body = await page(proxy, "pkg")
    href = json.loads(body)["files"][0]["url"]
    for status in ("MISS", "HIT"):
        response = await proxy.get(urljoin(proxy.base_url + "/simple/pkg/", href), {"Accept-Encoding": "gzip"})
        assert response.code == 200 and response.header("X-Pypi-Cache") == status
        assert response.header("Content-Encoding") is None
        assert await response.content() == GZ_SDIST


@ensureDeferred
async def test_connection_refused_and_5xx_are_502(fake_upstream_json, start_proxy):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    proxy = await start_proxy(f"http://127.0.0.1:{closed_port}/simple/")
    response, body = await page(proxy)
    assert response.code == 502 and b"refused" in body.lower()

    proxy = await start_proxy(fake_upstream_json.simple_url)
    fake_upstream_json.behaviour["/simple/pcx-alpha/"] = "status:503"
    response, body = await page(proxy)
    assert response.code == 502 and b"503" in body


@ensureDeferred
async def test_no_response_headers_is_a_504_after_the_timeout(fake_upstream_json, start_proxy):
    clock = Clock()
    proxy = await start_proxy(fake_upstream_json.simple_url, clock=clock, response_timeout=30)
    fake_upstream_json.behaviour["/simple/pcx-alpha/"] = "hang"
    pending = proxy.get("/simple/pcx-alpha/")
    answered = []
    pending.addBoth(lambda r: answered.append(r) or r)
    await fake_upstream_json.wait_for_requests("/simple/pcx-alpha/")
    clock.advance(29)
    assert answered == []
    clock.advance(2)
    response = await pending
    assert response.code == 504
    assert b"timed out" in await response.content()


@ensureDeferred
async def test_a_stalled_page_body_is_abandoned(fake_upstream_json, start_proxy):
    clock = Clock()
    # no headers timeout here: advancing the clock must trip only the idle timer
    proxy = await start_proxy(fake_upstream_json.simple_url, clock=clock, idle_timeout=60, response_timeout=0)
    gate = fake_upstream_json.gate("/simple/pcx-alpha/")
    fake_upstream_json.behaviour["/simple/pcx-alpha/"] = "gate:10"
    pending = proxy.get("/simple/pcx-alpha/")
    await gate.reached(1)
    # the proxy reads the body: its idle timer is armed (other timers run on this clock too)
    await until(lambda: any(getattr(c.func, "__name__", "") == "_stall" for c in clock.getDelayedCalls()))
    clock.advance(61)
    response = await pending
    assert response.code == 504 and b"stalled" in await response.content()


@ensureDeferred
async def test_stale_copy_served_when_revalidation_fails(fake_upstream_json, start_proxy):
    clock = Clock()
    proxy = await start_proxy(fake_upstream_json.simple_url, clock=clock, index_ttl=600)
    response, good = await page(proxy)
    assert response.header("X-Pypi-Cache") == "MISS"

    clock.advance(601)
    fake_upstream_json.behaviour["/simple/pcx-alpha/"] = "status:500"
    response, body = await page(proxy)
    assert response.code == 200 and body == good
    assert response.header("X-Pypi-Cache") == "STALE"
    assert response.header("Warning") == '111 pypicached "Revalidation Failed"'
    # during the outage the next requests do not each wait on the upstream again
    asked = fake_upstream_json.count("/simple/pcx-alpha/")
    response, _ = await page(proxy)
    assert response.header("X-Pypi-Cache") == "STALE"
    assert fake_upstream_json.count("/simple/pcx-alpha/") == asked

    # a week later, still served: stale_if_error defaults to no limit
    clock.advance(7 * 86400)
    response, body = await page(proxy)
    assert response.code == 200 and body == good and response.header("X-Pypi-Cache") == "STALE"

    # the upstream is back: fresh again
    del fake_upstream_json.behaviour["/simple/pcx-alpha/"]
    clock.advance(60)
    response, _ = await page(proxy)
    assert response.header("X-Pypi-Cache") == "REVALIDATED"


@ensureDeferred
async def test_stale_if_error_limit(fake_upstream_json, start_proxy):
    clock = Clock()
    proxy = await start_proxy(fake_upstream_json.simple_url, clock=clock, index_ttl=600, stale_if_error=3600)
    await page(proxy)
    fake_upstream_json.behaviour["/simple/pcx-alpha/"] = "status:502"
    clock.advance(600 + 3000)
    response, _ = await page(proxy)
    assert response.header("X-Pypi-Cache") == "STALE"
    clock.advance(1000)  # the copy is now too old to stand in; the probe finds the upstream answering
    await until(lambda: not proxy.proxy.upstream_health.is_down)
    response, body = await page(proxy)
    assert response.code == 502 and response.header("X-Pypi-Cache") == "ERROR"


@ensureDeferred
async def test_stale_while_revalidate(fake_upstream_json, start_proxy):
    clock = Clock()
    proxy = await start_proxy(fake_upstream_json.simple_url, clock=clock, index_ttl=600, stale_while_revalidate=300)
    _, before = await page(proxy)
    fake_upstream_json.touch("pcx-alpha")
    fake_upstream_json.behaviour["/simple/pcx-alpha/"] = ["hang"]
    clock.advance(700)
    responses = [await proxy.get("/simple/pcx-alpha/", {"Accept": PIP_ACCEPT}) for _ in range(3)]
    # answered at once, although the upstream has not answered the refresh yet
    assert [r.header("X-Pypi-Cache") for r in responses] == ["UPDATING"] * 3
    assert [await r.content() for r in responses] == [before] * 3
    await fake_upstream_json.wait_for_requests("/simple/pcx-alpha/", count=2)
    assert fake_upstream_json.count("/simple/pcx-alpha/") == 2  # one background refresh
    fake_upstream_json.release_pending("/simple/pcx-alpha/")
    await proxy.proxy.pages.settled(PageKey(PROJECT, "pcx-alpha"))
    response, after = await page(proxy)
    assert response.header("X-Pypi-Cache") == "HIT" and after != before


@ensureDeferred
async def test_offline_serves_the_cache_and_refuses_the_rest(fake_upstream_json, dists, tmp_path, start_proxy):
    online = await start_proxy(fake_upstream_json.simple_url)
    wheel = next(d for d in dists["pcx-alpha"] if d.filename.endswith("2.0-py3-none-any.whl"))
    await page(online)
    assert await (await online.get(wheel.pypi_path)).content() == wheel.data
    await online.stop()
    fake_upstream_json.clear_log()

    offline = await start_rig(fake_upstream_json.simple_url, online.proxy.settings.cache_dir, offline=True, index_ttl=0)
    try:
        response, _ = await page(offline)
        assert response.code == 200 and response.header("X-Pypi-Cache") == "STALE"
        response = await offline.get(wheel.pypi_path)
        assert response.header("X-Pypi-Cache") == "HIT" and await response.content() == wheel.data
        for path in ("/simple/pcx-beta/", "/packages/+f/00/x.whl", "/pypi/pcx-alpha/json"):
            response = await offline.get(path)
            assert response.code == 503, path
            assert b"offline" in await response.content()
    finally:
        await offline.stop()
    assert fake_upstream_json.log == []


# --- files ---------------------------------------------------------------------------


async def _start_file(proxy, fake, wheel, behaviour):
    await page(proxy, wheel.project)
    fake.behaviour[wheel.pypi_path] = behaviour
    return [proxy.get(wheel.pypi_path) for _ in range(3)]


@pytest.mark.parametrize("behaviour", ["truncate:500000", "corrupt", "status:500", "drop"])
@ensureDeferred
async def test_bad_file_bodies_are_never_stored_or_served_whole(fake_upstream_json, dists, behaviour, start_proxy):
    clock = Clock()  # the proxy's timers only: the upstream-down probe waits for the test
    proxy = await start_proxy(fake_upstream_json.simple_url, clock=clock)
    clients = ClientLog.attach(proxy.proxy.site)
    big = dists["pcx-big"][0]
    cache = proxy.proxy.settings.cache_dir
    has_body = behaviour in ("truncate:500000", "corrupt")
    # a body held at its first bytes until all three clients have joined the one download
    started = await _start_file(proxy, fake_upstream_json, big, behaviour + ("+gate:1000" if has_body else ""))
    if has_body:
        await fake_upstream_json.gate(big.pypi_path).reached(1)
        await until(lambda: len(clients.for_file(big.filename)) == 3)
        fake_upstream_json.gate(big.pypi_path).open()
    for pending in started:
        try:
            response = await pending
        except Exception:
            continue  # the connection was broken before headers: fine
        if response.code == 200:
            with pytest.raises(Exception):  # the body is never complete
                await response.content()
        elif response.code == 503:  # came after a failure had marked the upstream down
            assert behaviour in ("status:500", "drop") and b"is down since" in await response.content()
        else:
            assert response.code == 502 and response.header("X-Pypi-Cache") == "ERROR"
    await settled(proxy, big.pypi_path)
    assert files_in(cache) == [] and tmp_in(cache) == []
    if behaviour == "corrupt":
        assert proxy.proxy.files.digest_mismatches == 1
    del fake_upstream_json.behaviour[big.pypi_path]
    health = proxy.proxy.upstream_health
    if behaviour in ("status:500", "drop"):  # no answer, or a 5xx: the upstream is down for everyone
        assert health.is_down
        response = await proxy.get(big.pypi_path)
        assert response.code == 503 and b"is down since" in await response.content()
        clock.advance(1)  # the probe is due; its answer brings the upstream back
        await until(lambda: not health.is_down)
    assert not health.is_down  # a broken or lying body is the file's fault, not the upstream's
    # the next request tries again, and gets the real file
    response = await proxy.get(big.pypi_path)
    assert await response.content() == big.data


@ensureDeferred
async def test_a_stalled_download_is_abandoned_and_clients_broken(fake_upstream_json, dists, start_proxy):
    clock = Clock()
    proxy = await start_proxy(fake_upstream_json.simple_url, clock=clock, idle_timeout=60)
    big = dists["pcx-big"][0]
    gate = fake_upstream_json.gate(big.pypi_path)
    requests = await _start_file(proxy, fake_upstream_json, big, "gate:300000")
    await gate.reached(1)
    responses = [await r for r in requests]
    assert all(r.code == 200 and r.length == big.size for r in responses)
    clock.advance(59)
    assert proxy.proxy.files.downloading(tuple(big.pypi_path.strip("/").split("/"))) is not None
    clock.advance(2)
    for response in responses:
        with pytest.raises(Exception):
            await response.content()
    cache = proxy.proxy.settings.cache_dir
    await proxy.proxy.disk_work.idle()  # a page record may still be on its way through tmp/
    assert files_in(cache) == [] and tmp_in(cache) == []


class FullDisk:
    """A temporary file whose filesystem fills up after ``room`` bytes."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, directory: Path):
        from pypicached.cache.files import open_temporary_file

        out, path = open_temporary_file(directory)
        room = self.room

        class Writer:
            def __init__(self):
                self.written = 0

            def write(self, data):
                if self.written + len(data) > room:
                    raise OSError(errno.ENOSPC, "No space left on device")
                self.written += len(data)
                return out.write(data)

            def __getattr__(self, name):
                return getattr(out, name)

        return Writer(), path


@ensureDeferred
async def test_full_disk_still_serves_the_file_and_stores_nothing(fake_upstream_json, dists, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    proxy.proxy.files.open_temporary = FullDisk(room=1_000_000)
    big = dists["pcx-big"][0]
    errors = []
    from twisted.logger import globalLogPublisher

    def observe(event):
        if event.get("log_level").name == "error":
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        for _ in range(2):
            await page(proxy, "pcx-big")
            responses = [await r for r in [proxy.get(big.pypi_path) for _ in range(3)]]
            bodies = [await r.content() for r in responses]
            assert bodies == [big.data] * 3
            await settled(proxy, big.pypi_path)
    finally:
        globalLogPublisher.removeObserver(observe)
    cache = proxy.proxy.settings.cache_dir
    await proxy.proxy.disk_work.idle()  # a page record may still be on its way through tmp/
    assert files_in(cache) == [] and tmp_in(cache) == []
    assert len(errors) == 1  # logged once, not per download
    assert "No space left" in errors[0]["reason"]


@ensureDeferred
async def test_a_damaged_page_record_is_a_miss_not_a_500(fake_upstream_json, tmp_path, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    await page(proxy)
    await proxy.stop()
    cache = proxy.proxy.settings.cache_dir
    record = next((cache / "pages").rglob("pcx-alpha.json"))
    record.write_bytes(b'{"format": 1, "url": ')
    again = await start_rig(fake_upstream_json.simple_url, cache)
    try:
        response, body = await page(again)
        assert response.code == 200 and response.header("X-Pypi-Cache") == "MISS"
        assert json.loads(body)["name"] == "pcx-alpha"
        await again.proxy.disk_work.idle()
        assert json.loads(record.read_bytes())["format"] == 1
    finally:
        await again.stop()


@ensureDeferred
async def test_connect_timeout_is_a_504(start_proxy):
    """An upstream whose accept queue is full never completes the handshake."""
    import select

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            select.select([], [filler], [], 0.1)  # let the kernel settle each handshake (or refuse to)
            fillers.append(filler)
        proxy = await start_proxy(f"http://127.0.0.1:{port}/simple/", connect_timeout=0.5)
        response, body = await page(proxy)
        assert response.code == 504, body
        assert b"timed out" in body
    finally:
        for s in [*fillers, server]:
            s.close()


@ensureDeferred
async def test_name_resolution_failure_is_a_502(start_proxy):
    """Resolved by a stand-in resolver, so the test sends no DNS query anywhere."""
    from twisted.internet.interfaces import IHostnameResolver
    from zope.interface import implementer

    @implementer(IHostnameResolver)
    class NoSuchHost:
        def __init__(self, real):
            self.real = real

        def resolveHostName(self, receiver, hostName, *args, **kwargs):
            if hostName != "upstream.test":
                return self.real.resolveHostName(receiver, hostName, *args, **kwargs)
            receiver.resolutionBegan(None)
            receiver.resolutionComplete()
            return receiver

    real = reactor.nameResolver
    reactor.installNameResolver(NoSuchHost(real))
    try:
        proxy = await start_proxy("http://upstream.test/simple/")
        response, body = await page(proxy)
        assert response.code == 502 and response.header("X-Pypi-Cache") == "ERROR"
        assert b"upstream.test" in body and body.count(b"\n") == 1
    finally:
        reactor.installNameResolver(real)
