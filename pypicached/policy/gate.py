"""
The policy where requests pass: each page answered through its view, and each
file request checked against the page that links it (a file already on disk
included), so a lock file or pinned URL cannot fetch what the pages hide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime

from pypicached.base.names import projects_for_filename, without_metadata
from pypicached.cache.fetch import NotFound
from pypicached.cache.freshness import Offline
from pypicached.cache.pagekind import PROJECT, PageKey
from pypicached.cache.records import StoredPage
from pypicached.policy.advisories import EMPTY
from pypicached.policy.heldback import HeldBack
from pypicached.policy.judge import Denied, Judge, Verdict
from pypicached.policy.rules import Policy
from pypicached.policy.view import SHAPES, View, view
from pypicached.simpleapi.simple import project_status
from pypicached.upstream.breaker import UpstreamDown, iso
from pypicached.upstream.errors import UpstreamError

if TYPE_CHECKING:
    from pypicached.cache.router import Router, Source
    from pypicached.policy.advisories import AdvisoryFeed, AdvisoryIndex


#: Views kept (the most recently used pages'); an older one is made again when asked for.
VIEWS_KEPT = 4096


class Gate:
    """Every index's policy at run time, and the tally of what it held back."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        indexes: Router,
        policies: Mapping[str, Policy],
        stored_at: Callable[[tuple[str, ...]], float | None] = lambda segments: None,
        feed: AdvisoryFeed | None = None,
        held: HeldBack | None = None,
    ) -> None:
        """``stored_at``: when a file came into the cache (``FileCache.stored_at``), None if it is not there."""
        self._clock = clock
        self._indexes = indexes
        self._stored_at = stored_at
        self._feed = feed
        self.held = held or HeldBack()
        self._judges = {name: Judge(policy, self._advisories) for name, policy in policies.items()}
        #: The view last made of each page, by (index, page): its version, the view, the day it was noted.
        self._views: dict[tuple[str, PageKey], tuple[str, View, float]] = {}
        #: Whether any file could be held back by its name or age (else file requests skip the check).
        self.active = feed is not None or any(policy != Policy() for policy in policies.values())

    def _advisories(self) -> AdvisoryIndex:
        return self._feed.current if self._feed is not None else EMPTY

    def summary(self) -> dict[str, Any] | None:
        """The policy's part of ``/stats``: what it held back, and the advisories it consults."""
        feed = self._feed
        advisories = (
            None
            if feed is None
            else {
                "url": feed.url,
                "count": feed.current.count,
                "version": feed.current.version or None,
                "last_refresh": iso(feed.last_refresh),
                "last_error": feed.last_error,
            }
        )
        held = self.held.as_dict(self._clock.seconds())
        if not self.active and not held["held_back_by_rule"]:
            return None  # no policy configured (and no quarantine met): nothing to report
        return {**held, "advisories": advisories}

    def judge(self, index: str) -> Judge:
        return self._judges[index]

    def view(self, upstream: Source | None, stored: StoredPage) -> View | None:
        """
        What the policy lets clients see of ``stored`` now (None: a page it has no
        say over); ``Denied`` for a page it refuses. Made once per page version
        until a held-back release comes of age, the advisories change or the
        project's status does.
        """
        shape = SHAPES.get(stored.key.kind.name)
        if upstream is None or shape is None:
            return None
        status = self._status(upstream, stored)
        if not self.active and status != "quarantined":
            return None  # no policy configured: only a quarantine changes what a page offers
        now = self._clock.seconds()
        advisories = self._advisories().version
        memo_key = (upstream.name, stored.key)
        version, made, day = self._views.pop(memo_key, ("", None, None))
        if (
            version != stored.version
            or made is None
            or now >= made.until
            or made.advisories != advisories
            or made.status != status
        ):
            made = view(self._judges[upstream.name], stored, now, advisories, status)
            day = None
        if day != now // 86400:  # what it holds back is noted once a day, for today's list
            self.held.noted(upstream.name, stored.key.project, {**made.flagged, **made.hidden}, now)
        self._views[memo_key] = (stored.version, made, now // 86400)
        if len(self._views) > VIEWS_KEPT:
            del self._views[next(iter(self._views))]
        if made.refusal is not None:
            raise self.denied(made.refusal)
        return made

    @staticmethod
    def _status(upstream: Source, stored: StoredPage) -> str:
        """The project's PEP 792 status: its simple page's (the JSON API has none of its own: its marker)."""
        if stored.key.kind is PROJECT:
            return project_status(stored.page)[0]
        return "quarantined" if upstream.pages.quarantined(stored.key.project) else "active"

    def refusal(self, chosen: Source | None, project: str) -> Verdict | None:
        """The verdict on ``project`` by its name, if every index that could answer for it refuses it."""
        route = (chosen,) if chosen is not None else self._indexes.route(project)
        verdicts = [self._judges[u.name].project(project) for u in route]
        return verdicts[0] if verdicts and all(verdicts) else None

    def check_project(self, chosen: Source | None, project: str) -> None:
        """``Denied`` if every index that could answer for ``project`` refuses it by its name."""
        if not self.active:
            return
        verdict = self.refusal(chosen, project)
        if verdict is not None:
            raise self.denied(verdict)

    def denied(self, verdict: Verdict) -> Denied:
        """The exception that answers 403 for ``verdict``, counted."""
        self.held.denied(verdict)
        return Denied(verdict)

    def check_file(self, segments: tuple[str, ...]) -> Deferred[None] | None:
        """
        Whether the policy holds back the file (or metadata file) at ``segments``: None
        when it cannot (no policy, no quarantine), else a Deferred that fails with ``Denied``
        if it does. Judged by the project page that links it, cached or fetched. A file in
        the cache that no page lists (deleted upstream, as a caught malicious release is;
        the upstream down, or offline) is judged by its name and the time it was cached.
        Any other file the cache could not serve anyway: its 404 or 503 is left to it.
        """
        filename = without_metadata(segments[-1])
        projects = projects_for_filename(filename)
        if not self.active and not any(u.pages.quarantined(p) for p in projects for u in self._indexes.route(p)):
            return None
        return ensureDeferred(self._check_file(segments, filename, projects))

    async def _check_file(self, segments: tuple[str, ...], filename: str, projects: list[str]) -> None:
        found = self._indexes.linking_page(segments, projects)
        if found is None:
            try:
                linked = await self._indexes.find_link(segments)
                found = (linked.source, linked.page)
            except (NotFound, Offline, UpstreamDown, UpstreamError):
                pass
        if found is None:
            stored = self._stored_at(segments)
            if stored is not None:
                self._unlisted(filename, projects, stored)
            return
        self.check_linked(found[0], found[1], filename)

    def check_linked(self, source: Source, page: StoredPage, filename: str) -> None:
        """``Denied`` if the policy hides ``filename`` on ``page``, the page of ``source`` that links it."""
        made = self.view(source, page)
        verdict = made.hidden.get(filename) if made else None
        if verdict is not None:
            raise self.denied(verdict)

    def _unlisted(self, filename: str, projects: list[str], stored: float) -> None:
        """A cached file no page lists: the rules that need no page, and its age bounded by when it was cached."""
        now = self._clock.seconds()
        for project in projects:
            route = self._indexes.route(project)
            if route:
                status = "quarantined" if route[0].pages.quarantined(project) else "active"
                found = self._judges[route[0].name].file(project, filename, None, status, now, stored=stored)
                if found.verdict is not None and found.verdict.hides:
                    raise self.denied(found.verdict)
