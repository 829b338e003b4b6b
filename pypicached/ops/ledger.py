"""
The figures kept across restarts: byte totals, hit counts and per-project savings,
per UTC day and all time, in ``state.json`` in the cache directory, so "saved all
time" survives an upgrade.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

import attrs
from twisted.logger import Logger

from pypicached.cache.outcome import CacheStatus

log = Logger()

#: Answers given without fetching the body upstream; MISS and EXPIRED fetched it.
HITS = frozenset(
    {CacheStatus.HIT, CacheStatus.JOINED, CacheStatus.REVALIDATED, CacheStatus.STALE, CacheStatus.UPDATING}
)
MISSES = frozenset({CacheStatus.MISS, CacheStatus.EXPIRED})

#: How many UTC days, and how many projects, the ledger remembers.
DAYS_KEPT = 31
PROJECTS_KEPT = 1000
STATE_VERSION = 1
#: The file in the cache directory that keeps the ledger across restarts.
STATE_FILE = "state.json"


@attrs.define
class Tally:
    """Bytes and answers over some period."""

    served: int = 0  # bytes sent to clients for pages, files and metadata
    fetched: int = 0  # body bytes received from the upstream
    hits: int = 0
    misses: int = 0

    @property
    def saved(self) -> int:
        """Bandwidth the cache saved: what clients got beyond what crossed the upstream link."""
        return max(0, self.served - self.fetched)

    @property
    def hit_ratio(self) -> float | None:
        answered = self.hits + self.misses
        return self.hits / answered if answered else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "served_bytes": self.served,
            "fetched_bytes": self.fetched,
            "saved_bytes": self.saved,
            "hits": self.hits,
            "misses": self.misses,
            "hit_ratio": self.hit_ratio,
        }


def _day(now: float) -> str:
    return day_name(int(now // 86400))


@functools.lru_cache(maxsize=64)
def day_name(day: int) -> str:
    """A UTC day's name, worked out once per day rather than once per request."""
    return time.strftime("%Y-%m-%d", time.gmtime(day * 86400))


@attrs.define
class Ledger:
    """The totals kept across restarts: all time, per UTC day, and bytes served from cache per project."""

    since: float
    all_time: Tally = attrs.field(factory=Tally)
    days: dict[str, Tally] = attrs.field(factory=dict)
    projects: dict[str, int] = attrs.field(factory=dict)

    def day(self, now: float) -> Tally:
        key = _day(now)
        tally = self.days.get(key)
        if tally is None:
            tally = self.days[key] = Tally()
            for old in sorted(self.days)[:-DAYS_KEPT]:
                del self.days[old]
        return tally

    def served(self, now: float, nbytes: int, status: CacheStatus, project: str | None) -> None:
        hit, miss = status in HITS, status in MISSES
        for tally in (self.all_time, self.day(now)):
            tally.served += nbytes
            tally.hits += hit
            tally.misses += miss
        if hit and project and nbytes:
            self.projects[project] = self.projects.get(project, 0) + nbytes

    def fetched(self, now: float, nbytes: int) -> None:
        self.all_time.fetched += nbytes
        self.day(now).fetched += nbytes

    def top_projects(self, n: int = 10) -> list[tuple[str, int]]:
        return sorted(self.projects.items(), key=lambda item: (-item[1], item[0]))[:n]

    def to_json(self) -> bytes:
        kept = dict(self.top_projects(PROJECTS_KEPT))
        return json.dumps(
            {
                "version": STATE_VERSION,
                "since": self.since,
                "all_time": attrs.asdict(self.all_time),
                "days": {day: attrs.asdict(t) for day, t in sorted(self.days.items())},
                "projects": kept,
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Ledger:
        record = json.loads(data)
        if not isinstance(record, dict) or record.get("version") != STATE_VERSION:
            raise ValueError(f"unknown state version {record.get('version')!r}")

        def tally(d: dict[str, Any]) -> Tally:
            return Tally(**{f: int(d.get(f, 0)) for f in ("served", "fetched", "hits", "misses")})

        return cls(
            since=float(record["since"]),
            all_time=tally(record["all_time"]),
            days={str(day): tally(t) for day, t in record.get("days", {}).items()},
            projects={str(p): int(n) for p, n in record.get("projects", {}).items()},
        )

    @classmethod
    def load(cls, path: Path, now: float) -> Ledger:
        """The ledger saved at ``path``; a fresh one, with a logged reason, if it cannot be read."""
        try:
            return cls.from_json(path.read_bytes())
        except FileNotFoundError:
            return cls(since=now)
        except Exception as e:  # any damage, hand edit or old backup: never a reason not to start
            log.warn("Starting the savings figures afresh: cannot read {path}: {e}", path=str(path), e=e)
            return cls(since=now)
