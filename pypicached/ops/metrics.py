"""
What the proxy counts: requests by kind and cache status, bytes served and
fetched, and how the upstream answers. One ``Metrics`` per proxy is the hub every
part reports to; ``/metrics`` exports it for Prometheus and ``/stats`` sums it up.

The byte totals, hit counts and per-project savings are a ``Ledger``, kept across
restarts in ``state.json`` in the cache directory, so "saved all time" survives
an upgrade. Everything else starts from zero with the process, as Prometheus
expects of counters.
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import attrs
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pypicached.upstream.breaker import UpstreamHealth
from pypicached.cache.outcome import CacheStatus
from pypicached.ops.throughput import Throughput

log = Logger()

#: Answers given without fetching the body upstream; MISS and EXPIRED fetched it.
HITS = frozenset({CacheStatus.HIT, CacheStatus.JOINED, CacheStatus.REVALIDATED, CacheStatus.STALE, CacheStatus.UPDATING})
MISSES = frozenset({CacheStatus.MISS, CacheStatus.EXPIRED})
#: Index pages answered from a copy past its TTL.
STALE = frozenset({CacheStatus.STALE, CacheStatus.UPDATING})
#: Request kinds that are the cache's work (the rest are status pages and admin calls).
CACHE_KINDS = frozenset({"page", "file", "metadata"})

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
    def from_json(cls, data: bytes) -> "Ledger":
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
    def load(cls, path: Path, now: float) -> "Ledger":
        """The ledger saved at ``path``; a fresh one, with a logged reason, if it cannot be read."""
        try:
            return cls.from_json(path.read_bytes())
        except FileNotFoundError:
            return cls(since=now)
        except Exception as e:  # any damage, hand edit or old backup: never a reason not to start
            log.warn("Starting the savings figures afresh: cannot read {path}: {e}", path=str(path), e=e)
            return cls(since=now)


class _UpstreamStates:
    """Each upstream's state, read at scrape time from its ``UpstreamHealth``."""

    def __init__(self, upstreams: list[UpstreamHealth]) -> None:
        self._upstreams = upstreams

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("pypicached_upstream_up", "1 while the upstream answers, 0 while it is down.",
                               labels=["upstream"])
        spared = CounterMetricFamily(
            "pypicached_upstream_down_answers",
            "Client requests answered at once (stale or 503) because the upstream was down.",
            labels=["upstream"],
        )
        for health in self._upstreams:
            up.add_metric([health.url], 0 if health.is_down else 1)
            spared.add_metric([health.url], health.spared)
        yield up
        yield spared


class _Watched:
    """Exports values read from the live proxy at scrape time (sizes, counts kept elsewhere)."""

    def __init__(self) -> None:
        self.values: list[tuple[str, str, str, Callable[[], float]]] = []

    def collect(self) -> Iterator[Any]:
        for name, doc, kind, read in self.values:
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, doc, value=read())


class Metrics:
    """Everything the proxy counts, as Prometheus metrics in a registry of its own."""

    def __init__(self, clock: IReactorTime, ledger: Ledger | None = None) -> None:
        self._clock = clock
        self.ledger = ledger or Ledger(since=clock.seconds())
        #: Each upstream's health, for the up gauge and the spared-requests counter.
        self.upstreams: list[UpstreamHealth] = []
        self.started = clock.seconds()
        #: The upstream's speed on recent file downloads (not kept across restarts).
        self.throughput = Throughput()
        self.registry = CollectorRegistry()
        self._register_counters()
        self._request_counters: dict[tuple[str, str], Any] = {}
        self._watched = _Watched()
        self.registry.register(self._watched)
        self.registry.register(_UpstreamStates(self.upstreams))
        self._watch_the_ledger()

    def _register_counters(self) -> None:
        """The counters and the histogram that events add to."""
        self.requests = Counter(
            "pypicached_requests",
            "Requests answered, by kind (page, file, metadata, status, admin) and X-Pypi-Cache status.",
            ["kind", "cache"],
            registry=self.registry,
        )
        self.stale_pages = Counter(
            "pypicached_stale_pages_served",
            "Index pages served past their TTL (STALE, or UPDATING while a refresh runs).",
            registry=self.registry,
        )
        self.upstream_requests = Counter(
            "pypicached_upstream_requests",
            "Requests sent upstream, by outcome (the status class, or 'error' when none came).",
            ["outcome"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "pypicached_upstream_errors",
            "Upstream failures: no answer, a 5xx answer, or a broken body.",
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "pypicached_upstream_response_seconds",
            "Seconds until the upstream's response headers arrived.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )

    def _watch_the_ledger(self) -> None:
        """The ledger's all-time byte totals, read at each scrape."""
        self.watch("pypicached_served_bytes", "Bytes sent to clients for pages, files and metadata, all time.", "counter",
                   lambda: self.ledger.all_time.served)
        self.watch("pypicached_upstream_fetched_bytes", "Body bytes received from the upstream, all time.", "counter",
                   lambda: self.ledger.all_time.fetched)
        self.watch("pypicached_saved_bytes", "Served minus fetched bytes, all time: the bandwidth the cache saved.",
                   "gauge", lambda: self.ledger.all_time.saved)

    def watch(self, name: str, doc: str, kind: str, read: Callable[[], float]) -> None:
        """Export ``read()`` as a gauge or counter, read at each scrape."""
        self._watched.values.append((name, doc, kind, read))

    # --- events --------------------------------------------------------------------

    def answered(self, kind: str, status: CacheStatus | None, nbytes: int, project: str | None) -> None:
        """A client request finished (or was abandoned) after ``nbytes`` were sent."""
        labels = (kind, status.value if status else "-")
        counter = self._request_counters.get(labels)
        if counter is None:  # looked up once per label pair, not once per request
            counter = self._request_counters[labels] = self.requests.labels(*labels)
        counter.inc()
        if kind not in CACHE_KINDS or status is None:
            return
        if kind == "page" and status in STALE:
            self.stale_pages.inc()
        self.ledger.served(self._clock.seconds(), nbytes, status, project)

    def upstream_answered(self, seconds: float, code: int) -> None:
        self.upstream_latency.observe(seconds)
        self.upstream_requests.labels(f"{code // 100}xx").inc()
        if code >= 500:
            self.upstream_errors.inc()

    def upstream_failed(self, reason: str, *, answered: bool) -> None:
        """The upstream gave no answer (``answered`` False) or broke off a body."""
        if not answered:
            self.upstream_requests.labels("error").inc()
        self.upstream_errors.inc()

    def fetched(self, nbytes: int) -> None:
        self.ledger.fetched(self._clock.seconds(), nbytes)

    def downloaded(self, nbytes: int, seconds: float) -> None:
        """A package file came whole and good from the upstream: a sample of its speed."""
        self.throughput.record(nbytes, seconds)
