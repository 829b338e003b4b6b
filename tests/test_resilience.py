"""What a review found: a probe that could hang for ever, a full disk under pages, a lost rendering."""

from __future__ import annotations

import errno
import json

import pytest

from pypicached.cache import fetch as fetch_module
from pypicached.cache import rendered
from pypicached.cache.pagekind import INDEX, PROJECT, PageKey
from pypicached.upstream.client import PROBE_TIMEOUT, _as_uri

from .memory import World
from .wheels import build_wheel

TTL = 600


@pytest.fixture
def world(tmp_path):
    worlds = []

    def make(**settings):
        w = World(
            {"pcx-res": [build_wheel("pcx-res", "1.0")]}, tmp_path / f"cache{len(worlds)}", index_ttl=TTL, **settings
        )
        worlds.append(w)
        return w

    yield make
    for w in worlds:
        w.stop()


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_probe_is_bounded_even_when_requests_are_not(world):
    w = world(response_timeout=0)  # no limit for requests...
    w.network.mode = "refuse"
    assert w.get("/simple/pcx-res/").code == 502
    health = w.proxy.upstream_health
    assert health.is_down
    w.network.mode = "hang"  # ...the upstream now accepts and never answers the probe
    w.advance(1)
    attempts = w.network.attempts
    w.advance(PROBE_TIMEOUT)  # the probe gives up, and the next one is scheduled
    assert health.is_down and health.next_probe is not None
    w.network.mode = None
    w.advance(health.next_probe - w.clock.seconds())
    assert not health.is_down and w.network.attempts > attempts


def test_a_full_disk_still_serves_pages_from_memory(world, monkeypatch):
    w = world()
    expected = w.page("pcx-res").body
    w.stop()
    cold = world()  # an empty cache: every rendering must be made now, and the disk refuses them
    monkeypatch.setattr(rendered, "atomic_write", full_disk)
    reply = cold.page("pcx-res")
    assert reply.code == 200 and reply.body == expected
    gz = cold.get("/simple/pcx-res/", {"Accept": "text/html", "Accept-Encoding": "gzip"})
    assert gz.code == 200
    monkeypatch.undo()
    assert cold.page("pcx-res").body == expected  # the disk works again: rendered onto it this time


def test_a_project_list_that_cannot_be_stored_is_a_503_or_the_stale_copy(world, monkeypatch):
    w = world()
    monkeypatch.setattr(fetch_module.projectlist, "convert", full_disk)
    reply = w.get("/simple/")
    assert reply.code == 503 and b"cannot store the page" in reply.body
    monkeypatch.undo()
    assert w.get("/simple/").code == 200
    w.advance(TTL + 1)
    w.upstream.add(build_wheel("pcx-new", "1.0"))
    monkeypatch.setattr(fetch_module.projectlist, "convert", full_disk)
    reply = w.get("/simple/", {"Accept": "text/html"})
    assert reply.code == 200 and reply.header("X-Pypi-Cache") == "STALE" and b"pcx-new" not in reply.body


def test_losing_an_old_version_keeps_the_new_record(world):
    w = world()
    assert w.get("/simple/").code == 200
    pages = w.proxy.pages
    old = pages.cached(PageKey(INDEX))
    w.advance(TTL + 1)
    w.upstream.add(build_wheel("pcx-new", "1.0"))
    assert b"pcx-new" in w.get("/simple/", {"Accept": "text/html"}).body
    new = pages.cached(PageKey(INDEX))
    assert new.version != old.version
    w.proxy.pages.lost(old)
    w.flush()
    assert pages.cached(PageKey(INDEX)) is new
    record = w.proxy.settings.cache_dir / "pages" / pages.urls.key / "index.json"
    assert json.loads(record.read_bytes())["version"] == new.version


def test_an_ascii_url_is_sent_as_it_is():
    assert _as_uri("http://devpi_server:3141/root/pypi/+simple/x/") == b"http://devpi_server:3141/root/pypi/+simple/x/"
    assert _as_uri("http://h.example/p/caf\u00e9.whl") == b"http://h.example/p/caf%C3%A9.whl"


class HeldDisk:
    """Disk work that waits until the test lets it run, so that it can land in any order."""

    def __init__(self) -> None:
        self.hold = False
        self.queue: list = []

    def __call__(self, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        from twisted.internet.defer import Deferred

        d: Deferred = Deferred()
        if self.hold:
            self.queue.append((f, args, kwargs, d))
        else:
            d.callback(f(*args, **kwargs))
        return d

    def release(self) -> None:
        while self.queue:
            f, args, kwargs, d = self.queue.pop(0)
            d.callback(f(*args, **kwargs))


def test_page_versions_are_stored_in_the_order_they_came(tmp_path):
    from twisted.web.client import BrowserLikeRedirectAgent

    from pypicached.service import Proxy

    class HeldWorld(World):
        def _start(self, settings):  # type: ignore[no-untyped-def]
            self.disk = HeldDisk()
            self.proxy = Proxy(
                settings,
                self.clock,
                clock=self.clock,
                run_in_thread=self.disk,
                agent=BrowserLikeRedirectAgent(self.network),
            )
            self.proxy.start()
            self._client = self._connect(self.proxy.site)

    w = HeldWorld({"pcx-res": [build_wheel("pcx-res", "1.0")]}, tmp_path / "cache", index_ttl=0)
    try:
        assert w.page("pcx-res").header("X-Pypi-Cache") == "MISS"
        w.disk.hold = True
        w.request("/simple/pcx-res/")  # revalidated: the store of this (older) version waits on the disk
        w.disk.hold = False
        w.upstream.add(build_wheel("pcx-res", "2.0"))
        newer = w.request("/simple/pcx-res/", {"Accept": "text/html"})  # a newer version, stored after it
        w.disk.release()
        w.flush()
        assert b"pcx_res-2.0" in w.reply(newer).body
        pages = w.proxy.pages
        record = w.proxy.settings.cache_dir / "pages" / pages.urls.key / "simple" / "pcx-res.json"
        assert json.loads(record.read_bytes())["version"] == pages.cached(PageKey(PROJECT, "pcx-res")).version
        assert any(record.with_suffix(".r").iterdir())  # the newer version's renderings are still there
    finally:
        w.stop()
