"""
Several indexes behind one URL, without dependency confusion: which index a
project comes from. A project an index's ``projects`` names comes from that index
alone; any other from the first index, in file order, among those that name no
projects, that has it, whole. Files are never merged across indexes, and an
index that fails is never taken for one that answered 404.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from pypicached.config.values import ConfigError, upstream
from pypicached.base.names import globs, matches_any
from pypicached.policy.rules import Policy

#: The settings an ``[[index]]`` table may override for its own upstream.
PER_INDEX = (
    "index_ttl", "offline", "stale_if_error", "stale_while_revalidate", "stale_if_slow",
    "upstream_retry_max", "response_timeout", "file_response_timeout", "idle_timeout",
)
#: The policy's settings, which an ``[[index]]`` table may override too (as ``IndexSettings.policy``).
POLICY = ("min_release_age", "min_release_age_exempt", "missing_upload_time", "deny", "allow", "deny_vulnerable")
_NAME = re.compile(r"[a-z0-9-]+")


@attrs.frozen
class IndexSettings:
    """One upstream index, as configured: its name, URL, pinned projects and own settings."""

    name: str
    url: str
    #: Normalized project names or globs of them served from this index alone.
    projects: tuple[str, ...]
    # the per-upstream settings (PER_INDEX): no defaults here, ``indexes_of`` gives the global ones
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

    def pins(self, project: str) -> bool:
        return matches_any(self.projects, project)


def index_tables(value: Any) -> tuple[dict[str, Any], ...]:
    """``[[index]]`` tables, checked as far as they can be alone (names, URLs, patterns; overrides later)."""
    if not isinstance(value, list) or not value or not all(isinstance(t, dict) for t in value):
        raise ValueError("expected one or more [[index]] tables")
    names: set[str] = set()
    for number, table in enumerate(value, 1):
        name = table.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"index {number}: 'name' must be lower-case letters, digits and '-', not {name!r}")
        if name in names:
            raise ValueError(f"index {number}: the name {name!r} is used twice")
        names.add(name)
        if "url" not in table:
            raise ValueError(f"index {name!r}: 'url' is missing")
        try:
            globs(table.get("projects", []))
        except ValueError as e:
            raise ValueError(f"index {name!r}: 'projects' {e}") from None
    return tuple(value)


def indexes_of(settings: Any) -> tuple[IndexSettings, ...]:
    """Each index with the global settings, overridden by what its own table says."""
    defaults = {name: getattr(settings, name) for name in PER_INDEX + POLICY}
    if not settings.index:
        return (_index("pypi", settings.upstream, (), defaults),)
    indexes = []
    for table in settings.index:
        name = table["name"]
        values = dict(defaults)
        for key, raw in table.items():
            if key in ("name", "projects"):
                continue
            if key != "url" and key not in PER_INDEX + POLICY:
                raise ConfigError(
                    f"index {name!r}: unknown setting {key!r}; an index takes name, url, projects and "
                    + ", ".join(PER_INDEX + POLICY)
                )
            try:
                values[key] = upstream(raw) if key == "url" else _parser(key)(raw)
            except ValueError as e:
                raise ConfigError(f"index {name!r}: {key}: {e}") from None
        indexes.append(_index(name, values.pop("url"), tuple(table.get("projects", ())), values))
    if all(index.projects for index in indexes):
        raise ConfigError("[[index]]: every index pins projects, so nothing could serve any other project; "
                          "leave 'projects' out of at least one")
    return tuple(indexes)


def _index(name: str, url: str, projects: tuple[str, ...], values: dict[str, Any]) -> IndexSettings:
    policy = Policy(**{key: values.pop(key) for key in POLICY})
    return IndexSettings(name, url, projects, **values, policy=policy)


def _parser(name: str) -> Any:
    from pypicached.config.settings import SETTINGS  # the one table of how each setting is read

    return next(s.parse for s in SETTINGS if s.name == name)


def route_for(indexes: tuple[IndexSettings, ...], project: str) -> tuple[IndexSettings, ...]:
    """The indexes to ask for ``project``, in order: its pinning index alone, or every unpinning one."""
    pinned = [index for index in indexes if index.pins(project)]
    if pinned:
        return (pinned[0],)
    return tuple(index for index in indexes if not index.projects)
