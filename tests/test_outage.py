"""
An upstream outage costs CI nothing: one failure marks the upstream down for every
request, cached pages are served stale at once, the rest is refused at once, and one
probe with backoff finds the upstream again. All in memory, on an injected clock.
"""

from __future__ import annotations

import json

import pytest
from twisted.logger import globalLogPublisher

from .memory import World, answered
from .wheels import Dist, build_wheel

TTL = 600
PROJECTS = [f"pcx-many-{i:02d}" for i in range(12)]


@pytest.fixture(scope="module")
def many() -> dict[str, list[Dist]]:
    return {p: [build_wheel(p, "1.0")] for p in PROJECTS}


@pytest.fixture
def world(many, tmp_path):
    worlds = []

    def make(**settings):
        w = World(many, tmp_path / f"cache{len(worlds)}", index_ttl=TTL, **settings)
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        w.stop()


@pytest.fixture
def log_lines():
    lines: list[str] = []

    def observe(event):
        if event.get("log_namespace") == "pypicached.upstream.breaker":
            from twisted.logger import formatEvent

            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def warm(w: World) -> None:
    for project in PROJECTS:
        assert w.page(project).header("X-Pypi-Cache") == "MISS"
    w.upstream.clear_log()


def break_upstream(w: World, mode: str) -> None:
    if mode == "503":
        w.upstream.behaviour_fallback = lambda record: "status:503"
    else:
        w.network.mode = mode


def mend_upstream(w: World) -> None:
    w.upstream.behaviour_fallback = None
    w.network.mode = None


def first_failure(w: World, mode: str):
    """The request that finds the upstream failing: stale in every case, after the wait the failure takes."""
    pending = w.request("/simple/pcx-many-00/", {"Accept": "text/html"})
    if mode == "hang":
        w.advance(2)  # stale_if_slow answers the client...
        reply = w.reply(pending)
        assert reply.header("X-Pypi-Cache") == "STALE"
        assert not w.proxy.upstream_health.is_down
        w.advance(8)  # ...and the revalidation times out at response_timeout (10 s)
    else:
        reply = w.reply(pending)
    assert w.proxy.upstream_health.is_down
    return reply


@pytest.mark.parametrize("mode", ["refuse", "dns", "hang", "503"])
def test_one_failure_spares_every_later_request_until_the_probe(world, mode, log_lines):
    w = world()
    warm(w)
    w.advance(TTL + 1)  # every page has expired
    break_upstream(w, mode)
    reply = first_failure(w, mode)
    assert reply.code == 200 and reply.header("X-Pypi-Cache") == "STALE" and reply.header("Warning")
    health = w.proxy.upstream_health
    down_at = health.down_since
    attempts, logged = w.network.attempts, len(w.upstream.log)

    for i in range(50):  # 50 expired pages, each answered at once from the cache
        reply = w.page(PROJECTS[i % len(PROJECTS)])
        assert reply.code == 200 and reply.header("X-Pypi-Cache") == "STALE"
        assert reply.header("Warning") is not None
        assert json.loads(reply.body)["files"]
    reply = w.get("/simple/never-seen/")
    assert reply.code == 503 and reply.header("X-Pypi-Cache") == "ERROR"
    line = reply.body.decode()
    assert line.count("\n") == 1 and w.upstream.simple_url in line and "is down since" in line and "next try at" in line
    assert (w.network.attempts, len(w.upstream.log)) == (attempts, logged)
    assert sum("is down" in line for line in log_lines) == 1

    # the probe: one request at a time, after 1, 2, 4, 8 ... seconds, never more often than upstream_retry_max
    now = w.clock.seconds()
    for delay in (1, 2, 4, 8, 16, 32, 60, 60):
        assert health.next_probe == pytest.approx(now + delay)
        w.advance(delay - 0.01)
        assert w.network.attempts == attempts
        w.advance(0.01)
        assert w.network.attempts == attempts + 1
        attempts += 1
        if mode == "hang":
            w.advance(10)  # the probe waits out response_timeout like any request
        now = w.clock.seconds()
        assert health.is_down and health.down_since == down_at

    metrics = w.get("/metrics").body.decode()
    assert f'pypicached_upstream_up{{upstream="{w.upstream.simple_url}"}} 0.0' in metrics
    assert f'pypicached_upstream_down_answers_total{{upstream="{w.upstream.simple_url}"}} 51.0' in metrics

    mend_upstream(w)
    logged = len(w.upstream.log)
    w.advance(health.next_probe - w.clock.seconds())
    assert not health.is_down
    assert sum("is back after" in line for line in log_lines) == 1
    assert [r.method for r in w.upstream.log[logged:]] == ["HEAD"]
    reply = w.page("pcx-many-01")  # the next expired page revalidates as usual
    assert reply.header("X-Pypi-Cache") in ("REVALIDATED", "EXPIRED")
    assert w.upstream.log[-1].path == "/simple/pcx-many-01/"


def test_health_and_status_page_show_the_outage(world):
    w = world()
    warm(w)
    w.advance(TTL + 1)
    break_upstream(w, "refuse")
    first_failure(w, "refuse")
    reply = w.get("/health")
    body = json.loads(reply.body)
    assert reply.code == 200 and body["status"] == "ok"  # the cache still serves: the daemon is healthy
    state = body["upstreams"][0]
    assert state["state"] == "down" and state["since"] and state["next_probe"] and "refused" in state["reason"]
    page = w.get("/").body.decode()
    assert 'class="down"' in page and "is down since" in page
    mend_upstream(w)
    w.advance(1)
    assert json.loads(w.get("/health").body)["upstreams"][0]["state"] == "up"
    assert 'class="down"' not in w.get("/").body.decode()


def test_a_slow_revalidation_serves_stale_then_updates_the_cache(world):
    w = world()  # stale_if_slow defaults to 2 s
    warm(w)
    w.advance(TTL + 1)
    w.upstream.add(build_wheel("pcx-many-03", "2.0"))
    w.upstream.behaviour["/simple/pcx-many-03/"] = "hang"
    pending = [w.request("/simple/pcx-many-03/", {"Accept": "text/html"}) for _ in range(3)]
    w.advance(1.99)
    assert not any(answered(d) for d in pending)
    w.advance(0.01)
    for d in pending:  # each waiting client gets the cached copy at 2 s
        reply = w.reply(d)
        assert reply.header("X-Pypi-Cache") == "STALE" and b"2.0" not in reply.body
    assert len(w.upstream.requests("/simple/pcx-many-03/")) == 1  # one revalidation, still waiting
    w.advance(3)  # the upstream answers after 5 s
    assert w.upstream.release_pending("/simple/pcx-many-03/") == 1
    w.flush()
    assert not w.proxy.upstream_health.is_down
    reply = w.get("/simple/pcx-many-03/", {"Accept": "text/html"})
    assert reply.header("X-Pypi-Cache") == "HIT" and b"pcx_many_03-2.0-py3-none-any.whl" in reply.body


def test_stale_if_slow_zero_waits_for_the_upstream(world):
    w = world(stale_if_slow=0)
    warm(w)
    w.advance(TTL + 1)
    w.upstream.behaviour["/simple/pcx-many-04/"] = "hang"
    pending = w.request("/simple/pcx-many-04/")
    w.advance(5)
    assert not answered(pending)
    w.upstream.release_pending("/simple/pcx-many-04/")
    assert w.reply(pending).header("X-Pypi-Cache") == "REVALIDATED"


def test_while_one_revalidation_hangs_other_expired_pages_do_not_wait(world):
    w = world()
    warm(w)
    w.advance(TTL + 1)
    w.network.mode = "hang"
    first = w.request("/simple/pcx-many-00/")
    w.advance(2)  # stale_if_slow: the first client gets the cached copy, the upstream is slow
    assert w.reply(first).header("X-Pypi-Cache") == "STALE"
    health = w.proxy.upstream_health
    assert health.is_slow and not health.is_down
    attempts = w.network.attempts
    for project in PROJECTS[1:]:  # answered at once, nothing more sent to the silent upstream
        reply = w.page(project)
        assert reply.header("X-Pypi-Cache") == "STALE" and "110" in reply.header("Warning")
    assert w.network.attempts == attempts
    assert json.loads(w.get("/health").body)["upstreams"][0]["state"] == "slow"
    w.advance(8)  # the revalidation times out at response_timeout: now it is down
    assert health.is_down and not health.is_slow
    w.network.mode = None
    w.advance(1)  # the probe answers
    assert not health.is_down and not health.is_slow
    assert w.page("pcx-many-05").header("X-Pypi-Cache") in ("REVALIDATED", "EXPIRED")


def test_a_slow_body_leaves_the_upstream_slow_only_while_it_lasts(world):
    w = world()
    warm(w)
    w.advance(TTL + 1)
    w.upstream.add(build_wheel("pcx-many-02", "2.0"))
    # the headers come at once, the body holds after its first bytes: slow, but it answered
    w.upstream.behaviour["/simple/pcx-many-02/"] = "gate:10"
    first = w.request("/simple/pcx-many-02/")
    w.advance(2)
    assert w.reply(first).header("X-Pypi-Cache") == "STALE"
    health = w.proxy.upstream_health
    assert health.is_slow
    assert w.page("pcx-many-07").header("X-Pypi-Cache") == "STALE"  # nothing else waits meanwhile
    w.upstream.gate("/simple/pcx-many-02/").open()
    w.flush()
    assert not health.is_slow  # the body came: the next expired page is asked for again
    assert w.page("pcx-many-07").header("X-Pypi-Cache") in ("REVALIDATED", "EXPIRED")
    assert b"pcx_many_02-2.0" in w.get("/simple/pcx-many-02/", {"Accept": "text/html"}).body
