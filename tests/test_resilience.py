"""What a review found: a probe that could hang for ever, a full disk under pages, a lost rendering."""

from __future__ import annotations

import errno
import json

import pytest

from pypicached.cache import fetch as fetch_module, rendered
from pypicached.cache.pagekind import INDEX, PageKey
from pypicached.upstream.client import PROBE_TIMEOUT, _as_uri

from .memory import World
from .wheels import build_wheel

TTL = 600


@pytest.fixture
def world(tmp_path):
    worlds = []

    def make(**settings):
        w = World({"pcx-res": [build_wheel("pcx-res", "1.0")]}, tmp_path / f"cache{len(worlds)}", index_ttl=TTL,
                  **settings)
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
    record = w.proxy.settings.cache_dir / "pages" / pages.index.key / "index.json"
    assert json.loads(record.read_bytes())["version"] == new.version


def test_an_ascii_url_is_sent_as_it_is():
    assert _as_uri("http://devpi_server:3141/root/pypi/+simple/x/") == b"http://devpi_server:3141/root/pypi/+simple/x/"
    assert _as_uri("http://h.example/p/caf\u00e9.whl") == b"http://h.example/p/caf%C3%A9.whl"
