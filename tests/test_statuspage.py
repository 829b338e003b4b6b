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
from pypicached.ops.chart import BYTES_HEIGHT, RATIO_HEIGHT, ByteScale, chart
from pypicached.ops.ledger import Ledger, Tally
from pypicached.ops.statuspage import render
from pypicached.ops.summary import human_duration, summary
from pypicached.ops.throughput import MIN_SAMPLE_BYTES, Throughput

from .drawing import Drawing
from .memory import result_of

DAY = 86400
#: Noon UTC on 2024-03-31: the window then starts on 2024-03-01.
NOW = 1711886400.0


def stats_of(ledger: Ledger, now: float = NOW, **kw) -> dict:
    usage = CacheUsage(size=0, files=0, max_size=1, free=1, min_free=0)
    return summary(ledger, usage, now=now, upstream_url="http://upstream.test/simple/", **kw)


def measured(bytes_per_second: float) -> Throughput:
    """An upstream speed as the daemon measures it: one download of that many bytes in a second."""
    throughput = Throughput()
    throughput.record(int(bytes_per_second), 1.0)
    assert throughput.bytes_per_second() == bytes_per_second
    return throughput


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
        "day": "2024-03-29",
        "served_bytes": 4000,
        "fetched_bytes": 1000,
        "saved_bytes": 3000,
        "hits": 1,
        "misses": 1,
        "hit_ratio": 0.5,
    }
    assert by_day["2024-03-30"] == {  # the gap day: no traffic, zeros and no ratio
        "day": "2024-03-30",
        "served_bytes": 0,
        "fetched_bytes": 0,
        "saved_bytes": 0,
        "hits": 0,
        "misses": 0,
        "hit_ratio": None,
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
    assert stats_of(ledger, throughput=Throughput()) == unknown  # nothing measured yet: the same nulls
    known = stats_of(ledger, throughput=measured(500_000.0))
    assert known["upstream_throughput_bytes_per_second"] == 500_000.0
    assert known["time_saved_seconds"] == {"today": 4.0, "all_time": 22.0}


@pytest.mark.parametrize(
    "seconds, text",
    [
        (None, "-"),
        (0.4, "0 s"),
        (59.4, "59 s"),
        (200, "3 min 20 s"),
        (3600, "1 h 0 min"),
        (7530, "2 h 5 min"),
        (3 * DAY + 7 * 3600 + 59, "3 d 7 h"),
    ],
)
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


# --- the chart -----------------------------------------------------------------------------


def rows(*figures: tuple[int, int, int, int]) -> list[dict]:
    """Day rows as /stats gives them, from (served, fetched, hits, misses) per day."""
    ledger = Ledger(since=0)
    for age, (served, fetched, hits, misses) in enumerate(reversed(figures)):
        tally = ledger.day(NOW - age * DAY)
        tally.served, tally.fetched, tally.hits, tally.misses = served, fetched, hits, misses
    return stats_of(ledger)["days"][-len(figures) :]


def height(bar: dict) -> float:
    return float(bar["height"])


def test_the_chart_draws_one_group_of_titled_bars_per_day_with_its_numbers():
    days = stats_of(Ledger(since=NOW))["days"]
    days[-3] = rows((4000, 1000, 3, 1))[0] | {"day": days[-3]["day"]}
    drawing = Drawing(chart(days))
    assert drawing.svgs == 1 and len(drawing.days) == 31
    for row, drawn in zip(days, drawing.days):
        assert drawn["data"] == {
            "day": row["day"],
            "served": str(row["served_bytes"]),
            "fetched": str(row["fetched_bytes"]),
            "saved": str(row["saved_bytes"]),
            "hits": str(row["hits"]),
            "misses": str(row["misses"]),
            "hit-ratio": "" if row["hit_ratio"] is None else repr(row["hit_ratio"]),
        }
        assert set(drawn["bars"]) == {"column", "fetched", "cached", "ratio"}
        assert all(bar["title"].startswith(row["day"] + ": ") for bar in drawn["bars"].values())
    busy = drawing.days[-3]["bars"]
    assert busy["cached"]["title"].endswith(": 2.9 KiB served from the cache")
    assert busy["fetched"]["title"].endswith(": 1000 B fetched from upstream")
    assert busy["ratio"]["title"].endswith(": hit ratio 75.0 % (3 hits, 1 misses)")


def test_bar_heights_are_proportional_to_the_figures():
    drawn = Drawing(chart(rows((4000, 1000, 3, 1), (2000, 500, 1, 3), (1000, 1000, 0, 2)))).days
    a, b, c = (d["bars"] for d in drawn)
    scale = ByteScale.fitting(4000)
    assert scale.top == 4096 and scale.label(scale.top) == "4 KiB"
    assert height(a["fetched"]) == pytest.approx(1000 / 4096 * BYTES_HEIGHT, abs=0.01)
    assert height(a["cached"]) == pytest.approx(3000 / 4096 * BYTES_HEIGHT, abs=0.01)
    assert height(b["cached"]) == pytest.approx(height(a["cached"]) / 2, abs=0.01)
    assert height(c["fetched"]) == pytest.approx(height(a["fetched"]), abs=0.01) and height(c["cached"]) == 0
    # the cached part sits on the fetched part
    assert float(a["cached"]["y"]) + height(a["cached"]) == pytest.approx(float(a["fetched"]["y"]), abs=0.02)
    assert height(a["ratio"]) == pytest.approx(0.75 * RATIO_HEIGHT, abs=0.01)
    assert height(b["ratio"]) == pytest.approx(height(a["ratio"]) / 3, abs=0.01)
    assert height(c["ratio"]) == 0 and c["ratio"]["title"].endswith("hit ratio 0.0 % (0 hits, 2 misses)")


def test_a_day_without_traffic_is_drawn_empty_and_says_so():
    quiet = Drawing(chart(rows((4000, 1000, 3, 1), (0, 0, 0, 0)))).days[1]
    assert quiet["data"]["hit-ratio"] == "" and quiet["data"]["served"] == "0"
    assert all(height(quiet["bars"][kind]) == 0 for kind in ("fetched", "cached", "ratio"))
    assert quiet["bars"]["ratio"]["title"].endswith("hit ratio - (0 hits, 0 misses)")
    assert float(quiet["bars"]["column"]["height"]) > 0  # still something to hover over


def test_an_empty_ledger_draws_31_empty_days_and_no_rows_draw_a_note():
    svg = chart(stats_of(Ledger(since=NOW))["days"])
    drawn = Drawing(svg).days
    assert len(drawn) == 31 and all(height(d["bars"]["fetched"]) == height(d["bars"]["cached"]) == 0 for d in drawn)
    assert "03-31</text>" in svg and "03-24</text>" in svg and "03-30</text>" not in svg
    empty = chart([])
    assert Drawing(empty).days == [] and "no figures yet" in empty and empty.endswith("</svg>")


def test_the_chart_escapes_what_it_is_given_and_links_nothing():
    row = rows((10, 0, 1, 0))[0] | {"day": '"><script>alert(1)</script>'}
    svg = chart([row])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert Drawing(svg).days[0]["data"]["day"] == row["day"]  # the attribute reads back as it was
    assert "http" not in svg and "href" not in svg and "@import" not in svg and "url(" not in svg


@pytest.mark.parametrize(
    "largest, labels",
    [
        (0, ["0 B", "1 B"]),
        (700, ["0 B", "200 B", "400 B", "600 B", "800 B"]),
        (3.9 * 1024**2, ["0 MiB", "1 MiB", "2 MiB", "3 MiB", "4 MiB"]),
        (150 * 1024**3, ["0 GiB", "50 GiB", "100 GiB", "150 GiB"]),
        (1100, ["0 KiB", "0.5 KiB", "1 KiB", "1.5 KiB"]),
    ],
)
def test_the_byte_axis_has_round_labels_in_human_units(largest, labels):
    scale = ByteScale.fitting(largest)
    assert [scale.label(t) for t in scale.ticks()] == labels
    assert scale.top >= largest


# --- the page --------------------------------------------------------------------------------


def page_of(stats: dict) -> str:
    return render(stats, "http://127.0.0.1:3141").decode()


def test_the_page_shows_the_chart_and_the_time_saved_as_an_estimate():
    ledger = Ledger(since=NOW - DAY)
    ledger.served(NOW - DAY, 3 * 1024**3, CacheStatus.HIT, "pcx-alpha")
    ledger.served(NOW, 2_500_000_000, CacheStatus.HIT, "pcx-alpha")
    page = page_of(stats_of(ledger, throughput=measured(12.5 * 1024**2)))
    assert "<h2>The last 31 days</h2>" in page and page.count('<g class="day"') == 31
    assert 'data-day="2024-03-31" data-served="2500000000"' in page
    # 2.5 GB at 12.5 MiB/s is 190.7 s; 2.5 GB + 3 GiB is 436.4 s
    assert (
        '<p id="time-saved">About 3 min 11 s of downloading saved today (7 min 16 s all time), at the '
        "12.5 MiB/s measured on recent downloads from upstream (an estimate).</p>"
    ) in page


def test_without_a_measured_speed_the_page_says_why_there_is_no_estimate():
    page = page_of(stats_of(Ledger(since=NOW)))
    assert "No estimate of the download time saved yet" in page and "64.0 KiB or more" in page
    assert "About" not in page


POLICY = {
    "held_back_by_rule": {"min_release_age": 3, "deny": 1},
    "denied_by_rule": {"deny": 2},
    "flagged_by_rule": {},
    "advisories": {
        "url": "https://osv.example/PyPI/all.zip",
        "count": 7,
        "version": "abc",
        "last_refresh": None,
        "last_error": "upstream answered 500 <Internal>",
    },
    "held_back_today": [
        {
            "time": "2024-03-31T10:00:00Z",
            "project": "pcx-alpha",
            "filename": "pcx_alpha-3.0-py3-none-any.whl",
            "rule": "min_release_age",
            "reason": "uploaded 2 h ago, < 7 days",
        },
        {
            "time": "2024-03-31T11:00:00Z",
            "project": "pcx-beta",
            "filename": "pcx_beta-0.2.tar.gz",
            "rule": "deny",
            "reason": "listed in <deny>",
        },
    ],
}


def test_what_the_policy_held_back_is_shown_when_the_summary_has_it():
    page = page_of({**stats_of(Ledger(since=NOW)), "policy": POLICY})
    assert "<h2>Held back by the policy</h2>" in page
    assert (
        '<p id="policy-rules">Files held back since start, by rule: <code>deny</code> 1, '
        "<code>min_release_age</code> 3.\n"
        "Requests refused (403): <code>deny</code> 2. Served but named by an advisory: none.</p>"
    ) in page
    assert (
        '<p id="advisories">Advisories: 7 from <code>https://osv.example/PyPI/all.zip</code>, last refreshed not yet. '
        '<span class="bad">last refresh failed: upstream answered 500 &lt;Internal&gt;</span></p>'
    ) in page
    assert (
        "<tr><td>pcx-alpha</td><td><code>pcx_alpha-3.0-py3-none-any.whl</code></td><td>min_release_age</td>"
        "<td>uploaded 2 h ago, &lt; 7 days</td></tr>"
    ) in page
    assert "<td>listed in &lt;deny&gt;</td>" in page and "<deny>" not in page
    quiet = page_of({**stats_of(Ledger(since=NOW)), "policy": {"held_back_by_rule": {}, "held_back_today": []}})
    assert "by rule: none." in quiet and "nothing held back today" in quiet and 'id="advisories"' not in quiet


@pytest.mark.parametrize("policy", ["missing", None])
def test_without_a_policy_the_page_has_no_policy_section(policy):
    stats = stats_of(Ledger(since=NOW))
    if policy is None:
        stats["policy"] = None
    page = page_of(stats)
    assert "Held back" not in page and 'id="held-back"' not in page
    assert "<h2>The last 31 days</h2>" in page  # the rest of the page is there
