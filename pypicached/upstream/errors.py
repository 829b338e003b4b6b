"""How the upstream failed, as the one error the rest of the proxy handles."""

from __future__ import annotations


class UpstreamError(Exception):
    """The upstream failed to give a usable answer; ``status`` is what clients get."""

    def __init__(self, reason: str, status: int = 502) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def failure_reason(error: BaseException | None) -> str:
    """What went wrong, in words: Twisted's wrapped failures (``reasons``) joined, else the error's own text."""
    reasons = getattr(error, "reasons", None)
    if reasons:
        return "; ".join(r.getErrorMessage() for r in reasons)
    return str(error) or type(error).__name__
