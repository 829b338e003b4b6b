"""
The policy's verdicts: on a project by its name, and on one file by its name,
upload time and its project's status. Each verdict names its rule and says why
in one line, since that line is what a client's 403 and the admin command show.
"""

from __future__ import annotations

import datetime
import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from pypicached.base.names import matches_any, version_of
from pypicached.policy.rules import Policy
from pypicached.upstream.breaker import iso

if TYPE_CHECKING:
    from pypicached.policy.advisories import AdvisoryIndex

#: Every rule, in the order they are tried: the first that holds a file back names it.
RULES = ("deny", "allow", "quarantined", "malicious", "vulnerable", "min_release_age", "missing_upload_time")


@attrs.frozen
class Verdict:
    """What one rule does to a project or file, and why."""

    rule: str
    reason: str
    #: False for a verdict that is only counted and shown (a vulnerability without ``deny_vulnerable``).
    hides: bool = True


class Denied(Exception):
    """A project or file the policy holds back: 403, with the verdict's reason."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


@attrs.frozen
class FileVerdict:
    """A file's verdict (None: shown) and how long it holds: a held-back release comes of age."""

    verdict: Verdict | None
    until: float = math.inf


SHOWN = FileVerdict(None)


def iso_z(when: float) -> str:
    """``iso``'s time with a ``Z``, as upload times are written (past year 9999: that year's end)."""
    try:
        return str(iso(when)).replace("+00:00", "Z")
    except (ValueError, OverflowError, OSError):
        return "9999-12-31T23:59:59Z" if when > 0 else "0001-01-01T00:00:00Z"


def upload_time(text: object) -> float | None:
    """A PEP 700 ``upload-time`` (ISO 8601, UTC) as a POSIX time; None if absent or unreadable."""
    return _upload_time(text) if isinstance(text, str) and text else None


@functools.lru_cache(maxsize=65536)
def _upload_time(text: str) -> float | None:
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


@attrs.frozen
class Judge:
    """One index's policy, and the advisories it consults (read afresh on each verdict: they are refreshed)."""

    policy: Policy
    advisories: Callable[[], AdvisoryIndex]

    def project(self, project: str) -> Verdict | None:
        """A verdict on the whole project, by its name alone: a bare deny entry, or not allowed."""
        for entry in self.policy.deny:
            if entry.whole_project and entry.project == project:
                return Verdict("deny", f"{project}: denied by deny entry {entry.text!r}")
        if self.policy.allow is not None and not matches_any(self.policy.allow, project):
            return Verdict("allow", f"{project}: not in the allow list")
        return None

    def file(
        self, project: str, filename: str, uploaded: object, status: str, now: float, *, stored: float | None = None
    ) -> FileVerdict:
        """
        A verdict on one file of ``project``, uploaded when ``uploaded`` says; or, for
        a cached file no page lists (``stored``: when it was cached), no later than that.
        """
        whole = self.project(project)
        if whole is not None:
            return FileVerdict(whole)
        if status == "quarantined":
            return FileVerdict(
                Verdict("quarantined", f"{project}: quarantined by its index (PEP 792); it offers no files")
            )
        version = version_of(project, filename)
        for entry in self.policy.deny:
            if entry.denies(project, version):
                return FileVerdict(Verdict("deny", f"{filename}: denied by deny entry {entry.text!r}"))
        shown = SHOWN
        if version is not None:
            for advisory in self.advisories().affecting(project, str(version)):
                if advisory.malicious:
                    return FileVerdict(Verdict("malicious", f"{filename}: {advisory.id}, a malicious-package advisory"))
                hides = self.policy.deny_vulnerable
                why = f"{filename}: {advisory.id}" + (
                    ", denied by deny_vulnerable" if hides else ", a known vulnerability"
                )
                shown = FileVerdict(Verdict("vulnerable", why, hides))
                if hides:
                    return shown
        if not self.policy.ages(project):
            return shown
        aged = self._aged(filename, uploaded, now) if stored is None else self._unlisted(filename, stored, now)
        return aged or shown

    def _aged(self, filename: str, uploaded: object, now: float) -> FileVerdict | None:
        """The age rules: held back until the release is ``min_release_age`` old, or for want of an upload time."""
        when = upload_time(uploaded)
        if when is None:
            if self.policy.missing_upload_time == "hide":
                return FileVerdict(
                    Verdict(
                        "missing_upload_time", f'{filename}: no upload time, hidden by missing_upload_time = "hide"'
                    )
                )
            return None
        until = when + self.policy.min_release_age
        if self.policy.min_release_age > 0 and now < until:
            reason = f"{filename}: uploaded {iso_z(when)}, held back until {iso_z(until)} by min_release_age"
            return FileVerdict(Verdict("min_release_age", reason), until)
        return None

    def _unlisted(self, filename: str, stored: float, now: float) -> FileVerdict | None:
        """The age rules for a cached file no page lists: uploaded no later than it was cached, but when is unknown."""
        unlisted = f"{filename}: no cached index page lists it, so its upload time is unknown"
        if self.policy.min_release_age <= 0:
            return FileVerdict(Verdict("missing_upload_time", f'{unlisted}; hidden by missing_upload_time = "hide"'))
        until = stored + self.policy.min_release_age
        if now < until:
            reason = f"{unlisted}; cached {iso_z(stored)}, held back until {iso_z(until)} by min_release_age"
            return FileVerdict(Verdict("min_release_age", reason), until)
        return None
