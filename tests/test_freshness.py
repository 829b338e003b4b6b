"""The freshness decision, from a table: every rule that says what a page request does."""

from __future__ import annotations

import pytest

from pypicached.cache.freshness import Do, Freshness, decide

TTL = 600
BASE = Freshness(ttl=TTL)
SLOW = Freshness(TTL, stale_if_slow=2)
CASES = [
    # (policy, age, down, missing, failed, slow) -> what to do
    ("fresh", BASE, 10, False, False, False, Do.SERVE),
    ("fresh even while the upstream is down", BASE, 10, True, False, False, Do.SERVE),
    ("fresh just before the TTL", BASE, TTL - 0.001, False, False, False, Do.SERVE),
    ("expired at the TTL", BASE, TTL, False, False, False, Do.REFRESH),
    ("never cached", BASE, None, False, False, False, Do.REFRESH),
    ("never cached, 404 remembered", BASE, None, False, True, False, Do.NOT_FOUND),
    ("cached wins over a remembered 404", BASE, TTL + 1, False, True, False, Do.REFRESH),
    ("offline, cached and expired", Freshness(TTL, offline=True), TTL + 1, False, False, False, Do.SERVE_OFFLINE),
    ("offline, nothing cached", Freshness(TTL, offline=True), None, False, False, False, Do.REFUSE_OFFLINE),
    ("offline, fresh", Freshness(TTL, offline=True), 1, False, False, False, Do.SERVE),
    ("down, expired", BASE, TTL + 1, True, False, False, Do.SERVE_STALE),
    ("down, long expired, stale forever", BASE, 10**9, True, False, False, Do.SERVE_STALE),
    ("down, nothing cached", BASE, None, True, False, False, Do.REFUSE_DOWN),
    ("down, past stale_if_error", Freshness(TTL, stale_if_error=60), TTL + 61, True, False, False, Do.REFUSE_DOWN),
    ("down, within stale_if_error", Freshness(TTL, stale_if_error=60), TTL + 59, True, False, False, Do.SERVE_STALE),
    ("down, 404 remembered", BASE, None, True, True, False, Do.NOT_FOUND),
    ("this page failed a moment ago", BASE, TTL + 1, False, False, True, Do.SERVE_STALE),
    ("failed, but past stale_if_error", Freshness(TTL, stale_if_error=0), TTL + 1, False, False, True, Do.REFRESH),
    (
        "within stale_while_revalidate",
        Freshness(TTL, stale_while_revalidate=60),
        TTL + 59,
        False,
        False,
        False,
        Do.REFRESH_IN_BACKGROUND,
    ),
    (
        "past stale_while_revalidate",
        Freshness(TTL, stale_while_revalidate=60),
        TTL + 61,
        False,
        False,
        False,
        Do.REFRESH,
    ),
    ("stale_if_slow", Freshness(TTL, stale_if_slow=2), TTL + 1, False, False, False, Do.REFRESH_UNLESS_SLOW),
    ("stale_if_slow, nothing cached", Freshness(TTL, stale_if_slow=2), None, False, False, False, Do.REFRESH),
    (
        "stale_if_slow, past stale_if_error",
        Freshness(TTL, stale_if_slow=2, stale_if_error=5),
        TTL + 6,
        False,
        False,
        False,
        Do.REFRESH,
    ),
    (
        "stale_while_revalidate wins over stale_if_slow",
        Freshness(TTL, stale_while_revalidate=60, stale_if_slow=2),
        TTL + 1,
        False,
        False,
        False,
        Do.REFRESH_IN_BACKGROUND,
    ),
]
SLOW_CASES = [
    ("slow upstream, expired", SLOW, TTL + 1, Do.SERVE_STALE_SLOW),
    ("slow upstream, fresh", SLOW, 1, Do.SERVE),
    ("slow upstream, nothing cached: ask and wait", SLOW, None, Do.REFRESH),
    ("slow upstream, stale_if_slow off", BASE, TTL + 1, Do.REFRESH),
    ("slow upstream, past stale_if_error", Freshness(TTL, stale_if_slow=2, stale_if_error=5), TTL + 6, Do.REFRESH),
]


@pytest.mark.parametrize("name, policy, age, down, missing, failed, expected", CASES, ids=[c[0] for c in CASES])
def test_decide(name, policy, age, down, missing, failed, expected):
    assert decide(policy, age=age, down=down, missing=missing, failed=failed) is expected


@pytest.mark.parametrize("name, policy, age, expected", SLOW_CASES, ids=[c[0] for c in SLOW_CASES])
def test_decide_while_the_upstream_is_slow(name, policy, age, expected):
    assert decide(policy, age=age, down=False, missing=False, failed=False, slow=True) is expected
