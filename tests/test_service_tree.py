"""The daemon as a tree of services: started in order, stopped in reverse, and nothing left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactorClock

from pypicached.config import Settings
from pypicached.ops.ledger import STATE_FILE
from pypicached.service import CacheService, StatsSaver, make_service

from .memory import PIP_ACCEPT, UPSTREAM, World


def open_files_under(directory: Path) -> list[str]:
    """The files this process has open under ``directory`` (as /proc/self/fd shows them)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        if target.startswith(str(directory)):
            found.append(target)
    return found


def test_the_tree_starts_the_cache_first_and_the_listeners_last(tmp_path):
    settings = Settings.of(
        cache_dir=tmp_path / "cache",
        listen=("tcp:0", "tcp:0:interface=127.0.0.1"),
        advisories_url="https://osv.example/PyPI/all.zip",
    )
    top = make_service(settings, MemoryReactorClock())
    names = [service.name for service in top]
    assert names == [
        "cache",
        "housekeeper",
        "prober pypi",
        None,
        "heartbeat",
        "stats saver",
        "upstream requests",
        "listener 0",
        "listener 1",
    ]
    assert isinstance(list(top)[0], CacheService) and isinstance(list(top)[5], StatsSaver)
    assert type(list(top)[3]).__name__ == "AdvisoryFeed"


def test_stopping_with_work_in_flight_leaves_nothing_behind(dists, tmp_path):
    cache = tmp_path / "cache"
    w = World(dists, cache, index_ttl=0, advisories_url=UPSTREAM + "/osv/all.zip")
    big = dists["pcx-big"][0]
    assert w.get("/simple/pcx-big/", {"Accept": PIP_ACCEPT}).code == 200
    assert w.get("/simple/pcx-alpha/", {"Accept": PIP_ACCEPT}).code == 200
    # a download mid-way: the upstream holds the rest of the body back
    w.upstream.behaviour[big.pypi_path] = "gate:1000"
    response = w.response(w.request(big.pypi_path))
    response.deliverBody(Protocol())
    # a page's revalidation mid-way: the upstream never answers it
    w.upstream.behaviour["/simple/pcx-alpha/"] = "hang"
    w.request("/simple/pcx-alpha/", {"Accept": PIP_ACCEPT})
    assert len(w.upstream.pending) == 1
    # the upstream marked down: its probe is scheduled
    w.proxy.upstream_health.failed("down for the test")
    assert w.proxy.upstream_health.next_probe is not None
    assert w.proxy.advisories is not None and w.proxy.advisories.running
    assert w.proxy.files.in_flight() == 1 and open_files_under(cache)  # the download's temporary file
    assert w.clock.getDelayedCalls()

    w.stop()
    w.flush()

    assert w.clock.getDelayedCalls() == []
    assert open_files_under(cache) == []
    assert list((cache / "tmp").iterdir()) == []  # the download's temporary file went with it
    assert not w.proxy.service.running
    saved = json.loads((cache / STATE_FILE).read_bytes())
    # the last save came at stop, not 60 s on (the one at start had nothing): the two pages answered
    assert saved["all_time"]["misses"] == 2 and saved["all_time"]["hits"] == 1
