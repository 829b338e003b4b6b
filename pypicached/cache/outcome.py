"""The cache status every response reports in ``X-Pypi-Cache``."""

from __future__ import annotations

import enum


class CacheStatus(str, enum.Enum):
    """What the cache did for one response; docs/serving.md explains each value."""

    HIT = "HIT"  # served from the cache without asking upstream
    MISS = "MISS"  # not cached: fetched from upstream for this request
    JOINED = "JOINED"  # the file was already downloading: streamed from that download
    REVALIDATED = "REVALIDATED"  # page had expired; upstream said it is unchanged (304)
    EXPIRED = "EXPIRED"  # page had expired; upstream sent a new version
    STALE = "STALE"  # page past its TTL, served because the upstream failed or the proxy is offline
    UPDATING = "UPDATING"  # page past its TTL, served at once while a background request refreshes it
    PASS = "PASS"  # nothing cacheable: a redirect, a refusal or the proxy's own page
    ERROR = "ERROR"  # the upstream failed and nothing cached could stand in
    DENIED = "DENIED"  # the policy holds this project or file back (403, the reason in the body)


HEADER = b"X-Pypi-Cache"
#: Which index a page came from ("*": every index's project list, joined).
INDEX_HEADER = b"X-Pypi-Index"
