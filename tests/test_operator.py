"""
What the operator sees and does: /metrics, /health, /stats, the status page, the admin endpoints
and command. In memory (tests/memory.py), but for what needs a socket: a real browser, and the
admin command, a process of its own that talks to the daemon over HTTP.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pytest_twisted import ensureDeferred
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.client import ResponseFailed, ResponseNeverReceived

from pypicached.base.disk import run_inline
from pypicached.config import Settings
from pypicached.ops.health import Health
from pypicached.ops.summary import human_bytes
from pypicached.service import Proxy
from pypicached.simpleapi.negotiation import UPSTREAM_ACCEPT
from pypicached.upstream.breaker import UpstreamHealth

from .drawing import Drawing
from .fake_upstream import FakeUpstream
from .installers import clean_env, run_process
from .memory import World
from .operator_tools import ADMIN, samples
from .proxy_rig import settled

TOKEN = "s3cret-token-0123456789"


def wheel_of(dists, project="pcx-alpha", version="2.0"):
    return next(d for d in dists[project] if d.filename.endswith(f"{version}-py3-none-any.whl"))


def fetch(world: World, path: str, headers: dict[str, str] | None = None):
    """The response and its body (None, None if the proxy broke the connection off)."""
    try:
        reply = world.get(path, headers)
    except (ResponseFailed, ResponseNeverReceived):
        return None, None
    return reply, reply.body


def fill(world: World, dists):
    """A page MISS, the wheel MISS, then the wheel HIT: known figures for the tests below."""
    wheel = wheel_of(dists)
    fetch(world, "/simple/pcx-alpha/")
    response, body = fetch(world, wheel.pypi_path)
    assert response.header("X-Pypi-Cache") == "MISS" and body == wheel.data
    response, body = fetch(world, wheel.pypi_path)
    assert response.header("X-Pypi-Cache") == "HIT" and body == wheel.data
    return wheel


def test_metrics_count_requests_bytes_and_the_upstream(dists, make_world):
    world = make_world()
    wheel = fill(world, dists)
    world.upstream.behaviour["/simple/pcx-beta/"] = "status:503"
    assert fetch(world, "/simple/pcx-beta/")[0].code == 502

    response, body = fetch(world, "/metrics")
    assert response.code == 200 and response.header("Content-Type").startswith("text/plain")
    m = samples(body.decode())
    assert m[("pypicached_requests_total", (("cache", "MISS"), ("kind", "file")))] == 1
    assert m[("pypicached_requests_total", (("cache", "HIT"), ("kind", "file")))] == 1
    assert m[("pypicached_requests_total", (("cache", "MISS"), ("kind", "page")))] == 1
    served = m[("pypicached_served_bytes_total", ())]
    fetched = m[("pypicached_upstream_fetched_bytes_total", ())]
    client_page = fetch(world, "/simple/pcx-alpha/")[1]
    upstream_page = world.upstream_get("/simple/pcx-alpha/", {"Accept": UPSTREAM_ACCEPT}).body
    error_body = world.upstream_get("/simple/pcx-beta/").body
    assert served == len(client_page) + 2 * wheel.size + len(b"upstream answered 503 Service Unavailable for ") + len(
        world.upstream.simple_url + "pcx-beta/\n"
    )
    assert fetched == len(upstream_page) + wheel.size + len(error_body)
    assert m[("pypicached_saved_bytes", ())] == served - fetched
    assert m[("pypicached_upstream_requests_total", (("outcome", "2xx"),))] == 2  # the page and the wheel
    assert m[("pypicached_upstream_requests_total", (("outcome", "5xx"),))] == 1
    assert m[("pypicached_upstream_errors_total", ())] == 1
    assert m[("pypicached_upstream_response_seconds_count", ())] == 3
    assert m[("pypicached_downloads_in_flight", ())] == 0
    assert m[("pypicached_cache_files", ())] == 1 and m[("pypicached_cache_size_bytes", ())] == wheel.size
    assert m[("pypicached_digest_mismatches_total", ())] == 0
    assert m[("pypicached_evictions_total", ())] == 0
    assert ("pypicached_stale_pages_served_total", ()) in m


def test_digest_mismatches_and_stale_pages_are_counted(dists, make_world):
    world = make_world(index_ttl=60)
    wheel = wheel_of(dists)
    fetch(world, "/simple/pcx-alpha/")
    world.upstream.behaviour[wheel.pypi_path] = "corrupt"
    response, body = fetch(world, wheel.pypi_path)
    assert body is None  # the proxy broke the connection off: the digest did not match
    world.advance(61)
    world.upstream.behaviour["/simple/pcx-alpha/"] = "status:500"
    assert fetch(world, "/simple/pcx-alpha/")[0].header("X-Pypi-Cache") == "STALE"

    m = samples(fetch(world, "/metrics")[1].decode())
    assert m[("pypicached_digest_mismatches_total", ())] == 1
    assert m[("pypicached_stale_pages_served_total", ())] == 1
    stats = json.loads(fetch(world, "/stats")[1])
    assert stats["digest_mismatches"] == 1 and stats["stale_pages_served"] == 1
    assert [e["error"] for e in stats["upstream"]["recent_errors"]] == ["answered 500"]


def test_health_is_ok_while_the_upstream_is_down_and_fails_when_the_disk_does(make_world):
    world = make_world()
    fetch(world, "/simple/pcx-alpha/")
    response, body = fetch(world, "/health")
    health = json.loads(body)
    assert response.code == 200 and health["status"] == "ok" and health["cache_dir_writable"] is True
    assert health["upstream"]["last_answer"] is not None and health["upstream"]["last_error"] is None

    world.upstream.behaviour["/simple/pcx-beta/"] = "status:503"
    fetch(world, "/simple/pcx-beta/")
    response, body = fetch(world, "/health")
    health = json.loads(body)
    assert response.code == 200, body  # the upstream's outage is reported, not judged
    assert health["upstream"]["last_error_reason"] == "answered 503"

    # in memory no disk write is ever under way in tmp/ while it goes
    tmp = Path(world.proxy.settings.cache_dir) / "tmp"
    shutil.rmtree(tmp)
    tmp.write_text("not a directory")  # even root cannot write into this
    try:
        response, body = fetch(world, "/health")
        health = json.loads(body)
        assert response.code == 503 and health["status"] == "failing" and health["cache_dir_writable"] is False
        assert "not writable" in health["problems"][0]
    finally:
        tmp.unlink()
        tmp.mkdir()
    assert fetch(world, "/health")[0].code == 200


def test_health_fails_when_the_event_loop_stalls(tmp_path):
    clock = Clock()
    health = Health(
        clock=clock,
        directory=tmp_path,
        run_in_thread=run_inline,
        upstreams=[UpstreamHealth("http://upstream.invalid/simple/", clock)],
    )
    health.start()
    clock.advance(1)
    results = []
    from twisted.internet.defer import ensureDeferred as ensure

    ensure(health.check()).addCallback(results.append)
    assert results[0][0] is True and results[0][1]["event_loop_lag_seconds"] == 0
    clock.advance(9)  # one beat arrives 8 s late: the loop was stuck
    ensure(health.check()).addCallback(results.append)
    ok, body = results[1]
    assert not ok and body["problems"] == ["the event loop stalled for 8.0s"]
    health.stop()


def test_savings_survive_a_restart(dists, tmp_path, make_world):
    cache = tmp_path / "cache"
    world = make_world(cache_dir=cache)
    wheel = fill(world, dists)
    before = json.loads(fetch(world, "/stats")[1])
    world.stop()
    assert json.loads((cache / "state.json").read_text())["all_time"]["hits"] == before["all_time"]["hits"]

    world.advance(60)  # figures started afresh would count from now
    world.restart()
    after = json.loads(fetch(world, "/stats")[1])
    for key in ("served_bytes", "fetched_bytes", "saved_bytes", "hits", "misses"):
        assert after["all_time"][key] == before["all_time"][key] > 0, key
    assert after["today"]["saved_bytes"] == before["today"]["saved_bytes"]
    assert after["top_projects"] == [{"project": "pcx-alpha", "saved_bytes": wheel.size}]
    assert after["counting_since"] == before["counting_since"]


@pytest.mark.parametrize(
    "damage",
    [
        "{not json",
        "[]",
        "null",
        '{"version": 1, "since": 1, "all_time": null}',
        '{"version": 1, "since": 1, "all_time": {"served": 1e400}}',
    ],
)
def test_a_damaged_state_file_starts_the_figures_afresh(tmp_path, make_world, damage):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "state.json").write_text(damage)
    world = make_world(cache_dir=cache)
    stats = json.loads(fetch(world, "/stats")[1])
    assert stats["all_time"]["served_bytes"] == 0


def test_stats_and_the_status_page(dists, make_world):
    world = make_world(max_size=10 * 1024**2)
    base_url = "http://127.0.0.1:3141"  # what the browser's Host header names
    wheel = fill(world, dists)
    response, body = fetch(world, "/stats")
    stats = json.loads(body)
    assert response.header("Content-Type") == "application/json"
    assert stats["all_time"]["hits"] == 1 and stats["all_time"]["misses"] == 2  # page and wheel fetched, wheel hit
    assert stats["all_time"]["hit_ratio"] == pytest.approx(1 / 3)
    assert stats["today"] == stats["all_time"]
    assert len(stats["days"]) == 31 and stats["days"][-1] == {"day": stats["now"][:10], **stats["today"]}
    assert all(d["served_bytes"] == d["hits"] == 0 for d in stats["days"][:-1])
    assert stats["upstream_throughput_bytes_per_second"] is None  # the wheel is too small to time the upstream
    assert stats["time_saved_seconds"] == {"today": None, "all_time": None}
    assert stats["cache"]["size_bytes"] == wheel.size and stats["cache"]["max_size_bytes"] == 10 * 1024**2
    assert stats["top_projects"] == [{"project": "pcx-alpha", "saved_bytes": wheel.size}]
    assert stats["upstream"]["url"] == world.upstream.simple_url and stats["running"] is True

    response, body = fetch(world, base_url + "/")
    page = body.decode()
    assert response.code == 200 and response.header("Content-Type") == "text/html; charset=utf-8"
    assert "33.3 %" in page and "pcx-alpha" in page
    assert f"{base_url}/simple/" in page and "PIP_TRUSTED_HOST=127.0.0.1" in page
    assert "http://" not in page.replace(base_url, "").replace(world.upstream.simple_url, "")  # no external assets


def test_fetched_bytes_are_those_that_crossed_the_link_for_gzipped_pages(dists, make_world):
    world = make_world(FakeUpstream(dists, "json", gzip_pages=True))
    response, body = fetch(world, "/simple/pcx-alpha/")
    assert response.code == 200 and b"pcx_alpha-2.0-py3-none-any.whl" in body
    compressed = world.upstream_get("/simple/pcx-alpha/", {"Accept": UPSTREAM_ACCEPT, "Accept-Encoding": "gzip"}).body
    assert compressed[:2] == b"\x1f\x8b"  # the upstream did gzip it
    m = samples(fetch(world, "/metrics")[1].decode())
    assert m[("pypicached_upstream_fetched_bytes_total", ())] == len(compressed)


# --- on loopback: a real browser ------------------------------------------------------


async def fetch_running(proxy, path, **kw):
    """``fetch`` from a proxy listening on loopback (tests/proxy_rig.py)."""
    try:
        response = await proxy.get(path, **kw)
        return response, await response.content()
    except (ResponseFailed, ResponseNeverReceived):
        return None, None


async def fill_running(proxy, dists):
    """``fill`` on a proxy listening on loopback."""
    wheel = wheel_of(dists)
    await fetch_running(proxy, "/simple/pcx-alpha/")
    response, body = await fetch_running(proxy, wheel.pypi_path)
    assert response.header("X-Pypi-Cache") == "MISS" and body == wheel.data
    await settled(proxy, wheel.pypi_path)
    response, body = await fetch_running(proxy, wheel.pypi_path)
    assert response.header("X-Pypi-Cache") == "HIT" and body == wheel.data
    return wheel


@ensureDeferred
async def test_the_status_page_renders_in_a_real_browser(fake_upstream_json, dists, start_proxy, tmp_path):
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make test installs it: make browser)"
    proxy = await start_proxy(fake_upstream_json.simple_url)
    wheel = await fill_running(proxy, dists)
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={tmp_path / 'page.png'}",
        "--window-size=1200,1600",
        proxy.base_url + "/",
    ]
    shot = await run_process(argv, env=clean_env(tmp_path), timeout=120)
    assert (tmp_path / "page.png").stat().st_size > 10_000, shot.output
    before = json.loads((await fetch_running(proxy, "/stats"))[1])
    dom = await run_process([*argv[:-3], "--dump-dom", proxy.base_url + "/"], env=clean_env(tmp_path), timeout=120)
    after = json.loads((await fetch_running(proxy, "/stats"))[1])
    html = dom.check().out
    drawn = Drawing(html).days
    # the chart as the browser holds it: the same 31 days and numbers as /stats (whichever side of midnight)
    days = next(s["days"] for s in (after, before) if s["days"][-1]["day"] == drawn[-1]["data"]["day"])
    assert [_drawn_figures(d) for d in drawn] == [_stats_figures(d) for d in days]
    assert len(drawn) == 31 and days[-1]["served_bytes"] > days[-1]["fetched_bytes"] > 0
    assert all(set(d["bars"]) == {"column", "fetched", "cached", "ratio"} for d in drawn)
    assert '<svg id="chart" viewBox="0 0 ' in html  # case kept: the browser parsed it as SVG, not an unknown tag
    assert "No estimate of the download time saved yet" in html  # the wheel is too small to time the upstream
    assert '<div class="card" id="hit-ratio">Hit ratio, all time<b>33.3 %</b>' in html
    saved = human_bytes(wheel.size)
    assert f'<tr><td>pcx-alpha</td><td class="n">{saved}</td></tr>' in html
    assert f"export PIP_INDEX_URL={proxy.base_url}/simple/" in html
    assert "<title>pypicached</title>" in html


def _drawn_figures(day: dict) -> tuple:
    d = day["data"]
    ratio = float(d["hit-ratio"]) if d["hit-ratio"] else None
    return d["day"], int(d["served"]), int(d["fetched"]), int(d["saved"]), int(d["hits"]), int(d["misses"]), ratio


def _stats_figures(day: dict) -> tuple:
    keys = ("day", "served_bytes", "fetched_bytes", "saved_bytes", "hits", "misses", "hit_ratio")
    return tuple(day[k] for k in keys)


# --- admin endpoints -----------------------------------------------------------------


def _memory_proxy(tmp_path: Path, **settings) -> Proxy:
    reactor = MemoryReactorClock()
    return Proxy(
        Settings.of(upstream="http://upstream.invalid/simple/", cache_dir=tmp_path, **settings),
        reactor,
        run_in_thread=run_inline,
    )


def _ask(proxy: Proxy, host: str, request: bytes) -> bytes:
    """Send one request over an in-memory connection from ``host``; the raw response."""
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
    channel = proxy.site.buildProtocol(transport.getPeer())
    channel.makeConnection(transport)
    channel.dataReceived(request)
    return transport.value()


def _purge(extra: str = "") -> bytes:
    return f"POST /admin/purge/pcx-alpha HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n{extra}\r\n".encode()


def test_a_lan_client_cannot_purge(tmp_path):
    proxy = _memory_proxy(tmp_path)
    assert _ask(proxy, "192.168.1.20", _purge()).startswith(b"HTTP/1.1 403 ")
    assert _ask(proxy, "127.0.0.1", _purge("X-Forwarded-For: 192.168.1.20\r\n")).startswith(b"HTTP/1.1 403 ")
    assert _ask(proxy, "127.0.0.1", _purge("Via: 1.1 nginx\r\n")).startswith(b"HTTP/1.1 403 ")
    # a web page in a browser on the proxy's host: a cross-site POST carries Origin
    assert _ask(proxy, "127.0.0.1", _purge("Origin: https://evil.example\r\n")).startswith(b"HTTP/1.1 403 ")
    reply = _ask(proxy, "127.0.0.1", _purge())
    assert reply.startswith(b"HTTP/1.1 200 ") and b'"project": "pcx-alpha"' in reply
    # reading is for everyone; GET on an admin path is refused
    assert _ask(proxy, "192.168.1.20", b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    assert _ask(proxy, "127.0.0.1", b"GET /admin/purge/x HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405 ")


def test_with_a_token_configured_every_client_needs_it(tmp_path):
    proxy = _memory_proxy(tmp_path, admin_token=TOKEN)
    reply = _ask(proxy, "192.168.1.20", _purge())
    assert reply.startswith(b"HTTP/1.1 401 ") and b'WWW-Authenticate: Bearer realm="pypicached"' in reply
    assert _ask(proxy, "192.168.1.20", _purge("Authorization: Bearer wrong-0123456789abcdef\r\n")).startswith(
        b"HTTP/1.1 401 "
    )
    assert _ask(proxy, "192.168.1.20", _purge(f"Authorization: Bearer {TOKEN}\r\n")).startswith(b"HTTP/1.1 200 ")
    # with a token configured loopback needs it too (a reverse proxy here may add no forwarding header)
    assert _ask(proxy, "127.0.0.1", _purge()).startswith(b"HTTP/1.1 401 ")


# --- the admin command ---------------------------------------------------------------


async def admin(proxy, *args, tmp_path, url=None):
    argv = [ADMIN, "--cache-dir", str(proxy.proxy.settings.cache_dir), "--url", url or proxy.base_url, *args]
    return await run_process(argv, env=clean_env(tmp_path), timeout=120)


@ensureDeferred
async def test_admin_purge_and_purge_file(fake_upstream_json, dists, start_proxy, tmp_path):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    wheel = await fill_running(proxy, dists)
    pages = fake_upstream_json.count("/simple/pcx-alpha/")

    result = (await admin(proxy, "purge", "PCX_Alpha", tmp_path=tmp_path)).check()
    assert "Purged 1 index page(s) of pcx-alpha" in result.out
    assert (await fetch_running(proxy, "/simple/pcx-alpha/"))[0].header("X-Pypi-Cache") == "MISS"
    assert fake_upstream_json.count("/simple/pcx-alpha/") == pages + 1

    result = (await admin(proxy, "purge-file", proxy.base_url + wheel.pypi_path, tmp_path=tmp_path)).check()
    assert "Removed 1 file(s)" in result.out and wheel.filename in result.out
    assert json.loads((await fetch_running(proxy, "/stats"))[1])["cache"]["files"] == 0
    response, body = await fetch_running(proxy, wheel.pypi_path)
    assert response.header("X-Pypi-Cache") == "MISS" and body == wheel.data

    result = await admin(proxy, "purge-file", "nothing-1.0.tar.gz", tmp_path=tmp_path)
    assert result.code == 1 and "not in the cache" in result.out


@ensureDeferred
async def test_admin_works_on_the_directory_when_no_daemon_runs(fake_upstream_json, dists, start_proxy, tmp_path):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    wheel = await fill_running(proxy, dists)
    url = proxy.base_url
    await proxy.stop()
    cache = Path(proxy.proxy.settings.cache_dir)

    result = (await admin(proxy, "stats", "--json", tmp_path=tmp_path, url=url)).check()
    stats = json.loads(result.out.split("\n", 1)[1])  # after the "(no daemon answers ...)" note
    assert stats["running"] is False and stats["cache"]["files"] == 1 and stats["all_time"]["hits"] == 1
    result = (await admin(proxy, "purge", "pcx-alpha", tmp_path=tmp_path, url=url)).check()
    assert "no daemon answers" in result.out and not list(cache.glob("pages/*/simple/pcx-alpha.json"))
    result = (await admin(proxy, "purge-file", wheel.filename, tmp_path=tmp_path, url=url)).check()
    assert not list(cache.glob(f"files/**/{wheel.filename}"))


@ensureDeferred
async def test_admin_stats_from_the_daemon(fake_upstream_json, dists, start_proxy, tmp_path):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    await fill_running(proxy, dists)
    result = (await admin(proxy, "stats", tmp_path=tmp_path)).check()
    assert "running since" in result.out and "hit ratio 33.3 %" in result.out and "pcx-alpha" in result.out


@ensureDeferred
async def test_admin_verify_drops_a_damaged_file(fake_upstream_json, dists, start_proxy, tmp_path):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    wheel = await fill_running(proxy, dists)
    beta = next(d for d in dists["pcx-beta"] if d.filename.endswith(".whl"))
    await fetch_running(proxy, "/simple/pcx-beta/")
    await fetch_running(proxy, beta.pypi_path)
    await settled(proxy, beta.pypi_path)
    cache = Path(proxy.proxy.settings.cache_dir)
    damaged = next(cache.glob(f"files/**/{wheel.filename}"))
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))

    result = await admin(proxy, "verify", tmp_path=tmp_path)
    assert result.code == 1, result.output
    assert "Checked 2 files" in result.out and "1 good, 1 bad (deleted)" in result.out
    assert "BAD packages/" in result.out and wheel.filename in result.out
    assert not damaged.exists() and next(cache.glob(f"files/**/{beta.filename}")).exists()
    response, body = await fetch_running(proxy, wheel.pypi_path)  # fetched afresh, good again
    assert response.header("X-Pypi-Cache") == "MISS" and body == wheel.data
    await settled(proxy, wheel.pypi_path)
    assert (await admin(proxy, "verify", tmp_path=tmp_path)).check().out.count("2 good, 0 bad") == 1


def test_the_progress_bar_draws_only_on_a_terminal():
    import io

    from pypicached.admin.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown, hidden = Terminal(), io.StringIO()
    for stream in (shown, hidden):
        bar = Progress(stream, "verify", 2048, 2)
        bar.advance(1024, 1)
        bar.advance(1024, 1)
        bar.finish()
    assert "verify [###############...............]  50.0% 1/2" in shown.getvalue()
    assert "100.0% 2/2 2.0 KiB" in shown.getvalue() and shown.getvalue().endswith("\n")
    assert hidden.getvalue() == ""


@ensureDeferred
async def test_admin_prefetch_fills_the_cache(fake_upstream_json, dists, start_proxy, tmp_path):
    proxy = await start_proxy(fake_upstream_json.simple_url)
    requirements = tmp_path / "requirements.txt"
    (tmp_path / "more.txt").write_text("pcx-beta==0.1 ; python_version >= '3'\n")
    requirements.write_text(
        "# pinned for CI\n"
        "pcx-alpha==2.0 \\\n    --hash=sha256:0000\n"
        "-r more.txt\n"
        "pcx-alpha>=9  ; python_version < '3'\n"
        "no-such-project==1.0\n"
        "pcx-gamma==7.7\n"
        "--index-url http://elsewhere.invalid/simple/\n"
    )
    result = await admin(proxy, "prefetch", "-r", str(requirements), tmp_path=tmp_path)
    assert result.code == 1, result.output  # some requirements are missing
    out = result.out
    alpha, beta = wheel_of(dists), next(d for d in dists["pcx-beta"] if d.filename.endswith(".whl"))
    assert "Fetched 2 files" in out and "0 (0 B) were already cached" in out
    assert f"fetched  {alpha.filename}" in out and f"fetched  {beta.filename}" in out
    assert "MISSING  no-such-project==1.0: no such project on the index" in out
    assert "MISSING  pcx-gamma==7.7: no version or file matches" in out
    assert "skipped  pcx-alpha>=9  ; python_version < '3': its environment marker does not apply here" in out
    assert "skipped  --index-url" in out
    files = [r.path for r in fake_upstream_json.file_requests() if not r.path.endswith(".metadata")]
    assert sorted(files) == sorted([alpha.pypi_path, beta.pypi_path])

    result = await admin(proxy, "prefetch", "-r", str(tmp_path / "more.txt"), tmp_path=tmp_path)
    assert result.check().out.count("Fetched 0 files") == 1 and "1 (" in result.out
    assert [r.path for r in fake_upstream_json.file_requests() if not r.path.endswith(".metadata")].count(
        beta.pypi_path
    ) == 1


@ensureDeferred
async def test_admin_refuses_a_cache_directory_that_is_not_there(tmp_path):
    argv = [ADMIN, "--cache-dir", str(tmp_path / "typo"), "--url", "http://127.0.0.1:1", "verify"]
    result = await run_process(argv, env=clean_env(tmp_path), timeout=60)
    assert result.code == 2 and "is not a cache directory this user can read" in result.err
    result = await run_process([*argv[:-1], "purge", "pcx-alpha"], env=clean_env(tmp_path), timeout=60)
    assert result.code == 2 and "no daemon answers at http://127.0.0.1:1" in result.out


@ensureDeferred
async def test_admin_policy_check_explains_each_rule(fake_upstream_json, dists, start_proxy, tmp_path):
    from pypicached.policy.rules import deny_list

    proxy = await start_proxy(fake_upstream_json.simple_url, deny=deny_list(["pcx-alpha==2.0", "pcx-beta"]))
    result = (await admin(proxy, "policy", "check", "PCX_Alpha", tmp_path=tmp_path)).check()
    lines = result.out.splitlines()
    assert lines[0] == "pcx-alpha (index pypi)"
    assert lines[1] == "  2.0: held back (0 of 1 files shown)"
    assert lines[2] == "    hidden  pcx_alpha-2.0-py3-none-any.whl: denied by deny entry 'pcx-alpha==2.0'"
    assert lines[3] == "  1.0: served (2 of 2 files shown)"
    result = (await admin(proxy, "policy", "check", "pcx-alpha==1.0", tmp_path=tmp_path)).check()
    assert result.out.splitlines()[1:] == ["  1.0: served (2 of 2 files shown)"]
    result = (await admin(proxy, "policy", "check", "pcx-beta", tmp_path=tmp_path)).check()
    assert "DENIED: pcx-beta: denied by deny entry 'pcx-beta'" in result.out
    result = await admin(proxy, "policy", "check", "not a name", tmp_path=tmp_path)
    assert result.code == 2 and "expected NAME or NAME==VERSION" in result.err
