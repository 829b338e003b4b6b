"""
What the upstream client reports as it works, to whoever keeps the figures
(``ops.metrics.Metrics`` in the daemon): a protocol, so the upstream layer never
imports the operator's side.
"""

from __future__ import annotations

from typing import Protocol


class UpstreamReport(Protocol):
    """The events of upstream traffic that the operator's figures count."""

    def upstream_answered(self, seconds: float, code: int) -> None:
        """The upstream sent response headers after ``seconds``."""

    def upstream_failed(self, reason: str, *, answered: bool) -> None:
        """A request failed; ``answered``: after its headers (a broken body)."""

    def fetched(self, nbytes: int) -> None:
        """``nbytes`` more of a body crossed the link."""

    def downloaded(self, nbytes: int, seconds: float) -> None:
        """A package file came whole and good, ``nbytes`` in ``seconds``: a sample of the upstream's speed."""


class Unreported:
    """An ``UpstreamReport`` that counts nothing: traffic that is not the cache's (the advisory feed)."""

    def upstream_answered(self, seconds: float, code: int) -> None:
        pass

    def upstream_failed(self, reason: str, *, answered: bool) -> None:
        pass

    def fetched(self, nbytes: int) -> None:
        pass

    def downloaded(self, nbytes: int, seconds: float) -> None:
        pass
