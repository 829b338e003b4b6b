"""
The policy as configured: one frozen value per index, and the parsers that read
its settings, so that a bad entry stops the start-up with its own name in the error.
"""

from __future__ import annotations

from typing import Any

import attrs
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from pypicached.base.names import globs, matches_any, normalize


@attrs.frozen
class DenyEntry:
    """One ``deny`` entry: a project, and the versions of it denied (all of them without a specifier)."""

    text: str
    project: str
    specifier: SpecifierSet

    @classmethod
    def parse(cls, text: str) -> DenyEntry:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as e:
            raise ValueError(f"deny entry {text!r} is not a requirement: {e}") from None
        if requirement.url or requirement.marker or requirement.extras:
            raise ValueError(f"deny entry {text!r}: give a project name and versions only (no URL, extras or markers)")
        return cls(text, normalize(requirement.name), requirement.specifier)

    @property
    def whole_project(self) -> bool:
        return not str(self.specifier)

    def denies(self, project: str, version: Version | None) -> bool:
        """
        Whether this entry names ``project`` at ``version`` (a file whose version is
        unknown: only a whole-project entry).
        """
        if project != self.project:
            return False
        if self.whole_project:
            return True
        return version is not None and self.specifier.contains(version, prereleases=True)


def allow_list(value: Any) -> tuple[str, ...]:
    patterns = globs(value)
    if not patterns:
        raise ValueError("an empty allow list would serve nothing; leave 'allow' out to serve every project")
    return patterns


def deny_list(value: Any) -> tuple[DenyEntry, ...]:
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise ValueError(f"expected a list of requirement strings like 'evil-pkg' or 'urllib3<1.26.5', not {value!r}")
    return tuple(DenyEntry.parse(entry) for entry in value)


@attrs.frozen
class Policy:
    """What one index's clients may see; the defaults show everything."""

    #: Seconds a file must have been public before it is shown (0: off).
    min_release_age: float = 0.0
    min_release_age_exempt: tuple[str, ...] = ()
    missing_upload_time: str = "allow"
    deny: tuple[DenyEntry, ...] = ()
    #: Only these projects are served (None: every project).
    allow: tuple[str, ...] | None = None
    deny_vulnerable: bool = False

    def exempt(self, project: str) -> bool:
        """Never held back for its age (a team's own packages, an urgent fix)."""
        return matches_any(self.min_release_age_exempt, project)

    def ages(self, project: str) -> bool:
        """Whether a file's upload time matters for ``project``."""
        return (self.min_release_age > 0 or self.missing_upload_time == "hide") and not self.exempt(project)
