"""
The policy where requests pass: each page answered through its view, and each
file request checked against the page that links it (a file already on disk
included), so a lock file or pinned URL cannot fetch what the pages hide.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IReactorTime

from pypicached.cache.fetch import NotFound
from pypicached.cache.freshness import Offline
from pypicached.cache.pagekind import PROJECT, PageKey
from pypicached.cache.records import StoredPage
from pypicached.index.names import projects_for_filename
from pypicached.policy.advisories import EMPTY
from pypicached.policy.heldback import HeldBack
from pypicached.policy.judge import Denied, Judge
from pypicached.policy.rules import Policy
from pypicached.policy.view import SHAPES, View, view
from pypicached.upstream.breaker import UpstreamDown, iso
from pypicached.upstream.client import UpstreamError

if TYPE_CHECKING:
    from pypicached.cache.indexes import Indexes, Upstream
    from pypicached.policy.advisories import AdvisoryFeed, AdvisoryIndex


class Gate:
    """Every index's policy at run time, and the tally of what it held back."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        indexes: "Indexes",
        feed: "AdvisoryFeed | None" = None,
        held: HeldBack | None = None,
    ) -> None:
        self._clock = clock
        self._indexes = indexes
        self._feed = feed
        self.held = held or HeldBack()
        self._judges = {u.name: Judge(u.settings.policy, self._advisories) for u in indexes.upstreams}
        #: Whether any file could be held back by its name or age (else file requests skip the check).
        self.active = feed is not None or any(u.settings.policy != Policy() for u in indexes.upstreams)

    def _advisories(self) -> "AdvisoryIndex":
        return self._feed.current if self._feed is not None else EMPTY

    def summary(self) -> dict[str, Any] | None:
        """The policy's part of ``/stats``: what it held back, and the advisories it consults."""
        feed = self._feed
        advisories = None if feed is None else {
            "url": feed.url, "count": feed.current.count, "version": feed.current.version or None,
            "last_refresh": iso(feed.last_refresh), "last_error": feed.last_error,
        }
        held = self.held.as_dict(self._clock.seconds())
        if not self.active and not held["held_back_by_rule"]:
            return None  # no policy configured (and no quarantine met): nothing to report
        return {**held, "advisories": advisories}

    def judge(self, index: str) -> Judge:
        return self._judges[index]

    def view(self, upstream: "Upstream | None", stored: StoredPage) -> View | None:
        """
        What the policy lets clients see of ``stored`` now (None: a page it has no
        say over); ``Denied`` for a page it refuses. Made once per page version
        until a held-back release comes of age or the advisories change.
        """
        shape = SHAPES.get(stored.key.kind.name)
        if upstream is None or shape is None:
            return None
        if not self.active and shape.status(stored.page) != "quarantined":
            return None  # no policy configured: only a quarantine changes what a page offers
        now = self._clock.seconds()
        advisories = self._advisories().version
        made, day = stored.policy_view or (None, None)
        if made is None or now >= made.until or made.advisories != advisories:
            made = view(self._judges[upstream.name], stored, now, advisories)
            day = None
        if day != now // 86400:  # what it holds back is noted once a day, for today's list
            self.held.noted(upstream.name, stored.key.project, {**made.flagged, **made.hidden}, now)
        stored.policy_view = (made, now // 86400)
        if made.refusal is not None:
            raise self.denied(made.refusal)
        return made

    def check_project(self, chosen: "Upstream | None", project: str) -> None:
        """``Denied`` if every index that could answer for ``project`` refuses it by its name."""
        route = (chosen,) if chosen is not None else self._indexes.route(project)
        verdicts = [self._judges[u.name].project(project) for u in route]
        if verdicts and all(verdicts):
            raise self.denied(verdicts[0])

    def denied(self, verdict: Any) -> Denied:
        """The exception that answers 403 for ``verdict``, counted."""
        self.held.denied(verdict)
        return Denied(verdict)

    async def check_file(self, segments: tuple[str, ...]) -> None:
        """``Denied`` if the policy holds back the file (or metadata file) at ``segments``."""
        if not self.active:
            return
        filename = segments[-1].removesuffix(".metadata")
        try:
            _, upstream = await self._indexes.find_link(segments)
        except (NotFound, Offline, UpstreamDown, UpstreamError):
            upstream = None  # no page at hand: judged by its name alone below
        for project in projects_for_filename(filename) if upstream else ():
            stored = upstream.pages.cached(PageKey(PROJECT, project))  # type: ignore[union-attr]
            if stored is not None and segments in stored.links():
                made = self.view(upstream, stored)
                verdict = made.hidden.get(filename) if made else None
                if verdict is not None:
                    raise self.denied(verdict)
                return
        self._by_name(filename)

    def _by_name(self, filename: str) -> None:
        """The rules that need no page: a deny entry, the allow list, advisories."""
        for project in projects_for_filename(filename)[:1]:
            route = self._indexes.route(project)
            if route:
                found = self._judges[route[0].name].file(project, filename, None, "active", self._clock.seconds(), paged=False)
                if found.verdict is not None and found.verdict.hides:
                    raise self.denied(found.verdict)


def max_age(made: View | None, now: float, ttl: float) -> float:
    """A page's ``max-age``: its TTL, but no later than its view changes (a release comes of age)."""
    if made is None or made.until == math.inf:
        return ttl
    return max(0.0, min(ttl, made.until - now))
