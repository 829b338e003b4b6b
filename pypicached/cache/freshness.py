"""
When a cached index page may be served as it is, when it must be asked for
again, and what stands in when asking fails or cannot be done: a pure decision
from the page's age, the settings and the upstream's health, tested from a table.
"""

from __future__ import annotations

import enum

import attrs


class Offline(Exception):
    """Offline mode, and the cache cannot answer: 503."""

    status = 503


@attrs.frozen
class Freshness:
    """The settings that decide how long a page is trusted, and for how long a stale one may stand in."""

    ttl: float
    offline: bool = False
    #: How long past the TTL a page may stand in for a failing upstream (None: forever).
    stale_if_error: float | None = None
    stale_while_revalidate: float = 0.0
    #: Seconds a revalidation may take before its waiting clients get the stale copy (0: off).
    stale_if_slow: float = 0.0

    def may_stand_in(self, age: float) -> bool:
        return self.stale_if_error is None or age < self.ttl + self.stale_if_error


class Do(enum.Enum):
    """What to do for one request of a page."""

    SERVE = "serve it: fresh"
    SERVE_OFFLINE = "serve it stale: offline mode"
    SERVE_STALE = "serve it stale: the upstream is down or just failed on this page"
    SERVE_STALE_SLOW = "serve it stale: a request to the upstream has been waiting past stale_if_slow"
    REFUSE_OFFLINE = "refuse: offline mode, and nothing cached"
    REFUSE_DOWN = "refuse at once: the upstream is down, and nothing cached may stand in"
    NOT_FOUND = "not found: the upstream said so a moment ago"
    REFRESH = "ask upstream and wait for the answer"
    REFRESH_UNLESS_SLOW = "ask upstream; serve it stale if the answer is slow"
    REFRESH_IN_BACKGROUND = "serve it stale at once and ask upstream in the background"


def decide(policy: Freshness, *, age: float | None, down: bool, missing: bool, failed: bool, slow: bool = False) -> Do:
    """
    ``age``: seconds since the cached copy was validated (None: nothing cached);
    ``down``: the upstream is down; ``missing``: the upstream answered 404 a moment
    ago; ``failed``: revalidating this page failed a moment ago; ``slow``: a request
    to the upstream has been waiting longer than ``stale_if_slow``.
    """
    if age is not None and age < policy.ttl:
        return Do.SERVE
    if policy.offline:
        return Do.REFUSE_OFFLINE if age is None else Do.SERVE_OFFLINE
    if age is None and missing:
        return Do.NOT_FOUND
    may_stand_in = age is not None and policy.may_stand_in(age)
    if down:
        return Do.SERVE_STALE if may_stand_in else Do.REFUSE_DOWN
    if failed and may_stand_in:
        return Do.SERVE_STALE
    if slow and policy.stale_if_slow and may_stand_in:
        return Do.SERVE_STALE_SLOW
    if age is None:
        return Do.REFRESH
    if age < policy.ttl + policy.stale_while_revalidate:
        return Do.REFRESH_IN_BACKGROUND
    if policy.stale_if_slow and may_stand_in:
        return Do.REFRESH_UNLESS_SLOW
    return Do.REFRESH
