"""
How fast the upstream delivers package files, measured on recent downloads, so
the status page can turn bytes saved into an estimate of download time saved.

Only in memory: a restart forgets the samples, and the estimate is unknown
until the next large enough download completes. Link speeds change anyway.
"""

from __future__ import annotations

from collections import deque

import attrs

#: How many recent downloads the estimate averages over.
SAMPLES_KEPT = 50
#: Smaller downloads are left out: their time is mostly latency, not bandwidth.
MIN_SAMPLE_BYTES = 64 * 1024


@attrs.define
class Throughput:
    """The last ``kept`` completed file downloads of at least ``min_bytes``, as (bytes, seconds)."""

    kept: int = SAMPLES_KEPT
    min_bytes: int = MIN_SAMPLE_BYTES
    samples: deque[tuple[int, float]] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.samples = deque(maxlen=self.kept)

    def record(self, nbytes: int, seconds: float) -> None:
        """A whole file came from the upstream: ``nbytes`` in ``seconds`` from request to last byte."""
        if nbytes >= self.min_bytes and seconds >= 0:
            self.samples.append((nbytes, seconds))

    def bytes_per_second(self) -> float | None:
        """Total bytes over total time (a long download weighs more than a short one); None until measured."""
        seconds = sum(s for _, s in self.samples)
        if not seconds:
            return None
        return sum(n for n, _ in self.samples) / seconds

    def seconds_for(self, nbytes: int) -> float | None:
        """How long fetching ``nbytes`` upstream would take at the measured rate; None while unknown."""
        rate = self.bytes_per_second()
        return None if rate is None else nbytes / rate
