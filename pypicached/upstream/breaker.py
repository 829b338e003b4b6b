"""
One upstream's health, shared by every request: a circuit breaker.

The first connect failure, name-resolution failure, timeout or 5xx marks the
upstream down. While it is down no client waits on it: cached pages are served
stale at once and anything uncached is refused at once with the reason. One
background probe at a time, first after a second and then with the delay
doubling up to ``retry_max``, decides when it is back; so does any answer that
arrives meanwhile (a revalidation started before the outage, say).

Varnish calls the idea "grace"; Nexus and Artifactory call it "auto-block".
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Callable
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

#: The first probe's delay after an upstream goes down; each failed probe doubles it.
FIRST_RETRY = 1.0
#: How many recent failures are kept for /stats and the status page.
RECENT_ERRORS = 20


class UpstreamDown(Exception):
    """The upstream is down and the cache cannot stand in: answered at once, 503."""

    status = 503


def iso(when: float | None) -> str | None:
    """A POSIX time as ISO 8601 UTC, for JSON and one-line reasons."""
    if when is None:
        return None
    return datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(timespec="seconds")


@attrs.define(eq=False)
class UpstreamHealth:
    """Up or down for one upstream, when it last answered, and its recent failures."""

    url: str
    clock: IReactorTime
    #: Starts one request to the upstream; its outcome reaches us through ``answered``/``failed``.
    probe: Callable[[], Deferred[Any]] = lambda: Deferred()
    retry_max: float = 60.0
    #: The index's name, where several are configured.
    name: str = "pypi"
    down_since: float | None = None
    #: Since when a request has waited longer than ``stale_if_slow`` with no answer yet.
    slow_since: float | None = None
    reason: str | None = None
    next_probe: float | None = None
    last_answer: float | None = None
    last_error: float | None = None
    recent_errors: collections.deque[tuple[float, str]] = attrs.field(
        factory=lambda: collections.deque(maxlen=RECENT_ERRORS)
    )
    #: Client requests answered at once (stale, or refused) because the upstream was down.
    spared: int = 0
    _delay: float = FIRST_RETRY
    _timer: IDelayedCall | None = None
    _probing: bool = False
    _stopped: bool = False

    @property
    def is_down(self) -> bool:
        return self.down_since is not None

    @property
    def is_slow(self) -> bool:
        """Up, but a request has been waiting past ``stale_if_slow``: pages that can be served stale are."""
        return self.slow_since is not None and self.down_since is None

    def slow(self) -> None:
        """A revalidation outlasted ``stale_if_slow``: until an answer comes, cached pages stand in at once."""
        if self.slow_since is None and self.down_since is None:
            self.slow_since = self.clock.seconds()
            log.warn("Upstream {url} is slow to answer; serving cached pages until it does", url=self.url)

    def not_slow(self) -> None:
        """The request that was waiting has ended (its body may have been what was slow)."""
        self.slow_since = None

    # --- what the upstream client reports ------------------------------------------

    def answered(self, code: int) -> None:
        """A response arrived: any but a 5xx shows the upstream is there."""
        now = self.clock.seconds()
        if code >= 500:
            self.failed(f"answered {code}")
            return
        self.last_answer = now
        self.slow_since = None
        if self.down_since is not None:
            log.info(
                "Upstream {url} is back after {seconds:.1f}s down",
                url=self.url,
                seconds=now - self.down_since,
            )
            self.down_since = self.reason = self.next_probe = None
            self._delay = FIRST_RETRY
            self._cancel()

    def failed(self, reason: str) -> None:
        """No usable answer: the first failure marks the upstream down for everyone."""
        now = self.note(reason)
        self.slow_since = None
        if self.down_since is None:
            self.down_since, self.reason = now, reason
            log.warn(
                "Upstream {url} is down ({reason}); serving from the cache, next try in {delay:g}s",
                url=self.url,
                reason=reason,
                delay=self._delay,
            )
            self._schedule()

    def note(self, reason: str) -> float:
        """Remember a failure for the operator (a body broken off, say) without judging the upstream by it."""
        now = self.clock.seconds()
        self.last_error = now
        self.recent_errors.appendleft((now, reason))
        return now

    # --- for the answering side ----------------------------------------------------

    def outage(self) -> UpstreamDown:
        """The one-line refusal for a request the cache cannot answer while down."""
        self.spared += 1
        retry = "a try is under way" if self.next_probe is None else f"next try at {iso(self.next_probe)}"
        return UpstreamDown(f"upstream {self.url} is down since {iso(self.down_since)} ({self.reason}); {retry}")

    def state(self) -> dict[str, Any]:
        """For /health and /stats."""
        return {
            "name": self.name,
            "url": self.url,
            "state": "down" if self.is_down else "slow" if self.is_slow else "up",
            "since": iso(self.down_since),
            "reason": self.reason,
            "next_probe": iso(self.next_probe),
            "last_answer": iso(self.last_answer),
            "last_error": iso(self.last_error),
            "last_error_reason": self.recent_errors[0][1] if self.recent_errors else None,
        }

    def stop(self) -> None:
        """No more probes (the daemon is stopping)."""
        self._stopped = True
        self._cancel()

    # --- the probe -----------------------------------------------------------------

    def _schedule(self) -> None:
        self._cancel()
        self.next_probe = self.clock.seconds() + self._delay
        self._timer = self.clock.callLater(self._delay, self._run_probe)

    def _run_probe(self) -> None:
        self._timer = None
        if self.down_since is None or self._probing:
            return
        self._probing = True
        self._delay = min(self._delay * 2, self.retry_max)
        self.next_probe = None
        self.probe().addBoth(self._probed)

    def _probed(self, _: object) -> None:
        self._probing = False
        if self.down_since is not None and not self._stopped:
            self._schedule()

    def _cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
