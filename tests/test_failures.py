"""
Upstream outages, lying upstreams, stalled bodies and a failing disk: each provoked, each
answered. In memory (tests/memory.py), on the world's clock; on loopback only what needs the
kernel: a connection that never completes its handshake.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import socket
from pathlib import Path
from urllib.parse import urljoin

import pytest
from pytest_twisted import ensureDeferred
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from .memory import World, answered, failure_of, outcome_of, result_of
from .observe import ClientLog

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"


def files_in(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "files").rglob("*") if p.is_file())


def tmp_in(cache: Path) -> list[Path]:
    return sorted((cache / "tmp").iterdir())


def page(world: World, project: str = "pcx-alpha"):
    reply = world.get(f"/simple/{project}/", {"Accept": PIP_ACCEPT})
    return reply, reply.body


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
            files = [
                {
                    "filename": "pkg-1.0.tar.gz",
                    "url": "/files/pkg-1.0.tar.gz",
                    "hashes": {"sha256": hashlib.sha256(GZ_SDIST).hexdigest()},
                }
            ]
            return json.dumps({"meta": {"api-version": "1.0"}, "name": "pkg", "files": files}).encode()
        if self.mode == "chunked-cut":
            request.setHeader(b"Content-Type", b"application/vnd.pypi.simple.v1+json")
            request.write(b'{"meta": {"api-version": "1.1"}, "files": [')  # chunked: no length
            request.transport.abortConnection()
            return NOT_DONE_YET
        raise AssertionError(self.mode)


@pytest.fixture
def liar():
    return Liar()


# --- index pages ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["malformed-json", "not-a-page", "redirect-loop", "chunked-cut"])
def test_a_lying_upstream_is_a_502_never_a_404(liar, mode, make_world):
    liar.mode = mode
    world = make_world(liar)
    response, body = page(world)
    assert response.code == 502, body
    assert response.header("Content-Type") == "text/plain; charset=utf-8"
    assert response.header("X-Pypi-Cache") == "ERROR"
    assert body.count(b"\n") == 1 and b"upstream" in body


def test_a_tar_gz_labelled_gzip_is_stored_as_served(liar, make_world):
    liar.mode = "gzip-labelled"
    world = make_world(liar)
    response, body = page(world, "pkg")
    href = json.loads(body)["files"][0]["url"]
    for status in ("MISS", "HIT"):
        response = world.get(urljoin(world.base_url + "/simple/pkg/", href), {"Accept-Encoding": "gzip"})
        assert response.code == 200 and response.header("X-Pypi-Cache") == status
        assert response.header("Content-Encoding") is None
        assert response.body == GZ_SDIST


def test_connection_refused_and_5xx_are_502(make_world):
    refusing = make_world()
    refusing.network.mode = "refuse"
    response, body = page(refusing)
    assert response.code == 502 and b"refused" in body.lower()

    world = make_world()
    world.upstream.behaviour["/simple/pcx-alpha/"] = "status:503"
    response, body = page(world)
    assert response.code == 502 and b"503" in body


def test_no_response_headers_is_a_504_after_the_timeout(make_world):
    world = make_world(response_timeout=30)
    world.upstream.behaviour["/simple/pcx-alpha/"] = "hang"
    pending = world.request("/simple/pcx-alpha/")
    assert world.upstream.count("/simple/pcx-alpha/") == 1
    world.advance(29)
    assert not answered(pending)
    world.advance(2)
    response = world.reply(pending)
    assert response.code == 504
    assert b"timed out" in response.body


def test_a_stalled_page_body_is_abandoned(make_world):
    # no headers timeout here: advancing the clock must trip only the idle timer
    world = make_world(idle_timeout=60, response_timeout=0)
    gate = world.upstream.gate("/simple/pcx-alpha/")
    world.upstream.behaviour["/simple/pcx-alpha/"] = "gate:10"
    pending = world.request("/simple/pcx-alpha/")
    assert gate.arrived == 1
    # the proxy reads the body: its idle timer is armed (other timers run on this clock too)
    assert any(getattr(c.func, "__name__", "") == "_stall" for c in world.clock.getDelayedCalls())
    world.advance(61)
    response = world.reply(pending)
    assert response.code == 504 and b"stalled" in response.body


def test_stale_copy_served_when_revalidation_fails(make_world):
    world = make_world(index_ttl=600)
    upstream = world.upstream
    response, good = page(world)
    assert response.header("X-Pypi-Cache") == "MISS"

    world.advance(601)
    upstream.behaviour["/simple/pcx-alpha/"] = "status:500"
    response, body = page(world)
    assert response.code == 200 and body == good
    assert response.header("X-Pypi-Cache") == "STALE"
    assert response.header("Warning") == '111 pypicached "Revalidation Failed"'
    # during the outage the next requests do not each wait on the upstream again
    asked = upstream.count("/simple/pcx-alpha/")
    response, _ = page(world)
    assert response.header("X-Pypi-Cache") == "STALE"
    assert upstream.count("/simple/pcx-alpha/") == asked

    # a week later, still served: stale_if_error defaults to no limit
    world.clock.advance(7 * 86400)  # in one jump: a week of heartbeats and probes is not the point here
    world.flush()
    response, body = page(world)
    assert response.code == 200 and body == good and response.header("X-Pypi-Cache") == "STALE"

    # the upstream is back: fresh again
    del upstream.behaviour["/simple/pcx-alpha/"]
    world.advance(60)
    response, _ = page(world)
    assert response.header("X-Pypi-Cache") == "REVALIDATED"


def test_stale_if_error_limit(make_world):
    world = make_world(index_ttl=600, stale_if_error=3600)
    page(world)
    world.upstream.behaviour["/simple/pcx-alpha/"] = "status:502"
    world.advance(600 + 3000)
    response, _ = page(world)
    assert response.header("X-Pypi-Cache") == "STALE"
    world.advance(1000)  # the copy is now too old to stand in; the probe has found the upstream answering
    assert not world.proxy.upstream_health.is_down
    response, body = page(world)
    assert response.code == 502 and response.header("X-Pypi-Cache") == "ERROR"


def test_stale_while_revalidate(make_world):
    world = make_world(index_ttl=600, stale_while_revalidate=300)
    upstream = world.upstream
    _, before = page(world)
    upstream.touch("pcx-alpha")
    upstream.behaviour["/simple/pcx-alpha/"] = ["hang"]
    world.advance(700)
    responses = [world.get("/simple/pcx-alpha/", {"Accept": PIP_ACCEPT}) for _ in range(3)]
    # answered at once, although the upstream has not answered the refresh yet
    assert [r.header("X-Pypi-Cache") for r in responses] == ["UPDATING"] * 3
    assert [r.body for r in responses] == [before] * 3
    assert upstream.count("/simple/pcx-alpha/") == 2  # one background refresh
    assert len(upstream.pending) == 1
    upstream.release_pending("/simple/pcx-alpha/")
    world.flush()
    response, after = page(world)
    assert response.header("X-Pypi-Cache") == "HIT" and after != before


def test_offline_serves_the_cache_and_refuses_the_rest(dists, make_world):
    world = make_world()
    upstream = world.upstream
    wheel = next(d for d in dists["pcx-alpha"] if d.filename.endswith("2.0-py3-none-any.whl"))
    page(world)
    assert world.get(wheel.pypi_path).body == wheel.data
    world.stop()
    upstream.clear_log()

    world.restart(offline=True, index_ttl=0)
    response, _ = page(world)
    assert response.code == 200 and response.header("X-Pypi-Cache") == "STALE"
    response = world.get(wheel.pypi_path)
    assert response.header("X-Pypi-Cache") == "HIT" and response.body == wheel.data
    for path in ("/simple/pcx-beta/", "/packages/+f/00/x.whl", "/pypi/pcx-alpha/json"):
        response = world.get(path)
        assert response.code == 503, path
        assert b"offline" in response.body
    assert upstream.log == []


# --- files ---------------------------------------------------------------------------


def _start_file(world: World, wheel, behaviour, clients: int = 3):
    """``clients`` requests for ``wheel`` that reach the proxy together."""
    page(world, wheel.project)
    world.upstream.behaviour[wheel.pypi_path] = behaviour
    started = [world.request(wheel.pypi_path, flush=False) for _ in range(clients)]
    world.flush()
    return started


def _settled(world: World, path: str) -> None:
    """The proxy's download of ``path`` is over (in memory it ends within the flush that ends its body)."""
    world.flush()
    assert world.proxy.files.downloading(tuple(path.strip("/").split("/"))) is None


@pytest.mark.parametrize("behaviour", ["truncate:500000", "corrupt", "status:500", "drop"])
def test_bad_file_bodies_are_never_stored_or_served_whole(dists, behaviour, make_world):
    world = make_world()
    upstream = world.upstream
    clients = ClientLog.attach(world.proxy.site)
    big = dists["pcx-big"][0]
    cache = world.proxy.settings.cache_dir
    has_body = behaviour in ("truncate:500000", "corrupt")
    # a body held at its first bytes until all three clients have joined the one download
    started = _start_file(world, big, behaviour + ("+gate:1000" if has_body else ""))
    if has_body:
        assert upstream.gate(big.pypi_path).arrived == 1
        assert len(clients.for_file(big.filename)) == 3
        upstream.gate(big.pypi_path).open()
        world.flush()
    for pending in started:
        response = outcome_of(pending)
        if isinstance(response, Failure):
            continue  # the connection was broken before headers: fine
        if response.code == 200:
            failure_of(world.read(response))  # the body is never complete
        elif response.code == 503:  # came after a failure had marked the upstream down
            assert behaviour in ("status:500", "drop") and b"is down since" in result_of(world.read(response))
        else:
            assert response.code == 502 and response.headers.getRawHeaders("X-Pypi-Cache") == ["ERROR"]
    _settled(world, big.pypi_path)
    assert files_in(cache) == [] and tmp_in(cache) == []
    if behaviour == "corrupt":
        assert world.proxy.files.digest_mismatches == 1
    del upstream.behaviour[big.pypi_path]
    health = world.proxy.upstream_health
    if behaviour in ("status:500", "drop"):  # no answer, or a 5xx: the upstream is down for everyone
        assert health.is_down
        response = world.get(big.pypi_path)
        assert response.code == 503 and b"is down since" in response.body
        world.advance(1)  # the probe is due; its answer brings the upstream back
    assert not health.is_down  # a broken or lying body is the file's fault, not the upstream's
    # the next request tries again, and gets the real file
    response = world.get(big.pypi_path)
    assert response.body == big.data


def test_a_stalled_download_is_abandoned_and_clients_broken(dists, make_world):
    world = make_world(idle_timeout=60)
    big = dists["pcx-big"][0]
    gate = world.upstream.gate(big.pypi_path)
    requests = _start_file(world, big, "gate:300000")
    assert gate.arrived == 1
    responses = [world.response(r) for r in requests]
    assert all(r.code == 200 and r.length == big.size for r in responses)
    world.advance(59)
    assert world.proxy.files.downloading(tuple(big.pypi_path.strip("/").split("/"))) is not None
    world.advance(2)
    for response in responses:
        failure_of(world.read(response))
    cache = world.proxy.settings.cache_dir
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


def test_full_disk_still_serves_the_file_and_stores_nothing(dists, make_world):
    world = make_world()
    world.proxy.files.open_temporary = FullDisk(room=1_000_000)
    big = dists["pcx-big"][0]
    errors = []
    from twisted.logger import globalLogPublisher

    def observe(event):
        if event.get("log_level").name == "error":
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        for _ in range(2):
            requests = _start_file(world, big, None)
            bodies = [result_of(world.read(world.response(r))) for r in requests]
            assert bodies == [big.data] * 3
            _settled(world, big.pypi_path)
    finally:
        globalLogPublisher.removeObserver(observe)
    cache = world.proxy.settings.cache_dir
    assert files_in(cache) == [] and tmp_in(cache) == []
    assert len(errors) == 1  # logged once, not per download
    assert "No space left" in errors[0]["reason"]


def test_a_damaged_page_record_is_a_miss_not_a_500(make_world):
    world = make_world()
    page(world)
    world.stop()
    cache = world.proxy.settings.cache_dir
    record = next((cache / "pages").rglob("pcx-alpha.json"))
    record.write_bytes(b'{"format": 1, "url": ')
    world.restart()
    response, body = page(world)
    assert response.code == 200 and response.header("X-Pypi-Cache") == "MISS"
    assert json.loads(body)["name"] == "pcx-alpha"
    assert json.loads(record.read_bytes())["format"] == 1


def test_name_resolution_failure_is_a_502(make_world):
    """The upstream's name does not resolve: no DNS query leaves the test."""
    world = make_world()
    world.network.mode = "dns"
    response, body = page(world)
    assert response.code == 502 and response.header("X-Pypi-Cache") == "ERROR"
    assert b"upstream.test" in body and body.count(b"\n") == 1


# --- on loopback: a connection the kernel never completes ------------------------------


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
        response = await proxy.get("/simple/pcx-alpha/", {"Accept": PIP_ACCEPT})
        body = await response.content()
        assert response.code == 504, body
        assert b"timed out" in body
    finally:
        for s in [*fillers, server]:
            s.close()
