"""The disk budget: inactive files go, then least recently used, and only while over budget."""

from __future__ import annotations

import os
import time
from pathlib import Path

import attrs
from twisted.internet.task import Clock

from pypicached.base.disk import run_inline
from pypicached.cache.housekeeping import Budget, Entry, Housekeeper, choose_victims, run_pass

from .memory import result_of

DAY = 86400.0


def make(root: Path, name: str, size: int, last_used: float) -> Path:
    path = root / "packages" / name[:2] / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (last_used, last_used))
    return path


def test_inactive_files_go_whatever_the_size():
    entries = [Entry("old", 10, 0.0), Entry("new", 10, 200 * DAY)]
    victims = choose_victims(entries, Budget(max_size=10**9, min_free=0, inactive=180 * DAY), now=200 * DAY, free=10**9)
    assert [v.path for v in victims] == ["old"]


def test_least_recently_used_go_first_until_under_max_size():
    entries = [Entry("b", 40, 2.0), Entry("a", 40, 1.0), Entry("c", 40, 3.0)]
    victims = choose_victims(entries, Budget(max_size=80, min_free=0, inactive=1e9), now=4.0, free=10**9)
    assert [v.path for v in victims] == ["a"]
    victims = choose_victims(entries, Budget(max_size=40, min_free=0, inactive=1e9), now=4.0, free=10**9)
    assert [v.path for v in victims] == ["a", "b"]


def test_min_free_evicts_until_enough_space_is_free():
    entries = [Entry("a", 40, 1.0), Entry("b", 40, 2.0), Entry("c", 40, 3.0)]
    victims = choose_victims(entries, Budget(max_size=10**9, min_free=100, inactive=1e9), now=4.0, free=30)
    assert [v.path for v in victims] == ["a", "b"]


def test_within_budget_nothing_goes():
    entries = [Entry("a", 40, 1.0)]
    assert choose_victims(entries, Budget(max_size=100, min_free=10, inactive=1e9), now=2.0, free=50) == []


def test_a_pass_deletes_files_and_empty_directories(tmp_path):
    root = tmp_path / "files"
    old = make(root, "aa-old.whl", 100, 1 * DAY)
    mid = make(root, "bb-mid.whl", 100, 2 * DAY)
    new = make(root, "cc-new.whl", 100, 3 * DAY)
    result = run_pass(tmp_path, Budget(max_size=150, min_free=0, inactive=1e9), now=4 * DAY, free=lambda _: 10**12)
    assert (result.evicted, result.evicted_bytes, result.files, result.size) == (2, 200, 1, 100)
    assert not old.exists() and not mid.exists() and new.exists()
    assert not old.parent.exists() and new.parent.exists() and root.exists()


def test_an_open_reader_keeps_its_bytes_when_its_file_is_evicted(tmp_path):
    root = tmp_path / "files"
    path = make(root, "aa-x.whl", 1000, 1.0)
    with open(path, "rb") as reader:
        run_pass(tmp_path, Budget(max_size=0, min_free=0, inactive=1e9), now=2.0, free=lambda _: 10**12)
        assert not path.exists()
        assert reader.read() == b"x" * 1000


def test_housekeeper_runs_at_start_periodically_and_when_a_commit_breaks_the_budget(tmp_path):
    root = tmp_path / "files"
    clock = Clock()
    clock.advance(10 * DAY)
    make(root, "aa-1.whl", 100, 1 * DAY)
    keeper = Housekeeper(
        root=tmp_path,
        budget=Budget(max_size=250, min_free=0, inactive=180 * DAY),
        clock=clock,
        run_in_thread=run_inline,
        free=lambda _: 10**12,
    )
    keeper.start()
    assert (keeper.files, keeper.size) == (1, 100)
    make(root, "bb-2.whl", 100, 2 * DAY)
    keeper.committed(root / "packages/bb/bb-2.whl", 100)
    assert keeper.evictions == 0  # 200 bytes: within budget, no pass needed
    newest = make(root, "cc-3.whl", 100, 3 * DAY)
    keeper.committed(newest, 100)
    assert keeper.evictions == 1 and keeper.size == 200
    assert not (root / "packages/aa/aa-1.whl").exists()
    clock.advance(200 * DAY)  # the periodic pass finds everything inactive
    assert keeper.files == 0 and keeper.evictions == 3
    keeper.stop()


# --- index pages in the budget ---------------------------------------------------------


def page(root: Path, relpath: str, size: int, last_used: float, rendered: int = 0) -> Path:
    """A page record under ``root`` (the cache), with ``rendered`` bytes of renderings beside it."""
    record = root / "pages" / "abc123" / relpath
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_bytes(b"r" * size)
    if rendered:
        rendering = record.with_suffix(".r") / "v1" / "html-2"
        rendering.parent.mkdir(parents=True)
        rendering.write_bytes(b"h" * rendered)
    os.utime(record, (last_used, last_used))
    return record


def test_pages_and_their_renderings_count_and_go_least_recently_used_first(tmp_path):
    file = make(tmp_path / "files", "aa-x.whl", 100, 3 * DAY)
    old = page(tmp_path, "simple/pcx-old.json", 50, 1 * DAY, rendered=50)
    new = page(tmp_path, "simple/pcx-new.json", 50, 4 * DAY, rendered=50)
    marker = tmp_path / "pages" / "abc123" / "quarantined" / "pcx-bad"
    marker.parent.mkdir(parents=True)
    marker.write_bytes(b"q" * 1000)  # state, not cache: neither counted nor evicted
    orphan = tmp_path / "pages" / "abc123" / "json" / "pcx-gone.r" / "v0" / "json-2"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"j" * 10)
    os.utime(orphan.parent.parent, (0.5 * DAY, 0.5 * DAY))

    result = run_pass(tmp_path, Budget(max_size=10**9, min_free=0, inactive=1e9), now=5 * DAY, free=lambda _: 10**12)
    assert (result.evicted, result.files, result.size) == (0, 1, 100 + 100 + 100 + 10)

    result = run_pass(tmp_path, Budget(max_size=200, min_free=0, inactive=1e9), now=5 * DAY, free=lambda _: 10**12)
    assert (result.evicted, result.evicted_bytes, result.files, result.size) == (2, 110, 1, 200)
    assert not orphan.parent.parent.exists() and not old.exists() and not old.with_suffix(".r").exists()
    assert new.exists() and new.with_suffix(".r").exists() and file.exists() and marker.exists()


def test_a_running_cache_counts_its_pages_and_keeps_the_one_served_last(make_world):
    """Pages count toward max_size; the page not served for longest goes first, its renderings with it."""
    w = make_world(now=time.time())
    assert w.page("pcx-alpha").code == 200 and w.page("pcx-beta").code == 200
    keeper = w.proxy.housekeeper
    counted = result_of(keeper.run())
    root = Path(w.proxy.settings.cache_dir) / "pages" / w.proxy.pages.urls.key / "simple"
    records = {name: root / f"{name}.json" for name in ("pcx-alpha", "pcx-beta")}
    pages = sum(p.stat().st_size for p in records.values())
    assert counted.size >= pages and counted.files == 0 and counted.evicted == 0

    w.advance(2 * 3600.0)
    assert w.page("pcx-alpha").code == 200  # served now: its record's last use moves on
    keeper.budget = attrs.evolve(keeper.budget, max_size=counted.size - 1)
    result = result_of(keeper.run())
    assert result.evicted == 1 and not records["pcx-beta"].exists() and not (root / "pcx-beta.r").exists()
    assert records["pcx-alpha"].exists() and result.size <= counted.size - 1
    # forgotten in memory too, so fetched anew and stored again: not served on from a record that is gone
    again = w.page("pcx-beta")
    assert again.code == 200 and again.header("X-Pypi-Cache") == "MISS"
    assert w.upstream.count("/simple/pcx-beta/") == 2
    assert records["pcx-beta"].exists()
