"""
Projects whose page says "quarantined" (PEP 792): their files are refused with or
without a policy, so the set is kept in memory for every file request and as a
marker file per project, so that it outlives a restart.
"""

from __future__ import annotations

import os
from pathlib import Path

from pypicached.base.disk import atomic_write
from pypicached.cache.pagekind import PROJECT
from pypicached.cache.records import StoredPage, unlink
from pypicached.simpleapi.simple import project_status


class Quarantine:
    """One index's quarantined projects: in memory, and as markers under ``directory``."""

    def __init__(self, directory: Path, tmp: Path) -> None:
        self._directory = directory
        self._tmp = tmp
        try:
            self._projects = set(os.listdir(directory))
        except OSError:
            self._projects = set()

    def __contains__(self, project: str) -> bool:
        return project in self._projects

    def noted(self, page: StoredPage) -> None:
        """Keep the set up to date with a project page just validated."""
        if page.key.kind is PROJECT:
            if project_status(page.page)[0] == "quarantined":
                self._projects.add(page.key.project)
            else:
                self._projects.discard(page.key.project)

    def mark(self, page: StoredPage) -> None:
        """(In a disk thread.) The marker file for ``page``'s project, as the set has it now."""
        if page.key.kind is not PROJECT:
            return
        marker = self._directory / page.key.project
        if page.key.project in self._projects:
            marker.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(marker, b"", self._tmp)
        else:
            unlink(marker)
