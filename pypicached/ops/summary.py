"""
The figures an operator asks for, as one JSON-ready summary: ``/stats`` returns
it, the status page and ``pypicached-admin stats`` show it. Built from values,
so the admin command can build it from the cache directory alone when the
daemon is not running.
"""

from __future__ import annotations

from typing import Any

from pypicached import __version__
from pypicached.cache.housekeeping import CacheUsage
from pypicached.ops.ledger import DAYS_KEPT, Ledger, Tally, day_name
from pypicached.ops.throughput import Throughput
from pypicached.upstream.breaker import UpstreamHealth, iso


def summary(
    ledger: Ledger,
    usage: CacheUsage,
    *,
    now: float,
    upstream_url: str,
    upstreams: list[UpstreamHealth] | None = None,
    started: float | None = None,
    downloads_in_flight: int | None = None,
    evictions: int | None = None,
    digest_mismatches: int | None = None,
    stale_pages_served: int | None = None,
    policy: dict[str, Any] | None = None,
    throughput: Throughput | None = None,
) -> dict[str, Any]:
    """
    Everything ``/stats`` reports. The ``None`` arguments are what only a running
    daemon knows; they come out as ``null``. ``throughput`` is the upstream's
    measured speed, which turns saved bytes into saved time.
    """
    today = ledger.day(now)
    return {
        "version": __version__,
        "now": iso(now),
        "running": started is not None,
        "started": iso(started),
        "counting_since": iso(ledger.since),
        "all_time": ledger.all_time.as_dict(),
        "today": today.as_dict(),
        "days": days(ledger, now),
        **_time_saved(throughput, today=today, all_time=ledger.all_time),
        "top_projects": [{"project": p, "saved_bytes": n} for p, n in ledger.top_projects(10)],
        "cache": _cache(usage, evictions),
        "downloads_in_flight": downloads_in_flight,
        "digest_mismatches": digest_mismatches,
        "stale_pages_served": stale_pages_served,
        "upstreams": [u.state() for u in upstreams or ()],
        "policy": policy,
        "upstream": _upstream(upstream_url, upstreams[0] if upstreams else None),
    }


def _time_saved(throughput: Throughput | None, **tallies: Tally) -> dict[str, Any]:
    """The upstream's measured speed, and how long each tally's saved bytes would have taken at it."""
    rate = throughput.bytes_per_second() if throughput else None
    return {
        "upstream_throughput_bytes_per_second": rate,
        "time_saved_seconds": {
            name: throughput.seconds_for(tally.saved) if throughput else None for name, tally in tallies.items()
        },
    }


def _cache(usage: CacheUsage, evictions: int | None) -> dict[str, Any]:
    """The cache directory's size against its bounds."""
    return {
        "size_bytes": usage.size,
        "files": usage.files,
        "max_size_bytes": usage.max_size,
        "free_bytes": usage.free,
        "min_free_bytes": usage.min_free,
        "used_ratio": usage.size / usage.max_size if usage.max_size else None,
        "evictions": evictions,
    }


def days(ledger: Ledger, now: float, count: int = DAYS_KEPT) -> list[dict[str, Any]]:
    """The last ``count`` UTC days, oldest first and ending today; a day without traffic is zeros."""
    today = int(now // 86400)
    rows = []
    for day in range(today - count + 1, today + 1):
        name = day_name(day)
        rows.append({"day": name, **ledger.days.get(name, Tally()).as_dict()})
    return rows


def _upstream(url: str, upstream: UpstreamHealth | None) -> dict[str, Any]:
    """The first upstream's figures (``null`` where only a running daemon knows them)."""
    return {
        "url": url,
        "state": upstream.state()["state"] if upstream else None,
        "since": iso(upstream.down_since) if upstream else None,
        "next_probe": iso(upstream.next_probe) if upstream else None,
        "last_answer": iso(upstream.last_answer) if upstream else None,
        "last_error": iso(upstream.last_error) if upstream else None,
        "recent_errors": [
            {"time": iso(when), "error": reason} for when, reason in (upstream.recent_errors if upstream else ())
        ],
    }


def human_bytes(n: float | None) -> str:
    """``1.5 GiB`` and the like."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float | None) -> str:
    """``3 min 20 s``, ``2 h 5 min``, ``4 d 7 h``: two units at most, as a person says it."""
    if seconds is None:
        return "-"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    for big, big_unit, small, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "min"), (60, "min", 1, "s")):
        if whole >= big:
            return f"{whole // big} {big_unit} {whole % big // small} {small_unit}"
    raise AssertionError("unreachable")


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f} %"


def as_text(stats: dict[str, Any]) -> str:
    """The summary as a few aligned lines, for a terminal."""
    lines = []
    state = (
        f"running since {stats['started']}" if stats["running"] else "not running (figures from the cache directory)"
    )
    lines.append(f"pypicached {stats['version']}: {state}")
    upstreams = stats.get("upstreams") or []
    if len(upstreams) > 1:
        lines += [f"index {u['name']:<12} {u['url']} ({u['state']})" for u in upstreams]
    else:
        lines.append(f"upstream           {stats['upstream']['url']}")
    for label, key in (("today", "today"), ("all time", "all_time")):
        t = stats[key]
        lines.append(
            f"{label:<18} hit ratio {percent(t['hit_ratio'])}, served {human_bytes(t['served_bytes'])}, "
            f"fetched {human_bytes(t['fetched_bytes'])}, saved {human_bytes(t['saved_bytes'])}"
        )
    c = stats["cache"]
    lines.append(
        f"cache              {human_bytes(c['size_bytes'])} in {c['files']} files "
        f"of {human_bytes(c['max_size_bytes'])} "
        f"({percent(c['used_ratio'])}); {human_bytes(c['free_bytes'])} free on disk"
    )
    if stats["top_projects"]:
        lines.append(
            "top projects       "
            + ", ".join(f"{p['project']} ({human_bytes(p['saved_bytes'])})" for p in stats["top_projects"])
        )
    up = stats["upstream"]
    if stats["running"]:
        lines.append(f"upstream answered  {up['last_answer'] or 'never yet'}; last error {up['last_error'] or 'none'}")
        for error in up["recent_errors"][:5]:
            lines.append(f"  {error['time']}  {error['error']}")
    return "\n".join(lines) + "\n"
