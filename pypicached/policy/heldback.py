"""
What the policy held back, for the operator: counts by rule since start (for
``/metrics``) and today's list (for ``/stats`` and the status page). A file is
counted once a day however many pages and clients it was held back from.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from pypicached.policy.judge import RULES, Verdict, iso_z

#: Today's list keeps at most this many files (the counts go on).
LISTED_PER_DAY = 500


@attrs.frozen
class HeldFile:
    time: float
    index: str
    project: str
    filename: str
    verdict: Verdict

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": iso_z(self.time),
            "index": self.index,
            "project": self.project,
            "filename": self.filename,
            "rule": self.verdict.rule,
            "reason": self.verdict.reason,
            "hidden": self.verdict.hides,
        }


@attrs.define(eq=False)  # a Prometheus collector: registered, so hashed, by identity
class HeldBack(Collector):
    """The policy's tallies; ``noted`` for each page view made, ``denied`` for each 403."""

    #: Files held back (per day, once each), by rule, since start; ``today`` lists the day's.
    held: dict[str, int] = attrs.field(factory=dict)
    #: Files shown but flagged (a vulnerability without ``deny_vulnerable``), likewise.
    flagged: dict[str, int] = attrs.field(factory=dict)
    #: 403 answers, by rule.
    refused: dict[str, int] = attrs.field(factory=dict)
    day: int = -1
    #: The files noted today (each counted once a day), and those listed (held back, up to ``LISTED_PER_DAY``).
    seen: set[tuple[str, str]] = attrs.field(factory=set)
    today: dict[tuple[str, str], HeldFile] = attrs.field(factory=dict)

    def noted(self, index: str, project: str, verdicts: dict[str, Verdict], now: float) -> None:
        """The verdicts a page view carries (the first time today for each file)."""
        if int(now // 86400) != self.day:
            self.day, self.seen, self.today = int(now // 86400), set(), {}
        for filename, verdict in verdicts.items():
            key = (index, filename)
            if key in self.seen:
                continue
            self.seen.add(key)
            tally = self.held if verdict.hides else self.flagged
            tally[verdict.rule] = tally.get(verdict.rule, 0) + 1
            if verdict.hides and len(self.today) < LISTED_PER_DAY:
                self.today[key] = HeldFile(now, index, project, filename, verdict)

    def denied(self, verdict: Verdict) -> None:
        self.refused[verdict.rule] = self.refused.get(verdict.rule, 0) + 1

    def as_dict(self, now: float) -> dict[str, Any]:
        current = int(now // 86400) == self.day
        return {
            "held_back_by_rule": {rule: self.held.get(rule, 0) for rule in RULES if rule in self.held},
            "flagged_by_rule": dict(sorted(self.flagged.items())),
            "denied_by_rule": dict(sorted(self.refused.items())),
            "held_back_today": [f.as_dict() for f in (self.today.values() if current else ())],
        }

    def collect(self) -> Iterator[Any]:
        """The tallies for ``/metrics`` (a Prometheus collector)."""
        families = (
            (
                "pypicached_policy_held_back",
                "Files the policy held back from pages, once a day each, by rule.",
                self.held,
            ),
            (
                "pypicached_policy_flagged",
                "Files shown but flagged (advisories without deny_vulnerable), by rule.",
                self.flagged,
            ),
            ("pypicached_policy_denied", "Requests answered 403 by the policy, by rule.", self.refused),
        )
        for name, doc, tally in families:
            family = CounterMetricFamily(name, doc, labels=["rule"])
            for rule in RULES:
                family.add_metric([rule], tally.get(rule, 0))
            yield family
