"""
``/health``: whether this proxy can do its job, for a load balancer or a
monitoring check. It can while its event loop turns and its cache directory
takes writes; an upstream outage does not make it unhealthy, since the cache
still serves, so each upstream's state is reported but not judged.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

from pypicached.base.disk import RunInThread
from pypicached.base.inflight import Inflight
from pypicached.upstream.breaker import UpstreamHealth

#: The heartbeat's period, and the lag past which the event loop counts as stuck.
BEAT = 1.0
MAX_LAG = 5.0
#: How long the cache directory may take to accept a small write.
PROBE_TIMEOUT = 5.0


def probe_write(directory: Path) -> None:
    """Create, write, sync and remove a small file in ``directory``: raises if the disk cannot."""
    with tempfile.NamedTemporaryFile(dir=directory, prefix="health-") as f:
        f.write(b"ok")
        f.flush()
        os.fsync(f.fileno())


class Health:
    """Watches the event loop with a heartbeat and probes the cache directory on demand."""

    def __init__(
        self, *, clock: IReactorTime, directory: Path, run_in_thread: RunInThread, upstreams: list[UpstreamHealth]
    ) -> None:
        self._clock = clock
        self._directory = directory
        self._run_in_thread = run_in_thread
        self._upstreams = upstreams
        self._loop = LoopingCall(self._beat)
        self._loop.clock = clock
        self._last_beat: float | None = None
        #: The worst heartbeat delay since the last check.
        self.lag = 0.0
        self._probes: Inflight[str, None] = Inflight()

    def start(self) -> None:
        self._loop.start(BEAT, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def _beat(self) -> None:
        now = self._clock.seconds()
        if self._last_beat is not None:
            self.lag = max(self.lag, now - self._last_beat - BEAT)
        self._last_beat = now

    async def check(self) -> tuple[bool, dict[str, Any]]:
        """Healthy or not, and the JSON body that says why."""
        problems = []
        now = self._clock.seconds()
        lag = self.lag
        if self._last_beat is not None:
            lag = max(lag, now - self._last_beat - BEAT)
        self.lag = 0.0
        if lag > MAX_LAG:
            problems.append(f"the event loop stalled for {lag:.1f}s")
        writable = True
        try:
            await self._probe_once()
        except DeferredTimeout:
            writable = False
            problems.append(f"the cache directory did not take a write within {PROBE_TIMEOUT:g}s")
        except OSError as e:
            writable = False
            problems.append(f"the cache directory is not writable: {e.strerror or e}")
        states = [self._state(u, now) for u in self._upstreams]
        body = {
            "status": "failing" if problems else "ok",
            "problems": problems,
            "cache_dir_writable": writable,
            "event_loop_lag_seconds": round(max(lag, 0.0), 3),
            "upstream": states[0] if states else None,
            "upstreams": states,
        }
        return not problems, body

    @staticmethod
    def _state(upstream: UpstreamHealth, now: float) -> dict[str, Any]:
        state = upstream.state()
        state["seconds_since_answer"] = None if upstream.last_answer is None else round(now - upstream.last_answer, 1)
        return state

    def _probe_once(self) -> Deferred[None]:
        """One probe at a time, shared by every check that arrives meanwhile."""
        return self._probes.run("probe", self._start_probe)

    def _start_probe(self) -> Deferred[None]:
        probe = self._run_in_thread(probe_write, self._directory)
        return probe.addTimeout(PROBE_TIMEOUT, self._clock)
