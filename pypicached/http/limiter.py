"""
The failure limit: an address that fails to authenticate ``LIMIT`` times within
``WINDOW`` seconds is refused (429) for ``WINDOW`` seconds, logged once when it starts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

log = Logger(namespace="pypicached")

LIMIT = 10
WINDOW = 60.0
#: Addresses with recent failures kept at most (an attacker with many addresses cannot fill memory).
MAX_TRACKED = 10000


class FailureLimit:
    """Failed attempts per address, and the addresses refused for now."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._recent: dict[str, deque[float]] = {}
        self._until: dict[str, float] = {}
        self.failures = 0
        self.blocks = 0

    def blocked(self, host: str) -> bool:
        if not self._until:
            return False
        until = self._until.get(host)
        if until is None:
            return False
        if self._clock.seconds() < until:
            return True
        del self._until[host]
        return False

    def failed(self, host: str) -> None:
        """Count a failed attempt from ``host``; the ``LIMIT``-th within ``WINDOW`` blocks it."""
        now = self._clock.seconds()
        self.failures += 1
        if len(self._recent) >= MAX_TRACKED:
            self._forget_old(now)
        times = self._recent.setdefault(host, deque())
        times.append(now)
        while times and times[0] <= now - WINDOW:
            times.popleft()
        if len(times) >= LIMIT:
            del self._recent[host]
            self._until[host] = now + WINDOW
            self.blocks += 1
            log.warn(
                "Refusing {client} for {seconds:g}s (429): {n} failed token attempts within {seconds:g}s",
                client=host,
                n=LIMIT,
                seconds=WINDOW,
            )

    def _forget_old(self, now: float) -> None:
        for host in [h for h, times in self._recent.items() if not times or times[-1] <= now - WINDOW]:
            del self._recent[host]
        if len(self._recent) >= MAX_TRACKED:
            self._recent.clear()

    def export(self, registry: CollectorRegistry) -> None:
        registry.register(self)  # a custom collector: collect() is all it needs

    def collect(self) -> Iterator[Any]:
        yield CounterMetricFamily(
            "pypicached_auth_failures",
            "Requests refused for a wrong, revoked or malformed credential.",
            value=self.failures,
        )
        yield CounterMetricFamily(
            "pypicached_auth_blocked",
            "Times an address was refused (429) for a minute after repeated failed attempts.",
            value=self.blocks,
        )
