"""The proxy end to end on loopback: index pages, redirects, files, ranges, coalescing, chaining."""

from __future__ import annotations

import gzip
import json
import re
from urllib.parse import urljoin

import pytest
from pytest_twisted import ensureDeferred
from twisted.internet.defer import gatherResults

from pypicached.cache.pagekind import PROJECT, PageKey

from .proxy_rig import settled, until

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
UV_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
POETRY_ACCEPT = "application/vnd.pypi.simple.v1+json, */*;q=0.1"


def header(response, name: str) -> str | None:
    return response.header(name)


def dist(dists, project: str, filename_part: str):
    return next(d for d in dists[project] if filename_part in d.filename)


async def json_page(proxy, project: str, accept: str = PIP_ACCEPT):
    response = await proxy.get(f"/simple/{project}/", {"Accept": accept})
    assert response.code == 200, await response.text()
    return response, json.loads(await response.content())


def file_url(proxy, project: str, href: str) -> str:
    return urljoin(f"{proxy.base_url}/simple/{project}/", href)


@pytest.mark.parametrize("flavour", ["html", "json"])
@ensureDeferred
async def test_pages_in_both_formats_from_either_upstream(request, flavour, dists, start_proxy):
    upstream = request.getfixturevalue(f"fake_upstream_{flavour}")
    proxy = await start_proxy(upstream.simple_url)
    wheel = dist(dists, "pcx-alpha", "2.0")

    for accept in (PIP_ACCEPT, UV_ACCEPT, POETRY_ACCEPT):
        response, page = await json_page(proxy, "pcx-alpha", accept)
        assert header(response, "Content-Type") == "application/vnd.pypi.simple.v1+json"
        assert header(response, "Vary") == "Accept, Accept-Encoding"
        entry = next(f for f in page["files"] if f["filename"] == wheel.filename)
        assert entry["hashes"]["sha256"] == wheel.sha256
        assert entry["requires-python"] == ">=3.8"
        assert not entry["url"].startswith("http") and entry["url"].startswith("../../packages/")
        assert entry["url"].rsplit("/", 1)[-1] == wheel.filename

    for accept in (None, "*/*", "text/html"):
        response = await proxy.get("/simple/pcx-alpha/", {"Accept": accept} if accept else {})
        body = (await response.content()).decode()
        assert header(response, "Content-Type") == "text/html; charset=utf-8"
        assert f"#sha256={wheel.sha256}" in body
        assert 'data-requires-python="&gt;=3.8"' in body
        assert "http://" not in body
    response = await proxy.get("/simple/pcx-alpha/", {"Accept": "application/vnd.pypi.simple.v1+html"})
    assert header(response, "Content-Type") == "application/vnd.pypi.simple.v1+html"
    # One upstream fetch served every format: the page is cached once, rendered per request.
    assert upstream.count("/simple/pcx-alpha/") == 1


@ensureDeferred
async def test_json_upstream_details_survive(fake_upstream_json, dists, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    _, page = await json_page(proxy, "pcx-alpha")
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
    response = await proxy.get(file_url(proxy, "pcx-alpha", entry["url"] + ".metadata"))
    assert response.code == 200
    assert await response.content() == wheel.metadata


@ensureDeferred
async def test_cached_json_never_answers_html_or_the_reverse(fake_upstream_json, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    for _ in range(2):
        r_json = await proxy.get("/simple/pcx-beta/", {"Accept": PIP_ACCEPT})
        body_json = await r_json.content()
        r_html = await proxy.get("/simple/pcx-beta/", {"Accept": "text/html"})
        body_html = await r_html.content()
        assert json.loads(body_json)["name"] == "pcx-beta"
        assert body_html.startswith(b"<!DOCTYPE html>")
        assert header(r_json, "ETag") != header(r_html, "ETag")


@ensureDeferred
async def test_redirects_and_unknown_projects(fake_upstream_html, start_proxy):
    proxy = await start_proxy(fake_upstream_html.simple_url)
    for path, target in [
        ("/simple/Pcx_Gamma/", "/simple/pcx-gamma/"),
        ("/simple/pcx.gamma", "/simple/pcx-gamma/"),
        ("/simple/pcx-gamma", "/simple/pcx-gamma/"),
        ("/simple", "/simple/"),
    ]:
        response = await proxy.get(path, {"Host": "evil.example"})
        assert response.code == 301, path
        assert header(response, "Location") == target
        assert b"evil" not in await response.content()

    for _ in range(3):
        response = await proxy.get("/simple/no-such-project/")
        assert response.code == 404
        assert header(response, "Content-Type").startswith("text/plain")
    assert fake_upstream_html.count("/simple/no-such-project/") == 1

    for bad in ("-bad-", "bad%20name", "bad!name"):
        response = await proxy.get(f"/simple/{bad}/")
        assert response.code == 404, bad
    assert fake_upstream_html.count(lambda r: "bad" in r.path) == 0


@ensureDeferred
async def test_file_is_fetched_once_then_served_from_disk(fake_upstream_json, dists, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    wheel = dist(dists, "pcx-alpha", "2.0")
    _, page = await json_page(proxy, "pcx-alpha")
    href = next(f["url"] for f in page["files"] if f["filename"] == wheel.filename)
    url = file_url(proxy, "pcx-alpha", href)

    first = await proxy.get(url)
    assert first.code == 200 and header(first, "X-Pypi-Cache") == "MISS"
    assert await first.content() == wheel.data
    second = await proxy.get(url)
    assert header(second, "X-Pypi-Cache") == "HIT"
    assert await second.content() == wheel.data
    assert second.length == wheel.size
    for response in (first, second):
        assert header(response, "Content-Type") == "application/octet-stream"
        assert header(response, "Content-Encoding") is None
        assert header(response, "Cache-Control") == "max-age=365000000, immutable"
        assert header(response, "Accept-Ranges") == "bytes"
    assert fake_upstream_json.count(wheel.pypi_path) == 1
    assert (proxy.proxy.settings.cache_dir / "files").joinpath(*wheel.pypi_path.split("/")[1:]).read_bytes() == wheel.data


@ensureDeferred
async def test_sdist_is_not_gzip_encoded(fake_upstream_html, dists, start_proxy):
    proxy = await start_proxy(fake_upstream_html.simple_url)
    sdist = dist(dists, "pcx-alpha", ".tar.gz")
    body = (await (await proxy.get("/simple/pcx-alpha/")).content()).decode()
    href = re.search(r'href="([^"]*%s)#' % re.escape(sdist.filename), body).group(1)
    assert href.startswith("../../packages/+f/")
    for status in ("MISS", "HIT"):
        response = await proxy.get(file_url(proxy, "pcx-alpha", href), {"Accept-Encoding": "gzip"})
        assert header(response, "X-Pypi-Cache") == status
        assert header(response, "Content-Encoding") is None
        assert header(response, "Content-Type") == "application/octet-stream"
        assert await response.content() == sdist.data


@ensureDeferred
async def test_ranges_head_and_conditional_requests(fake_upstream_json, dists, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    wheel = dist(dists, "pcx-alpha", "1.0-py3")
    url = proxy.base_url + wheel.pypi_path
    await json_page(proxy, "pcx-alpha")
    size = wheel.size

    for status in ("MISS", "HIT"):
        full = await proxy.get(url)
        assert header(full, "X-Pypi-Cache") == status
        assert await full.content() == wheel.data
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
        response = await proxy.get(url, {"Range": spec})
        assert response.code == code, spec
        assert header(response, "Content-Range") == content_range
        assert await response.content() == data

    response = await proxy.get(url, {"Range": f"bytes={size}-"})
    assert response.code == 416 and header(response, "Content-Range") == f"bytes */{size}"

    # pip resuming: If-Range with the ETag honours the range; a stale validator gets the whole file
    response = await proxy.get(url, {"Range": "bytes=5-", "If-Range": etag})
    assert response.code == 206 and await response.content() == wheel.data[5:]
    response = await proxy.get(url, {"Range": "bytes=5-", "If-Range": '"other"'})
    assert response.code == 200 and await response.content() == wheel.data

    for conditional in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
        response = await proxy.get(url, conditional)
        assert response.code == 304, conditional
    response = await proxy.get(url, {"If-None-Match": '"nope"'})
    assert response.code == 200
    assert fake_upstream_json.count(wheel.pypi_path) == 1


@ensureDeferred
async def test_head_reports_exact_length(fake_upstream_json, dists, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    wheel = dist(dists, "pcx-alpha", "1.0-py3")
    await json_page(proxy, "pcx-alpha")
    for status in ("MISS", "HIT"):  # the first HEAD starts the download, the second is a hit
        reply = await proxy.raw(f"HEAD {wheel.pypi_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert f"Content-Length: {wheel.size}".encode() in head
        assert b"Accept-Ranges: bytes" in head
        assert f"X-Pypi-Cache: {status}".encode() in head
        assert body == b""
        await settled(proxy, wheel.pypi_path)


@ensureDeferred
async def test_eight_clients_share_one_download(fake_upstream_json, dists, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    big = dists["pcx-big"][0]
    await json_page(proxy, "pcx-big")
    gate = fake_upstream_json.gate(big.pypi_path)
    fake_upstream_json.behaviour[big.pypi_path] = "gate:100000"

    first = proxy.get(big.pypi_path)
    await gate.reached(1)
    others = [proxy.get(big.pypi_path) for _ in range(7)]
    # a late client can ask for a range of the file still downloading
    ranged = proxy.get(big.pypi_path, {"Range": "bytes=50-99"})
    responses = await gatherResults([first, *others, ranged])
    assert [header(r, "X-Pypi-Cache") for r in responses[:8]].count("MISS") == 1
    assert [header(r, "X-Pypi-Cache") for r in responses[:8]].count("JOINED") == 7
    assert all(r.length == big.size for r in responses[:8])
    assert responses[8].code == 206 and header(responses[8], "Content-Range") == f"bytes 50-99/{big.size}"
    fake_upstream_json.release(big.pypi_path)
    bodies = await gatherResults([r.content() for r in responses])
    assert all(b == big.data for b in bodies[:8])
    assert bodies[8] == big.data[50:100]
    assert fake_upstream_json.count(big.pypi_path) == 1


@ensureDeferred
async def test_clients_stream_before_the_download_ends(fake_upstream_json, dists, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    big = dists["pcx-big"][0]
    await json_page(proxy, "pcx-big")
    fake_upstream_json.behaviour[big.pypi_path] = "gate:200000"
    response = (await proxy.get(big.pypi_path)).response
    received = []
    from twisted.internet.defer import Deferred
    from twisted.internet.protocol import Protocol

    some = Deferred()
    done = Deferred()

    class Reader(Protocol):
        def dataReceived(self, data):
            received.append(data)
            if sum(map(len, received)) >= 100000 and not some.called:
                some.callback(None)

        def connectionLost(self, reason):
            done.callback(None)

    response.deliverBody(Reader())
    await some  # bytes arrived while the upstream still holds the rest back
    assert not done.called
    fake_upstream_json.release(big.pypi_path)
    await done
    assert b"".join(received) == big.data


@ensureDeferred
async def test_a_client_that_leaves_does_not_stop_the_download(fake_upstream_json, dists, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    big = dists["pcx-big"][0]
    await json_page(proxy, "pcx-big")
    gate = fake_upstream_json.gate(big.pypi_path)
    fake_upstream_json.behaviour[big.pypi_path] = "gate:1000"
    d = proxy.get(big.pypi_path)
    await gate.reached(1)
    d.cancel()
    with pytest.raises(Exception):
        await d
    fake_upstream_json.release(big.pypi_path)
    await settled(proxy, big.pypi_path)
    path = proxy.proxy.settings.cache_dir / "files" / big.pypi_path.lstrip("/")
    assert path.read_bytes() == big.data
    response = await proxy.get(big.pypi_path)
    assert header(response, "X-Pypi-Cache") == "HIT"
    assert await response.content() == big.data


@ensureDeferred
async def test_no_open_proxy(fake_upstream_json, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    for path in [
        "/packages/ab/cd/" + "e" * 60 + "/pcx_alpha-9.9-py3-none-any.whl",
        "/packages/+f/0123/evil.whl",
        "/files/pcx_alpha-1.0-py3-none-any.whl",
        "/packages/127.0.0.1/secret",
    ]:
        response = await proxy.get(path)
        assert response.code == 404, path
    assert fake_upstream_json.file_requests() == []


@ensureDeferred
async def test_gzip_when_asked(fake_upstream_json, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    response = await proxy.get("/simple/pcx-alpha/", {"Accept-Encoding": "gzip", "Accept": PIP_ACCEPT})
    body = await response.content()
    assert header(response, "Content-Encoding") == "gzip"
    assert response.length == len(body)
    assert json.loads(gzip.decompress(body))["name"] == "pcx-alpha"


@ensureDeferred
async def test_revalidation_after_ttl_is_shared(fake_upstream_json, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url, index_ttl=0)
    response, _ = await json_page(proxy, "pcx-alpha")
    assert header(response, "X-Pypi-Cache") == "MISS"
    fake_upstream_json.behaviour["/simple/pcx-alpha/"] = ["hang"]
    waiting = [proxy.get("/simple/pcx-alpha/", {"Accept": PIP_ACCEPT}) for _ in range(5)]
    await fake_upstream_json.wait_for_requests("/simple/pcx-alpha/", count=2)
    await until(lambda: proxy.proxy.pages.waiting(PageKey(PROJECT, "pcx-alpha")) == 5)  # all five arrived
    fake_upstream_json.release_pending("/simple/pcx-alpha/")
    responses = await gatherResults(waiting)
    assert {header(r, "X-Pypi-Cache") for r in responses} == {"REVALIDATED"}
    assert fake_upstream_json.count("/simple/pcx-alpha/") == 2
    assert fake_upstream_json.requests("/simple/pcx-alpha/")[-1].if_none_match

    fake_upstream_json.touch("pcx-alpha")
    response, _ = await json_page(proxy, "pcx-alpha")
    assert header(response, "X-Pypi-Cache") == "EXPIRED"


@ensureDeferred
async def test_pages_are_fresh_within_ttl_whatever_the_client_says(fake_upstream_json, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url, index_ttl=3600)
    await json_page(proxy, "pcx-alpha")
    response = await proxy.get("/simple/pcx-alpha/", {"Accept": PIP_ACCEPT, "Cache-Control": "max-age=0"})
    assert header(response, "X-Pypi-Cache") == "HIT"
    assert fake_upstream_json.count("/simple/pcx-alpha/") == 1


@ensureDeferred
async def test_pages_survive_a_restart(fake_upstream_json, tmp_path, start_proxy):
    cache = tmp_path / "shared-cache"
    first = await start_proxy(fake_upstream_json.simple_url, cache_dir=cache)
    await json_page(first, "pcx-alpha")
    await first.stop()
    second = await start_proxy(fake_upstream_json.simple_url, cache_dir=cache)
    response, _ = await json_page(second, "pcx-alpha")
    assert header(response, "X-Pypi-Cache") == "HIT"
    assert fake_upstream_json.count("/simple/pcx-alpha/") == 1


@ensureDeferred
async def test_project_list_and_json_api(fake_upstream_json, dists, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    response = await proxy.get("/simple/", {"Accept": PIP_ACCEPT})
    names = {p["name"] for p in json.loads(await response.content())["projects"]}
    assert {"pcx-alpha", "pcx-big"} <= {n.lower().replace("_", "-") for n in names}
    response = await proxy.get("/simple/")
    assert b'href="pcx-alpha/"' in await response.content()

    wheel = dist(dists, "pcx-alpha", "2.0")
    for path, depth in (("/pypi/pcx-alpha/json", 2), ("/pypi/pcx-alpha/2.0/json", 3)):
        response = await proxy.get(path)
        assert response.code == 200, path
        assert header(response, "Content-Type") == "application/json"
        doc = json.loads(await response.content())
        urls = [u["url"] for u in doc["urls"]]
        assert "../" * depth + wheel.pypi_path.lstrip("/") in urls
        assert not any(u.startswith("http") for u in urls)
        fetched = await proxy.get(urljoin(proxy.base_url + path, urls[0]))
        assert fetched.code == 200
    response = await proxy.get("/pypi/Pcx_Alpha/json")
    assert response.code == 301 and header(response, "Location") == "/pypi/pcx-alpha/json"


@ensureDeferred
async def test_two_proxies_chained(fake_upstream_json, dists, start_proxy):
    central = await start_proxy(fake_upstream_json.simple_url)
    site = await start_proxy(central.index_url)
    wheel = dist(dists, "pcx-alpha", "2.0")
    for accept in (PIP_ACCEPT, "text/html"):
        response = await site.get("/simple/pcx-alpha/", {"Accept": accept})
        body = (await response.content()).decode()
        assert "../.." + wheel.pypi_path in body
    response = await site.get(wheel.pypi_path)
    assert await response.content() == wheel.data
    assert header(response, "X-Pypi-Cache") == "MISS"
    response = await central.get(wheel.pypi_path)
    assert header(response, "X-Pypi-Cache") == "HIT"
    assert fake_upstream_json.count(wheel.pypi_path) == 1
    assert fake_upstream_json.count("/simple/pcx-alpha/") == 1


@ensureDeferred
async def test_methods_and_long_uris(fake_upstream_json, start_proxy):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    response = await proxy.get("/simple/", method="POST")
    assert response.code == 405 and header(response, "Allow") == "GET, HEAD"
    response = await proxy.get("/simple/" + "a" * 9000 + "/")
    assert response.code in (400, 414)
    response = await proxy.get("/nothing-here")
    assert response.code == 404
    response = await proxy.get("/")
    assert response.code == 200


@ensureDeferred
async def test_a_new_release_is_found_before_the_page_expires(fake_upstream_json, start_proxy):
    from twisted.internet.task import Clock

    from .wheels import build_wheel

    clock = Clock()
    proxy = await start_proxy(fake_upstream_json.simple_url, clock=clock, index_ttl=600)
    await json_page(proxy, "pcx-alpha")
    new = build_wheel("pcx-alpha", "3.0")
    fake_upstream_json.add(new)
    clock.advance(11)  # the page is still fresh, but older than the early-refresh floor
    response = await proxy.get(new.pypi_path)
    assert response.code == 200 and await response.content() == new.data
    assert fake_upstream_json.count("/simple/pcx-alpha/") == 2
    # a name no page will ever link costs no more than one early refresh per 10 s
    for _ in range(3):
        assert (await proxy.get(new.pypi_path.replace("3.0", "9.9"))).code == 404
    assert fake_upstream_json.count("/simple/pcx-alpha/") == 2
