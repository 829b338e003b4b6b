"""The operator's tools as the tests use them: the admin command, and the samples of /metrics.

Why apart: the operator tests and the extra-index tests both run ``pypicached-admin`` and read
the proxy's Prometheus figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["ADMIN", "samples"]

#: The admin command installed next to this Python.
ADMIN = str(Path(sys.executable).with_name("pypicached-admin"))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics body, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found
