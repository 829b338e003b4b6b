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

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pypicached.cache.outcome import CacheStatus
from pypicached.ops.ledger import Ledger
from pypicached.ops.throughput import Throughput
from pypicached.upstream.breaker import UpstreamHealth

log = Logger()

#: Index pages answered from a copy past its TTL.
STALE = frozenset({CacheStatus.STALE, CacheStatus.UPDATING})
#: Request kinds that are the cache's work (the rest are status pages and admin calls).
CACHE_KINDS = frozenset({"page", "file", "metadata"})


class _UpstreamStates(Collector):
    """Each upstream's state, read at scrape time from its ``UpstreamHealth``."""

    def __init__(self, upstreams: list[UpstreamHealth]) -> None:
        self._upstreams = upstreams

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily(
            "pypicached_upstream_up", "1 while the upstream answers, 0 while it is down.", labels=["upstream"]
        )
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


class _Watched(Collector):
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
        self.watch(
            "pypicached_served_bytes",
            "Bytes sent to clients for pages, files and metadata, all time.",
            "counter",
            lambda: self.ledger.all_time.served,
        )
        self.watch(
            "pypicached_upstream_fetched_bytes",
            "Body bytes received from the upstream, all time.",
            "counter",
            lambda: self.ledger.all_time.fetched,
        )
        self.watch(
            "pypicached_saved_bytes",
            "Served minus fetched bytes, all time: the bandwidth the cache saved.",
            "gauge",
            lambda: self.ledger.all_time.saved,
        )

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
