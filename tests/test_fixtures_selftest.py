"""Proof that the test-support modules (wheels, fake_upstream, installers) do what they claim.

Why: every proxy test trusts these; an installer that quietly used this machine's own indexes,
or a gate that did not really hold a body, would make those tests pass for the wrong reasons.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred

from .fake_upstream import HTML_TYPE, JSON_TYPE, PIP_ACCEPT, UV_ACCEPT, FakeUpstream, start_fake_upstream
from .installers import (
    MissingTool,
    clean_env,
    find_uv,
    run_pdm,
    run_pip,
    run_poetry,
    run_process,
    run_uv,
    tool_bin,
    tool_venv,
)
from .observe import ClientLog, CuttingRelay
from .wheels import Dist, build_sdist, build_wheel

TIMEOUT = 30.0


def _reactor() -> Any:
    from twisted.internet import reactor

    return reactor


def _client() -> Any:
    """A treq client without connection reuse, so no idle connection outlives a test."""
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    reactor = _reactor()
    return HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))


def _timeout(d: Deferred, seconds: float = TIMEOUT) -> Deferred:
    return d.addTimeout(seconds, _reactor())


def _headers(**kw: str) -> dict[bytes, list[bytes]]:
    return {k.replace("_", "-").encode(): [v.encode()] for k, v in kw.items()}


def _dist(dists: dict[str, list[Dist]], filename: str) -> Dist:
    return next(d for ds in dists.values() for d in ds if d.filename == filename)


# --- wheels ---------------------------------------------------------------------------------


def test_wheel_is_well_formed_and_deterministic() -> None:
    dist = build_wheel("Foo.Bar_baz", "1.2.3", requires_dist=["six>=1"], requires_python=">=3.8", size_padding=50_000)
    assert dist == build_wheel(
        "Foo.Bar_baz", "1.2.3", requires_dist=["six>=1"], requires_python=">=3.8", size_padding=50_000
    )
    assert dist.filename == "foo_bar_baz-1.2.3-py3-none-any.whl"
    assert dist.project == "foo-bar-baz"
    assert dist.size > 50_000  # padding is stored, not compressed away
    assert dist.requires_dist == ("six>=1",)
    b = hashlib.blake2b(dist.data, digest_size=32).hexdigest()
    assert dist.pypi_path == f"/packages/{b[:2]}/{b[2:4]}/{b[4:]}/{dist.filename}"
    with zipfile.ZipFile(io.BytesIO(dist.data)) as zf:
        assert zf.testzip() is None
        assert zf.read("foo_bar_baz-1.2.3.dist-info/METADATA") == dist.metadata
        assert b'__version__ = "1.2.3"' in zf.read("foo_bar_baz/__init__.py")
        record = zf.read("foo_bar_baz-1.2.3.dist-info/RECORD").decode().splitlines()
        names = set(zf.namelist())
        for line in record:
            path, digest, size = line.rsplit(",", 2)
            assert path in names
            if digest:
                data = zf.read(path)
                expected = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                assert digest == f"sha256={expected}" and int(size) == len(data)
    assert b"Metadata-Version: 2.1\n" in dist.metadata and b"Requires-Python: >=3.8\n" in dist.metadata


def test_sdist_is_a_real_tar_gz() -> None:
    dist = build_sdist("Foo.Bar_baz", "1.0")
    assert dist == build_sdist("Foo.Bar_baz", "1.0")
    assert dist.filename == "foo_bar_baz-1.0.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(dist.data), mode="r:gz") as tf:
        assert tf.extractfile("foo_bar_baz-1.0/PKG-INFO").read() == dist.metadata  # type: ignore[union-attr]
        assert "foo_bar_baz-1.0/pyproject.toml" in tf.getnames()


@pytest_twisted.ensureDeferred
async def test_wheel_installs_with_pip_from_a_directory(tmp_path: Path) -> None:
    dist = build_wheel("pcx-local", "0.3", size_padding=1000)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / dist.filename).write_bytes(dist.data)
    target = tmp_path / "target"
    result = await run_pip(
        ["install", "--no-index", "--find-links", str(wheels), "--target", str(target), "pcx-local==0.3"],
        None,
        home=tmp_path / "home",
    )
    result.check()
    assert (target / "pcx_local-0.3.dist-info" / "METADATA").read_bytes() == dist.metadata
    imported = await run_process(
        [sys.executable, "-c", "import pcx_local; print(pcx_local.__version__)"],
        env={**clean_env(tmp_path / "home"), "PYTHONPATH": str(target)},
    )
    assert imported.check().out.strip() == "0.3"


# --- isolation ------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_isolation_defeats_machine_pip_config(tmp_path: Path) -> None:
    """With the clean env and --isolated, pip loads no config file and no PIP_* variable."""
    result = (await run_pip(["config", "list"], None, home=tmp_path)).check()
    assert result.out.strip() == ""
    debug = (await run_pip(["config", "debug"], None, home=tmp_path)).check()
    assert f"PIP_CONFIG_FILE='{os.devnull}'" in debug.out
    assert "PIP_FIND_LINKS" not in debug.out
    env = clean_env(tmp_path)
    assert not [k for k in env if k.startswith("UV_") and k != "UV_NO_CONFIG"]
    assert env["PIP_CONFIG_FILE"] == os.devnull and env["HOME"] == str(tmp_path)


# --- installers through the fake upstream ----------------------------------------------------


@pytest.mark.parametrize("flavour", ["html", "json"])
@pytest_twisted.ensureDeferred
async def test_pip_download_through_fake_upstream(
    flavour: str, request: pytest.FixtureRequest, dists: dict[str, list[Dist]], tmp_path: Path
) -> None:
    upstream: FakeUpstream = request.getfixturevalue(f"fake_upstream_{flavour}")
    dest = tmp_path / "dl"
    result = await run_pip(["download", "-v", "-d", str(dest), "pcx-beta"], upstream.simple_url, home=tmp_path / "home")
    result.check()
    alpha = _dist(dists, "pcx_alpha-2.0-py3-none-any.whl")
    beta = _dist(dists, "pcx_beta-0.1-py3-none-any.whl")
    assert sorted(p.name for p in dest.iterdir()) == sorted([alpha.filename, beta.filename])
    assert (dest / alpha.filename).read_bytes() == alpha.data
    # The files really came from the fake upstream, once each, and nothing else was consulted.
    assert upstream.count(upstream.file_path(alpha), method="GET") == 1
    assert upstream.count(upstream.file_path(beta), method="GET") == 1
    assert upstream.count("/simple/pcx-beta/") >= 1 and upstream.count("/simple/pcx-alpha/") >= 1
    assert f"Looking in indexes: {upstream.simple_url}" in result.output
    assert "/opt/" not in result.output and "Looking in links" not in result.output
    accepts = {r.accept for r in upstream.page_requests()}
    assert all(a and JSON_TYPE in a for a in accepts), accepts  # pip asks for PEP 691 JSON
    assert {r.path for r in upstream.file_requests()} <= {
        upstream.file_path(alpha),
        upstream.file_path(beta),
        upstream.metadata_path(alpha),
        upstream.metadata_path(beta),
    }


@pytest_twisted.ensureDeferred
async def test_uv_install_through_fake_upstream_json(
    fake_upstream_json: FakeUpstream, dists: dict[str, list[Dist]], tmp_path: Path
) -> None:
    if find_uv() is None:
        pytest.skip("uv is not installed in this environment (pip install uv)")
    upstream = fake_upstream_json
    target = tmp_path / "target"
    result = await run_uv(["install", "--target", str(target), "pcx-beta"], upstream.simple_url, home=tmp_path / "home")
    result.check()
    assert (target / "pcx_beta" / "__init__.py").exists()
    assert b'"2.0"' in (target / "pcx_alpha" / "__init__.py").read_bytes()
    alpha = _dist(dists, "pcx_alpha-2.0-py3-none-any.whl")
    assert upstream.count(upstream.file_path(alpha), method="GET") == 1
    pages = upstream.requests("/simple/pcx-alpha/")
    assert pages and all(r.accept and r.accept.startswith(JSON_TYPE) for r in pages)
    # PEP 658 metadata is advertised, so uv reads it instead of range requests on the wheel.
    assert upstream.count(upstream.metadata_path(alpha)) == 1
    assert not [r for r in upstream.log if r.range or r.method == "HEAD"]
    assert "/opt/" not in result.output


# --- fake upstream protocol behaviour --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_pages_negotiate_and_revalidate(fake_upstream_json: FakeUpstream) -> None:
    upstream = fake_upstream_json
    http = _client()
    url = upstream.page_url("pcx-alpha")

    first = await _timeout(http.get(url, headers=_headers(accept=PIP_ACCEPT)))
    doc = json.loads(await first.content())
    assert first.headers.getRawHeaders("content-type") == [JSON_TYPE]
    assert first.headers.getRawHeaders("vary") == ["Accept, Accept-Encoding"]
    assert first.headers.getRawHeaders("cache-control") == ["max-age=600, public"]
    assert doc["meta"]["api-version"] == "1.1" and doc["x-extra"] == {"kept": True}
    assert doc["versions"] == ["1.0", "2.0"]
    wheel = next(f for f in doc["files"] if f["filename"] == "pcx_alpha-2.0-py3-none-any.whl")
    assert wheel["requires-python"] == ">=3.8" and wheel["yanked"] is False
    assert wheel["url"].startswith(upstream.base_url + "/packages/") and wheel["x-extra"] == {"kept": True}
    assert "core-metadata" in wheel and wheel["upload-time"].endswith("Z")
    etag = first.headers.getRawHeaders("etag")[0]

    again = await _timeout(http.get(url, headers=_headers(accept=PIP_ACCEPT, if_none_match=etag)))
    assert again.code == 304 and await again.content() == b""
    assert again.headers.getRawHeaders("etag") == [etag]

    html_page = await _timeout(http.get(url, headers=_headers(accept="text/html")))
    body = (await html_page.content()).decode()
    assert html_page.headers.getRawHeaders("content-type") == ["text/html"]
    assert html_page.headers.getRawHeaders("etag") != [etag]
    assert 'data-requires-python="&gt;=3.8"' in body and 'data-core-metadata="sha256=' in body
    uv_page = await _timeout(http.get(url, headers=_headers(accept=f"{HTML_TYPE}; q=0.2, text/html; q=0.01")))
    await uv_page.content()
    assert uv_page.headers.getRawHeaders("content-type") == [HTML_TYPE]

    upstream.touch("pcx-alpha")
    changed = await _timeout(http.get(url, headers=_headers(accept=UV_ACCEPT, if_none_match=etag)))
    await changed.content()
    assert changed.code == 200 and changed.headers.getRawHeaders("etag") != [etag]

    moved = await _timeout(http.get(upstream.base_url + "/simple/PCX_Alpha/", allow_redirects=False))
    await moved.content()
    assert moved.code == 301 and moved.headers.getRawHeaders("location") == ["/simple/pcx-alpha/"]
    missing = await _timeout(http.get(upstream.page_url("no-such-project")))
    await missing.content()
    assert missing.code == 404


@pytest_twisted.ensureDeferred
async def test_html_flavour_links_are_relative(fake_upstream_html: FakeUpstream, dists: dict[str, list[Dist]]) -> None:
    upstream = fake_upstream_html
    http = _client()
    page = await _timeout(http.get(upstream.page_url("pcx-alpha"), headers=_headers(accept=PIP_ACCEPT)))
    body = (await page.content()).decode()
    alpha = _dist(dists, "pcx_alpha-2.0-py3-none-any.whl")
    assert page.headers.getRawHeaders("content-type") == ["text/html"]
    assert f'href="../../files/{alpha.filename}#sha256={alpha.sha256}"' in body
    assert 'data-requires-python="&gt;=3.8"' in body and "metadata" not in body
    since = page.headers.getRawHeaders("last-modified")[0]
    again = await _timeout(http.get(upstream.page_url("pcx-alpha"), headers=_headers(if_modified_since=since)))
    assert again.code == 304
    await again.content()


@pytest_twisted.ensureDeferred
async def test_gate_holds_the_body_until_released(
    fake_upstream_json: FakeUpstream, dists: dict[str, list[Dist]]
) -> None:
    upstream = fake_upstream_json
    big = _dist(dists, "pcx_big-1.0-py3-none-any.whl")
    path = upstream.file_path(big)
    upstream.behaviour[path] = "gate:100000"
    received: list[bytes] = []
    threshold: Deferred = Deferred()

    def collect(data: bytes) -> None:
        received.append(data)
        if not threshold.called and sum(map(len, received)) >= 100_000:
            threshold.callback(None)

    import treq

    http = _client()
    responses = [await _timeout(http.get(upstream.file_url(big), unbuffered=True)) for _ in range(2)]
    assert responses[0].length == big.size  # Content-Length (twisted keeps it out of .headers)
    body_done = treq.collect(responses[0], collect)
    second_done = treq.content(responses[1])
    await _timeout(upstream.gate(path).reached(2))
    await _timeout(threshold)  # the pre-gate bytes really reached the client ...
    assert upstream.gate(path).waiting == 2
    assert not body_done.called and not second_done.called  # ... and the rest is held
    assert sum(map(len, received)) == 100_000
    upstream.release(path)
    await _timeout(body_done)
    assert b"".join(received) == big.data
    assert await _timeout(second_done) == big.data


@pytest_twisted.ensureDeferred
async def test_misbehaviours(fake_upstream_json: FakeUpstream, dists: dict[str, list[Dist]]) -> None:
    from twisted.web.client import ResponseFailed

    upstream = fake_upstream_json
    http = _client()
    alpha = _dist(dists, "pcx_alpha-2.0-py3-none-any.whl")
    url, path = upstream.file_url(alpha), upstream.file_path(alpha)

    upstream.behaviour[path] = ["status:503"]  # once, then normal
    assert (await _timeout(http.get(url))).code == 503
    ok = await _timeout(http.get(url))
    assert ok.code == 200 and await ok.content() == alpha.data

    upstream.behaviour[path] = "corrupt"
    corrupt = await (await _timeout(http.get(url))).content()
    assert len(corrupt) == alpha.size and corrupt != alpha.data

    upstream.behaviour[path] = "truncate"
    cut = await _timeout(http.get(url))
    with pytest.raises(ResponseFailed):
        await _timeout(cut.content())

    upstream.behaviour[path] = "hang"
    seen = upstream.count(path)
    hung = http.get(url)
    answered: list[object] = []
    hung.addBoth(lambda r: answered.append(r) or r)
    await _timeout(upstream.wait_for_requests(path, count=seen + 1))
    assert [p.record.path for p in upstream.pending] == [path] and not answered
    assert upstream.release_pending(path) == 1
    released = await _timeout(hung)
    assert await released.content() == alpha.data

    del upstream.behaviour[path]
    partial = await _timeout(http.get(url, headers=_headers(range="bytes=10-19")))
    assert partial.code == 206 and await partial.content() == alpha.data[10:20]
    assert partial.headers.getRawHeaders("content-range") == [f"bytes 10-19/{alpha.size}"]
    beyond = await _timeout(http.get(url, headers=_headers(range=f"bytes={alpha.size}-")))
    assert beyond.code == 416 and beyond.headers.getRawHeaders("content-range") == [f"bytes */{alpha.size}"]
    await beyond.content()
    suffix = await _timeout(http.get(url, headers=_headers(range="bytes=-100000")))
    assert suffix.code == 206 and await suffix.content() == alpha.data
    meta = await _timeout(http.get(url + ".metadata"))
    assert await meta.content() == alpha.metadata
    head = await _timeout(http.head(url))
    assert head.code == 200 and head.headers.getRawHeaders("accept-ranges") == ["bytes"]

    legacy = await _timeout(http.get(upstream.base_url + "/pypi/pcx-alpha/json"))
    doc = json.loads(await legacy.content())
    assert doc["info"]["version"] == "2.0" and set(doc["releases"]) == {"1.0", "2.0"}
    assert doc["urls"][0]["digests"]["blake2b_256"] == alpha.blake2b_256
    assert doc["urls"][0]["url"] == url


@pytest_twisted.ensureDeferred
async def test_stop_closes_held_connections(dists: dict[str, list[Dist]]) -> None:
    """stop() must not wait for hung or gated responses: it aborts them and returns."""
    from twisted.web.client import ResponseFailed, ResponseNeverReceived

    upstream = FakeUpstream(dists, "json")
    listening = start_fake_upstream(upstream)
    big = _dist(dists, "pcx_big-1.0-py3-none-any.whl")
    upstream.behaviour[upstream.file_path(big)] = "gate:10"
    upstream.behaviour[upstream.page_path("pcx-big")] = "hang"
    http = _client()
    hung = http.get(upstream.page_url("pcx-big"))
    gated = await _timeout(http.get(upstream.file_url(big), unbuffered=True))
    body = gated.content()
    await _timeout(upstream.gate(upstream.file_path(big)).reached())
    await _timeout(upstream.wait_for_requests(upstream.page_path("pcx-big")))
    await _timeout(listening.stop())
    with pytest.raises(ResponseNeverReceived):
        await _timeout(hung)
    with pytest.raises(ResponseFailed):
        await _timeout(body)


# --- the compatibility matrix's support -------------------------------------------------------


def test_clean_env_drops_poetry_pdm_and_venv_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POETRY_CACHE_DIR", "/elsewhere/poetry")
    monkeypatch.setenv("POETRY_REPOSITORIES_X_URL", "http://elsewhere/simple/")
    monkeypatch.setenv("PDM_PYPI_URL", "http://elsewhere/simple/")
    monkeypatch.setenv("VIRTUAL_ENV", "/elsewhere/venv")
    monkeypatch.setenv("HTTPS_PROXY", "http://elsewhere:3128")
    env = clean_env(tmp_path)
    assert "POETRY_REPOSITORIES_X_URL" not in env and "PDM_PYPI_URL" not in env and "VIRTUAL_ENV" not in env
    for key in ("POETRY_CACHE_DIR", "POETRY_CONFIG_DIR", "PDM_CACHE_DIR", "PDM_CONFIG_FILE"):
        assert env[key].startswith(str(tmp_path)), key
    assert env["PDM_CHECK_UPDATE"] == "false"
    assert env["HTTPS_PROXY"] == env["https_proxy"] == "http://127.0.0.1:9"
    assert "127.0.0.1" in env["NO_PROXY"].split(",") and "localhost" in env["NO_PROXY"].split(",")


@pytest_twisted.ensureDeferred
async def test_clean_env_blocks_hosts_other_than_loopback(tmp_path: Path) -> None:
    """A request to any other host goes to the closed proxy port and is refused at once."""
    probe = (
        "import urllib.request, sys\n"
        "try:\n"
        "    urllib.request.urlopen('http://pypicached-selftest.invalid/simple/', timeout=20)\n"
        "except Exception as e:\n"
        "    print(repr(e))\n"
    )
    result = (await run_process([sys.executable, "-c", probe], env=clean_env(tmp_path), timeout=60)).check()
    assert "Connection refused" in result.out, result.out


@pytest_twisted.ensureDeferred
async def test_poetry_and_pdm_see_only_the_temporary_home(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "0"\nrequires-python = ">=3.11"\n')
    poetry = (await run_poetry(["config", "--list"], cwd=project, home=tmp_path / "h1")).check()
    # poetry lists a setting as `key = "default"  # value in effect` when an env var sets it
    cache_line = next(line for line in poetry.out.splitlines() if line.startswith("cache-dir = "))
    assert cache_line.endswith(str(tmp_path / "h1" / "poetry-cache")), cache_line
    assert "repositories." not in poetry.out and "virtualenvs.in-project = true" in poetry.out
    for key, value in (("cache_dir", str(tmp_path / "h2" / "pdm-cache")), ("check_update", "False")):
        pdm = (await run_pdm(["config", key], cwd=project, home=tmp_path / "h2")).check()
        assert pdm.out.strip() == value, (key, pdm.out)


def test_missing_installer_environment_fails_with_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPICACHED_TOOLS", str(tmp_path))
    with pytest.raises(MissingTool, match=r"make tools") as caught:
        tool_bin("poetry")
    assert isinstance(caught.value, AssertionError)  # a failure, never a skip
    assert "tests/installer-pins/poetry.txt" in str(caught.value)
    (tmp_path / "pdm" / "bin").mkdir(parents=True)
    (tmp_path / "pdm" / "bin" / "pdm").touch()
    with pytest.raises(MissingTool):  # not finished building: no .installed stamp
        tool_venv("pdm")
    (tmp_path / "pdm" / ".installed").touch()
    assert tool_bin("pdm") == str(tmp_path / "pdm" / "bin" / "pdm")


@pytest_twisted.ensureDeferred
async def test_upstream_without_core_metadata(dists: dict[str, list[Dist]]) -> None:
    big = _dist(dists, "pcx_big-1.0-py3-none-any.whl")
    alpha = _dist(dists, "pcx_alpha-2.0-py3-none-any.whl")
    upstream = FakeUpstream(dists, "json", core_metadata=lambda d: d.filename == big.filename)
    listening = start_fake_upstream(upstream)
    try:
        http = _client()
        page = await _timeout(http.get(upstream.page_url("pcx-alpha"), headers=_headers(accept=PIP_ACCEPT)))
        entry = next(f for f in json.loads(await page.content())["files"] if f["filename"] == alpha.filename)
        assert "core-metadata" not in entry and "data-dist-info-metadata" not in entry
        assert entry["upload-time"].endswith("Z")  # PEP 700 keys stay
        html_page = await _timeout(http.get(upstream.page_url("pcx-alpha"), headers=_headers(accept="text/html")))
        assert b"metadata" not in await html_page.content()
        missing = await _timeout(http.get(upstream.file_url(alpha) + ".metadata"))
        await missing.content()
        assert missing.code == 404
        kept = await _timeout(http.get(upstream.file_url(big) + ".metadata"))
        assert kept.code == 200 and await kept.content() == big.metadata
    finally:
        await _timeout(listening.stop())


@pytest_twisted.ensureDeferred
async def test_client_log_and_cutting_relay(
    fake_upstream_json: FakeUpstream, dists: dict[str, list[Dist]], start_proxy: Any
) -> None:
    big = _dist(dists, "pcx_big-1.0-py3-none-any.whl")
    proxy = await start_proxy(fake_upstream_json.simple_url)
    clients = ClientLog.attach(proxy.proxy.site)
    relay = CuttingRelay("127.0.0.1", proxy.port_number, target=big.filename, cut_after=100_000)
    port = relay.listen()
    try:
        http = _client()
        base = f"http://127.0.0.1:{port}"
        page = await _timeout(http.get(base + "/simple/pcx-big/", headers=_headers(accept=PIP_ACCEPT)))
        url = urljoin(base + "/simple/pcx-big/", json.loads(await page.content())["files"][0]["url"])
        assert url.endswith(big.filename)
        cut = await _timeout(http.get(url, unbuffered=True))
        received: list[bytes] = []
        failed: list[Any] = []
        collected = cut.collect(received.append).addErrback(failed.append)
        line = await _timeout(relay.cut)
        await _timeout(collected)
        assert failed and 0 < sum(len(b) for b in received) < 100_000  # the body ended early
        assert line.startswith(b"GET /packages/") and big.filename.encode() in line
        await _timeout(fake_upstream_json.wait_for_requests(fake_upstream_json.file_path(big)))
        ranged = await _timeout(
            http.get(url, headers=_headers(range="bytes=-10", if_range=cut.headers.getRawHeaders("etag")[0]))
        )
        assert ranged.code == 206 and await ranged.content() == big.data[-10:]
        whole = await _timeout(http.get(url))
        assert await whole.content() == big.data  # only the first response was cut
    finally:
        await relay.stop()
    page_request, first, second, third = clients.requests
    assert page_request.path == "/simple/pcx-big/" and page_request.code == 200 and page_request.cache == "MISS"
    assert first.path.endswith(big.filename) and first.range is None and not first.finished and first.etag
    assert second.range == "bytes=-10" and second.header("if-range") == first.etag
    assert (
        second.code == 206
        and second.content_range == f"bytes {big.size - 10}-{big.size - 1}/{big.size}"
        and second.sent == 10
    )
    assert third.code == 200 and third.finished and third.sent == big.size and third.cache in ("HIT", "JOINED")
