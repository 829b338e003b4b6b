"""
The proxy end to end: index pages, redirects, files, ranges, coalescing, chaining. In memory
(tests/memory.py), but for the raw bytes of a HEAD answer, which need a socket.
"""

from __future__ import annotations

import gzip
import json
import re
from urllib.parse import urljoin

import pytest
from pytest_twisted import ensureDeferred
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import ResponseDone

from pypicached.cache.pagekind import PROJECT, PageKey

from .memory import World, result_of
from .observe import ClientLog
from .proxy_rig import settled
from .wheels import build_wheel

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
UV_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
POETRY_ACCEPT = "application/vnd.pypi.simple.v1+json, */*;q=0.1"


def header(response, name: str) -> str | None:
    return response.header(name)


def dist(dists, project: str, filename_part: str):
    return next(d for d in dists[project] if filename_part in d.filename)


def json_page(world: World, project: str, accept: str = PIP_ACCEPT):
    response = world.get(f"/simple/{project}/", {"Accept": accept})
    assert response.code == 200, response.body
    return response, json.loads(response.body)


def file_url(world: World, project: str, href: str) -> str:
    return urljoin(f"{world.base_url}/simple/{project}/", href)


@pytest.mark.parametrize("flavour", ["html", "json"])
def test_pages_in_both_formats_from_either_upstream(flavour, dists, make_world):
    world = make_world(flavour=flavour)
    upstream = world.upstream
    wheel = dist(dists, "pcx-alpha", "2.0")

    for accept in (PIP_ACCEPT, UV_ACCEPT, POETRY_ACCEPT):
        response, page = json_page(world, "pcx-alpha", accept)
        assert header(response, "Content-Type") == "application/vnd.pypi.simple.v1+json"
        assert header(response, "Vary") == "Accept, Accept-Encoding"
        entry = next(f for f in page["files"] if f["filename"] == wheel.filename)
        assert entry["hashes"]["sha256"] == wheel.sha256
        assert entry["requires-python"] == ">=3.8"
        assert not entry["url"].startswith("http") and entry["url"].startswith("../../packages/")
        assert entry["url"].rsplit("/", 1)[-1] == wheel.filename

    for accept in (None, "*/*", "text/html"):
        response = world.get("/simple/pcx-alpha/", {"Accept": accept} if accept else {})
        body = response.body.decode()
        assert header(response, "Content-Type") == "text/html; charset=utf-8"
        assert f"#sha256={wheel.sha256}" in body
        assert 'data-requires-python="&gt;=3.8"' in body
        assert "http://" not in body
    response = world.get("/simple/pcx-alpha/", {"Accept": "application/vnd.pypi.simple.v1+html"})
    assert header(response, "Content-Type") == "application/vnd.pypi.simple.v1+html"
    # One upstream fetch served every format: the page is cached once, rendered per request.
    assert upstream.count("/simple/pcx-alpha/") == 1


def test_json_upstream_details_survive(dists, make_world):
    world = make_world()
    _, page = json_page(world, "pcx-alpha")
    wheel = dist(dists, "pcx-alpha", "1.0-py3")
    entry = next(f for f in page["files"] if f["filename"] == wheel.filename)
    assert entry["core-metadata"] == {"sha256": wheel.metadata_sha256}
    assert entry["data-dist-info-metadata"] == {"sha256": wheel.metadata_sha256}
    assert entry["size"] == wheel.size and "upload-time" in entry and entry["yanked"] is False
    assert entry["x-extra"] == {"kept": True} and page["x-extra"] == {"kept": True}
    assert page["meta"]["api-version"] == "1.1" and "1.0" in page["versions"]
    # the public index's layout is kept
    assert entry["url"] == "../.." + wheel.pypi_path

    # the metadata file is served byte for byte
    response = world.get(file_url(world, "pcx-alpha", entry["url"] + ".metadata"))
    assert response.code == 200
    assert response.body == wheel.metadata


def test_cached_json_never_answers_html_or_the_reverse(make_world):
    world = make_world()
    for _ in range(2):
        r_json = world.get("/simple/pcx-beta/", {"Accept": PIP_ACCEPT})
        r_html = world.get("/simple/pcx-beta/", {"Accept": "text/html"})
        assert json.loads(r_json.body)["name"] == "pcx-beta"
        assert r_html.body.startswith(b"<!DOCTYPE html>")
        assert header(r_json, "ETag") != header(r_html, "ETag")


def test_redirects_and_unknown_projects(make_world):
    world = make_world(flavour="html")
    for path, target in [
        ("/simple/Pcx_Gamma/", "/simple/pcx-gamma/"),
        ("/simple/pcx.gamma", "/simple/pcx-gamma/"),
        ("/simple/pcx-gamma", "/simple/pcx-gamma/"),
        ("/simple", "/simple/"),
    ]:
        response = world.get(path, {"Host": "evil.example"})
        assert response.code == 301, path
        assert header(response, "Location") == target
        assert b"evil" not in response.body

    for _ in range(3):
        response = world.get("/simple/no-such-project/")
        assert response.code == 404
        assert header(response, "Content-Type").startswith("text/plain")
    assert world.upstream.count("/simple/no-such-project/") == 1

    for bad in ("-bad-", "bad%20name", "bad!name"):
        response = world.get(f"/simple/{bad}/")
        assert response.code == 404, bad
    assert world.upstream.count(lambda r: "bad" in r.path) == 0


def test_file_is_fetched_once_then_served_from_disk(dists, make_world):
    world = make_world()
    wheel = dist(dists, "pcx-alpha", "2.0")
    _, page = json_page(world, "pcx-alpha")
    href = next(f["url"] for f in page["files"] if f["filename"] == wheel.filename)
    url = file_url(world, "pcx-alpha", href)

    first = world.get(url)
    assert first.code == 200 and header(first, "X-Pypi-Cache") == "MISS"
    assert first.body == wheel.data
    second = world.get(url)
    assert header(second, "X-Pypi-Cache") == "HIT"
    assert second.body == wheel.data
    assert second.length == wheel.size
    for response in (first, second):
        assert header(response, "Content-Type") == "application/octet-stream"
        assert header(response, "Content-Encoding") is None
        assert header(response, "Cache-Control") == "max-age=365000000, immutable"
        assert header(response, "Accept-Ranges") == "bytes"
    assert world.upstream.count(wheel.pypi_path) == 1
    assert (world.proxy.settings.cache_dir / "files").joinpath(
        *wheel.pypi_path.split("/")[1:]
    ).read_bytes() == wheel.data


def test_sdist_is_not_gzip_encoded(dists, make_world):
    world = make_world(flavour="html")
    sdist = dist(dists, "pcx-alpha", ".tar.gz")
    body = world.get("/simple/pcx-alpha/").body.decode()
    href = re.search(rf'href="([^"]*{re.escape(sdist.filename)})#', body).group(1)
    assert href.startswith("../../packages/+f/")
    for status in ("MISS", "HIT"):
        response = world.get(file_url(world, "pcx-alpha", href), {"Accept-Encoding": "gzip"})
        assert header(response, "X-Pypi-Cache") == status
        assert header(response, "Content-Encoding") is None
        assert header(response, "Content-Type") == "application/octet-stream"
        assert response.body == sdist.data


def test_ranges_head_and_conditional_requests(dists, make_world):
    world = make_world()
    wheel = dist(dists, "pcx-alpha", "1.0-py3")
    url = world.base_url + wheel.pypi_path
    json_page(world, "pcx-alpha")
    size = wheel.size

    for status in ("MISS", "HIT"):
        full = world.get(url)
        assert header(full, "X-Pypi-Cache") == status
        assert full.body == wheel.data
    etag, modified = header(full, "ETag"), header(full, "Last-Modified")
    assert etag and modified

    cases = [
        ("bytes=0-9", 206, f"bytes 0-9/{size}", wheel.data[:10]),
        ("bytes=10-", 206, f"bytes 10-{size - 1}/{size}", wheel.data[10:]),
        ("bytes=-100", 206, f"bytes {size - 100}-{size - 1}/{size}", wheel.data[-100:]),
        ("bytes=-10000000", 206, f"bytes 0-{size - 1}/{size}", wheel.data),  # poetry's suffix on a small file
        ("bytes=0-1,4-5", 200, None, wheel.data),
    ]
    for spec, code, content_range, data in cases:
        response = world.get(url, {"Range": spec})
        assert response.code == code, spec
        assert header(response, "Content-Range") == content_range
        assert response.body == data

    response = world.get(url, {"Range": f"bytes={size}-"})
    assert response.code == 416 and header(response, "Content-Range") == f"bytes */{size}"

    # pip resuming: If-Range with the ETag honours the range; a stale validator gets the whole file
    response = world.get(url, {"Range": "bytes=5-", "If-Range": etag})
    assert response.code == 206 and response.body == wheel.data[5:]
    response = world.get(url, {"Range": "bytes=5-", "If-Range": '"other"'})
    assert response.code == 200 and response.body == wheel.data

    for conditional in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
        response = world.get(url, conditional)
        assert response.code == 304, conditional
    response = world.get(url, {"If-None-Match": '"nope"'})
    assert response.code == 200
    assert world.upstream.count(wheel.pypi_path) == 1


def test_eight_clients_share_one_download(dists, make_world):
    world = make_world()
    big = dists["pcx-big"][0]
    json_page(world, "pcx-big")
    gate = world.upstream.gate(big.pypi_path)
    world.upstream.behaviour[big.pypi_path] = "gate:100000"

    first = world.request(big.pypi_path)
    assert gate.arrived == 1 and gate.waiting == 1
    others = [world.request(big.pypi_path) for _ in range(7)]
    # a late client can ask for a range of the file still downloading
    ranged = world.request(big.pypi_path, {"Range": "bytes=50-99"})
    responses = [world.response(d) for d in [first, *others, ranged]]
    assert [cache_status(r) for r in responses[:8]].count("MISS") == 1
    assert [cache_status(r) for r in responses[:8]].count("JOINED") == 7
    assert all(r.length == big.size for r in responses[:8])
    assert responses[8].code == 206 and responses[8].headers.getRawHeaders("Content-Range") == [
        f"bytes 50-99/{big.size}"
    ]
    world.upstream.release(big.pypi_path)
    bodies = [world.read(r) for r in responses]
    assert all(result_of(b) == big.data for b in bodies[:8])
    assert result_of(bodies[8]) == big.data[50:100]
    assert world.upstream.count(big.pypi_path) == 1


def cache_status(response) -> str:
    return response.headers.getRawHeaders("X-Pypi-Cache")[0]


def test_clients_stream_before_the_download_ends(dists, make_world):
    world = make_world()
    big = dists["pcx-big"][0]
    json_page(world, "pcx-big")
    world.upstream.behaviour[big.pypi_path] = "gate:200000"
    response = world.response(world.request(big.pypi_path))
    received = []
    done = Deferred()

    class Reader(Protocol):
        def dataReceived(self, data):
            received.append(data)

        def connectionLost(self, reason):
            done.callback(None)

    response.deliverBody(Reader())
    world.flush()
    # bytes arrived while the upstream still holds the rest back
    assert sum(map(len, received)) >= 100000
    assert not done.called
    world.upstream.release(big.pypi_path)
    world.flush()
    assert done.called
    assert b"".join(received) == big.data


def test_a_client_that_leaves_does_not_stop_the_download(dists, make_world):
    world = make_world()
    clients = ClientLog.attach(world.proxy.site)
    big = dists["pcx-big"][0]
    json_page(world, "pcx-big")
    gate = world.upstream.gate(big.pypi_path)
    world.upstream.behaviour[big.pypi_path] = "gate:1000"
    response = world.response(world.request(big.pypi_path))
    assert gate.arrived == 1
    ended = []

    class Leaving(Protocol):
        def connectionMade(self):
            self.transport.stopProducing()  # the client closes its connection in the middle of the body

        def connectionLost(self, reason):
            ended.append(reason)

    response.deliverBody(Leaving())
    world.flush()
    assert len(ended) == 1 and not ended[0].check(ResponseDone)
    assert [r.finished for r in clients.for_file(big.filename)] == [False]  # the proxy saw it go
    world.upstream.release(big.pypi_path)
    world.flush()
    assert world.proxy.files.downloading(tuple(big.pypi_path.strip("/").split("/"))) is None
    path = world.proxy.settings.cache_dir / "files" / big.pypi_path.lstrip("/")
    assert path.read_bytes() == big.data
    response = world.get(big.pypi_path)
    assert header(response, "X-Pypi-Cache") == "HIT"
    assert response.body == big.data


def test_no_open_proxy(make_world):
    world = make_world()
    for path in [
        "/packages/ab/cd/" + "e" * 60 + "/pcx_alpha-9.9-py3-none-any.whl",
        "/packages/+f/0123/evil.whl",
        "/files/pcx_alpha-1.0-py3-none-any.whl",
        "/packages/127.0.0.1/secret",
    ]:
        response = world.get(path)
        assert response.code == 404, path
    assert world.upstream.file_requests() == []


def test_gzip_when_asked(make_world):
    world = make_world()
    response = world.get("/simple/pcx-alpha/", {"Accept-Encoding": "gzip", "Accept": PIP_ACCEPT})
    body = response.body
    assert header(response, "Content-Encoding") == "gzip"
    assert response.length == len(body)
    assert json.loads(gzip.decompress(body))["name"] == "pcx-alpha"


def test_revalidation_after_ttl_is_shared(make_world):
    world = make_world(index_ttl=0)
    upstream = world.upstream
    response, _ = json_page(world, "pcx-alpha")
    assert header(response, "X-Pypi-Cache") == "MISS"
    upstream.behaviour["/simple/pcx-alpha/"] = ["hang"]
    waiting = [world.request("/simple/pcx-alpha/", {"Accept": PIP_ACCEPT}) for _ in range(5)]
    assert upstream.count("/simple/pcx-alpha/") == 2 and len(upstream.pending) == 1
    assert world.proxy.pages.waiting(PageKey(PROJECT, "pcx-alpha")) == 5  # all five arrived
    upstream.release_pending("/simple/pcx-alpha/")
    responses = [world.reply(d) for d in waiting]
    assert {header(r, "X-Pypi-Cache") for r in responses} == {"REVALIDATED"}
    assert upstream.count("/simple/pcx-alpha/") == 2
    assert upstream.requests("/simple/pcx-alpha/")[-1].if_none_match

    upstream.touch("pcx-alpha")
    response, _ = json_page(world, "pcx-alpha")
    assert header(response, "X-Pypi-Cache") == "EXPIRED"


def test_pages_are_fresh_within_ttl_whatever_the_client_says(make_world):
    world = make_world(index_ttl=3600)
    json_page(world, "pcx-alpha")
    response = world.get("/simple/pcx-alpha/", {"Accept": PIP_ACCEPT, "Cache-Control": "max-age=0"})
    assert header(response, "X-Pypi-Cache") == "HIT"
    assert world.upstream.count("/simple/pcx-alpha/") == 1


def test_pages_survive_a_restart(make_world):
    world = make_world()
    json_page(world, "pcx-alpha")
    world.restart()
    response, _ = json_page(world, "pcx-alpha")
    assert header(response, "X-Pypi-Cache") == "HIT"
    assert world.upstream.count("/simple/pcx-alpha/") == 1


def test_project_list_and_json_api(dists, make_world):
    world = make_world()
    response = world.get("/simple/", {"Accept": PIP_ACCEPT})
    names = {p["name"] for p in json.loads(response.body)["projects"]}
    assert {"pcx-alpha", "pcx-big"} <= {n.lower().replace("_", "-") for n in names}
    response = world.get("/simple/")
    assert b'href="pcx-alpha/"' in response.body

    wheel = dist(dists, "pcx-alpha", "2.0")
    for path, depth in (("/pypi/pcx-alpha/json", 2), ("/pypi/pcx-alpha/2.0/json", 3)):
        response = world.get(path)
        assert response.code == 200, path
        assert header(response, "Content-Type") == "application/json"
        doc = json.loads(response.body)
        urls = [u["url"] for u in doc["urls"]]
        assert "../" * depth + wheel.pypi_path.lstrip("/") in urls
        assert not any(u.startswith("http") for u in urls)
        fetched = world.get(urljoin(world.base_url + path, urls[0]))
        assert fetched.code == 200
    response = world.get("/pypi/Pcx_Alpha/json")
    assert response.code == 301 and header(response, "Location") == "/pypi/pcx-alpha/json"


def test_two_proxies_chained(dists, make_world, tmp_path):
    central = make_world()
    site = central.chained(tmp_path / "site-cache")
    wheel = dist(dists, "pcx-alpha", "2.0")
    for accept in (PIP_ACCEPT, "text/html"):
        response = site.get("/simple/pcx-alpha/", {"Accept": accept})
        body = response.body.decode()
        assert "../.." + wheel.pypi_path in body
    response = site.get(wheel.pypi_path)
    assert response.body == wheel.data
    assert header(response, "X-Pypi-Cache") == "MISS"
    response = central.get(wheel.pypi_path)
    assert header(response, "X-Pypi-Cache") == "HIT"
    assert central.upstream.count(wheel.pypi_path) == 1
    assert central.upstream.count("/simple/pcx-alpha/") == 1


def test_methods_and_long_uris(make_world):
    world = make_world()
    response = world.get("/simple/", method="POST")
    assert response.code == 405 and header(response, "Allow") == "GET, HEAD"
    response = world.get("/simple/" + "a" * 9000 + "/")
    assert response.code in (400, 414)
    response = world.get("/nothing-here")
    assert response.code == 404
    response = world.get("/")
    assert response.code == 200


def test_a_new_release_is_found_before_the_page_expires(make_world):
    world = make_world(index_ttl=600)
    upstream = world.upstream
    json_page(world, "pcx-alpha")
    new = build_wheel("pcx-alpha", "3.0")
    upstream.add(new)
    world.advance(11)  # the page is still fresh, but older than the early-refresh floor
    response = world.get(new.pypi_path)
    assert response.code == 200 and response.body == new.data
    assert upstream.count("/simple/pcx-alpha/") == 2
    # a name no page will ever link costs no more than one early refresh per 10 s
    for _ in range(3):
        assert world.get(new.pypi_path.replace("3.0", "9.9")).code == 404
    assert upstream.count("/simple/pcx-alpha/") == 2


# --- on loopback: the raw bytes of the answer --------------------------------------------


@ensureDeferred
async def test_head_reports_exact_length(fake_upstream_json, dists, start_proxy):
    """An HTTP client hides a HEAD answer's Content-Length: read the bytes the proxy wrote."""
    proxy = await start_proxy(fake_upstream_json.simple_url)
    wheel = dist(dists, "pcx-alpha", "1.0-py3")
    response = await proxy.get("/simple/pcx-alpha/", {"Accept": PIP_ACCEPT})
    assert response.code == 200, await response.text()
    for status in ("MISS", "HIT"):  # the first HEAD starts the download, the second is a hit
        reply = await proxy.raw(f"HEAD {wheel.pypi_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert f"Content-Length: {wheel.size}".encode() in head
        assert b"Accept-Ranges: bytes" in head
        assert f"X-Pypi-Cache: {status}".encode() in head
        assert body == b""
        await settled(proxy, wheel.pypi_path)
