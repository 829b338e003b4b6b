"""
Several indexes behind one URL, without dependency confusion: which index a
project comes from. A project an index's ``projects`` names comes from that index
alone; any other from the first index, in file order, among those that name no
projects, that has it, whole. Files are never merged across indexes, and an
index that fails is never taken for one that answered 404.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from pypicached.base.names import matches_any
from pypicached.cache.freshness import Freshness
from pypicached.config.table import BY_NAME, PER_INDEX, POLICY
from pypicached.config.values import ConfigError, upstreams
from pypicached.policy.rules import Policy

#: The one index a plain ``upstream`` setting stands for.
DEFAULT_INDEX_NAME = "pypi"


@attrs.frozen
class IndexSettings:
    """One upstream index, as configured: its name, URL (its first mirror's), pinned projects and own settings."""

    name: str
    #: The first (preferred) mirror's URL: the cache keeps the index's pages under it.
    url: str
    #: Normalized project names or globs of them served from this index alone.
    projects: tuple[str, ...]
    # the per-upstream settings (PER_INDEX): no defaults here, the global ones are given by ``indexes_from``
    index_ttl: float
    offline: bool
    stale_if_error: float | None
    stale_while_revalidate: float
    stale_if_slow: float
    upstream_retry_max: float
    response_timeout: float
    file_response_timeout: float
    idle_timeout: float
    policy: Policy = Policy()
    #: Every mirror of the index, in order of preference: ``url`` first.
    mirrors: tuple[str, ...] = attrs.field(default=attrs.Factory(lambda self: (self.url,), takes_self=True))

    def pins(self, project: str) -> bool:
        return matches_any(self.projects, project)

    def freshness(self) -> Freshness:
        """The settings that decide how long its pages are trusted and what stands in for them."""
        return Freshness(
            ttl=self.index_ttl,
            offline=self.offline,
            stale_if_error=self.stale_if_error,
            stale_while_revalidate=self.stale_while_revalidate,
            stale_if_slow=self.stale_if_slow,
        )

    def overrides(self, defaults: Mapping[str, Any], policy: Policy) -> dict[str, Any]:
        """This index as an ``[[index]]`` table would spell it: what differs from the global settings."""
        table: dict[str, Any] = {"name": self.name, "url": self.url if len(self.mirrors) == 1 else list(self.mirrors)}
        if self.projects:
            table["projects"] = list(self.projects)
        for key in PER_INDEX:
            if getattr(self, key) != defaults[key]:
                table[key] = BY_NAME[key].shown(getattr(self, key))
        for key in POLICY:
            if getattr(self.policy, key) != getattr(policy, key):
                table[key] = BY_NAME[key].shown(getattr(self.policy, key))
        return table


def indexes_from(
    tables: tuple[Mapping[str, Any], ...],
    upstream_url: str | tuple[str, ...],
    defaults: Mapping[str, Any],
    policy: Policy,
) -> tuple[IndexSettings, ...]:
    """
    Each index with the global settings (``defaults`` of PER_INDEX, ``policy``), overridden
    by what its own table says; without tables, one index named ``pypi`` at ``upstream_url``
    (one URL, or its mirrors).
    """
    values = {key: defaults[key] for key in PER_INDEX}
    if not tables:
        mirrors = _mirrors(upstream_url)
        return (IndexSettings(DEFAULT_INDEX_NAME, mirrors[0], (), **values, policy=policy, mirrors=mirrors),)
    indexes = tuple(_index(table, values, policy) for table in tables)
    if all(index.projects for index in indexes):
        raise ConfigError(
            "[[index]]: every index pins projects, so nothing could serve any other project; "
            "leave 'projects' out of at least one"
        )
    return indexes


def _index(table: Mapping[str, Any], defaults: Mapping[str, Any], policy: Policy) -> IndexSettings:
    """One ``[[index]]`` table (already checked alone by ``index_tables``), its overrides read and checked."""
    name = table["name"]
    own: dict[str, Any] = {}
    for key, raw in table.items():
        if key in ("name", "projects"):
            continue
        if key != "url" and key not in PER_INDEX + POLICY:
            raise ConfigError(
                f"index {name!r}: unknown setting {key!r}; an index takes name, url, projects and "
                + ", ".join(PER_INDEX + POLICY)
            )
        try:
            own[key] = upstreams(raw) if key == "url" else BY_NAME[key].parse(raw)
        except ValueError as e:
            raise ConfigError(f"index {name!r}: {key}: {e}") from None
    values = {key: own.get(key, defaults[key]) for key in PER_INDEX}
    policy = attrs.evolve(policy, **{key: own[key] for key in POLICY if key in own})
    mirrors = _mirrors(own["url"])
    return IndexSettings(name, mirrors[0], tuple(table.get("projects", ())), **values, policy=policy, mirrors=mirrors)


def _mirrors(url: str | tuple[str, ...]) -> tuple[str, ...]:
    """An index's URL as parsed (one, or a list of mirrors) as the list."""
    return (url,) if isinstance(url, str) else url
