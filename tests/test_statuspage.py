"""
The status page's picture of the last 31 days and its estimate of download time saved:
the ``days`` list and throughput figures of ``/stats``, the SVG chart drawn from them,
and the slot for what the policy held back. Values in, text out, except one in-memory
download that measures the upstream's speed on an advanced clock.
"""

from __future__ import annotations

import json

import pytest

from pypicached.cache.housekeeping import CacheUsage
from pypicached.cache.outcome import CacheStatus
from pypicached.ops.metrics import Ledger, Tally
from pypicached.ops.summary import human_duration, summary
from pypicached.ops.throughput import MIN_SAMPLE_BYTES, Throughput

from .memory import result_of

DAY = 86400
#: Noon UTC on 2024-03-31: the window then starts on 2024-03-01.
NOW = 1711886400.0


def stats_of(ledger: Ledger, now: float = NOW, **kw) -> dict:
    usage = CacheUsage(size=0, files=0, max_size=1, free=1, min_free=0)
    return summary(ledger, usage, now=now, upstream_url="http://upstream.test/simple/", **kw)


# --- the days list in /stats -----------------------------------------------------------


def test_days_are_the_last_31_utc_days_oldest_first_with_gaps_as_zeros():
    ledger = Ledger(since=NOW - 40 * DAY)
    ledger.served(NOW - 2 * DAY, 3000, CacheStatus.HIT, "pcx-alpha")
    ledger.served(NOW - 2 * DAY, 1000, CacheStatus.MISS, "pcx-alpha")
    ledger.fetched(NOW - 2 * DAY, 1000)
    ledger.served(NOW, 500, CacheStatus.MISS, "pcx-beta")
    ledger.fetched(NOW, 700)
    ledger.days["2024-02-20"] = Tally(served=99, hits=9)  # older than the window
    days = stats_of(ledger)["days"]

    assert len(days) == 31
    assert days[0]["day"] == "2024-03-01" and days[-1]["day"] == "2024-03-31"
    assert [d["day"] for d in days] == sorted(d["day"] for d in days)
    by_day = {d["day"]: d for d in days}
    assert by_day["2024-03-29"] == {
        "day": "2024-03-29", "served_bytes": 4000, "fetched_bytes": 1000, "saved_bytes": 3000,
        "hits": 1, "misses": 1, "hit_ratio": 0.5,
    }
    assert by_day["2024-03-30"] == {  # the gap day: no traffic, zeros and no ratio
        "day": "2024-03-30", "served_bytes": 0, "fetched_bytes": 0, "saved_bytes": 0,
        "hits": 0, "misses": 0, "hit_ratio": None,
    }
    assert by_day["2024-03-31"]["saved_bytes"] == 0 and by_day["2024-03-31"]["fetched_bytes"] == 700
    assert "2024-02-20" not in by_day
    assert sum(d["served_bytes"] for d in days) == 4500


def test_the_window_ends_on_the_utc_day_of_now():
    ledger = Ledger(since=0)
    ledger.served(NOW + 12 * 3600 - 1, 10, CacheStatus.HIT, None)  # 23:59:59 on the 31st
    ledger.served(NOW + 12 * 3600, 20, CacheStatus.HIT, None)  # 00:00:00 on 1 April
    late = stats_of(ledger, now=NOW + 12 * 3600 - 1)["days"]
    assert late[-1] == {**late[-1], "day": "2024-03-31", "served_bytes": 10}
    after = stats_of(ledger, now=NOW + 12 * 3600)["days"]
    assert after[0]["day"] == "2024-03-02" and after[-1]["day"] == "2024-04-01"
    assert after[-1]["served_bytes"] == 20 and after[-2]["served_bytes"] == 10


def test_an_empty_ledger_gives_31_days_of_zeros():
    days = stats_of(Ledger(since=NOW))["days"]
    assert len(days) == 31 and days[-1]["day"] == "2024-03-31"
    assert all(d["served_bytes"] == d["fetched_bytes"] == d["hits"] == 0 and d["hit_ratio"] is None for d in days)


# --- upstream throughput and time saved ---------------------------------------------------


def test_throughput_is_total_bytes_over_total_seconds_of_large_recent_downloads():
    t = Throughput(kept=3)
    assert t.bytes_per_second() is None and t.seconds_for(10**6) is None
    t.record(MIN_SAMPLE_BYTES - 1, 0.001)  # too small: latency, not bandwidth
    assert t.bytes_per_second() is None
    t.record(1_000_000, 1.0)
    t.record(3_000_000, 1.0)
    assert t.bytes_per_second() == 2_000_000  # not the mean of the rates, 1 and 3 MB/s
    assert t.seconds_for(5_000_000) == 2.5
    t.record(100_000, 0.5)
    t.record(2_000_000, 2.0)  # the first sample drops out of three kept
    assert list(t.samples) == [(3_000_000, 1.0), (100_000, 0.5), (2_000_000, 2.0)]
    assert t.bytes_per_second() == pytest.approx(5_100_000 / 3.5)


def test_time_saved_is_saved_bytes_over_throughput_and_null_until_measured():
    ledger = Ledger(since=NOW - 5 * DAY)
    ledger.served(NOW - 3 * DAY, 9_000_000, CacheStatus.HIT, "pcx-alpha")
    ledger.served(NOW, 3_000_000, CacheStatus.HIT, "pcx-alpha")
    ledger.fetched(NOW, 1_000_000)
    unknown = stats_of(ledger)
    assert unknown["upstream_throughput_bytes_per_second"] is None
    assert unknown["time_saved_seconds"] == {"today": None, "all_time": None}
    known = stats_of(ledger, throughput=500_000.0)
    assert known["upstream_throughput_bytes_per_second"] == 500_000.0
    assert known["time_saved_seconds"] == {"today": 4.0, "all_time": 22.0}


@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (0.4, "0 s"), (59.4, "59 s"), (200, "3 min 20 s"), (3600, "1 h 0 min"),
    (7530, "2 h 5 min"), (3 * DAY + 7 * 3600 + 59, "3 d 7 h"),
])
def test_durations_read_as_a_person_says_them(seconds, text):
    assert human_duration(seconds) == text


def test_the_upstream_speed_is_measured_on_a_file_download(dists, make_world):
    world = make_world()
    alpha = next(d for d in dists["pcx-alpha"] if d.filename.endswith("2.0-py3-none-any.whl"))
    big = dists["pcx-big"][0]
    assert alpha.size < MIN_SAMPLE_BYTES < big.size
    world.page("pcx-alpha")
    assert world.get(alpha.pypi_path).body == alpha.data
    assert json.loads(world.get("/stats").body)["upstream_throughput_bytes_per_second"] is None

    world.page("pcx-big")
    world.upstream.behaviour[big.pypi_path] = "gate:100000"
    response = world.response(world.request(big.pypi_path))
    world.advance(4)  # the upstream takes four seconds over the file
    world.upstream.release(big.pypi_path)
    assert result_of(world.read(response)) == big.data
    assert world.get(big.pypi_path).header("X-Pypi-Cache") == "HIT"

    stats = json.loads(world.get("/stats").body)
    rate = stats["upstream_throughput_bytes_per_second"]
    assert rate == pytest.approx(big.size / 4)
    assert stats["time_saved_seconds"]["today"] == pytest.approx(stats["today"]["saved_bytes"] / rate)
    assert stats["time_saved_seconds"]["today"] == pytest.approx(4, rel=0.05)  # about one more big download
