"""
``pypicached-admin prefetch FILE... [-r REQUIREMENTS]``: lock files and
requirements files, each read as its name and content say, fetched through the
daemon, and one summary for them all (text, or ``--json``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from pypicached.admin import lockfetch, prefetch
from pypicached.admin.locks import LockedFile, LockError, Target, format_of, read_lock
from pypicached.admin.progress import Progress
from pypicached.cache.records import project_records
from pypicached.config import Settings
from pypicached.ops.summary import human_bytes


class PrefetchError(Exception):
    """A file given cannot be read: the operator must fix the command line."""


def served_hosts(daemon: str, settings: Settings, root: Path, projects: Sequence[str]) -> frozenset[str]:
    """
    Hosts whose URLs map onto this proxy: the daemon's, each index's, and the file hosts
    its cached pages of these projects link to (where the cache directory is readable here).
    """
    hosts = {lockfetch.host_of(daemon)} | {lockfetch.host_of(i.url) for i in settings.indexes}
    for pages in root.glob("pages/*"):
        for project in projects:
            for record in project_records(pages, project)[:1]:
                try:
                    files = json.loads(record.read_bytes())["page"].get("files", ())
                except (OSError, ValueError, KeyError, AttributeError):
                    continue
                hosts |= {lockfetch.host_of(f.get("url", "")) for f in files if isinstance(f, dict)}
    return frozenset(hosts - {""})


async def requirements_summary(
    http: Any, index: str, path: Path, all_files: bool, jobs: int, headers: dict[str, str]
) -> prefetch.Summary:
    """A requirements file, as prefetch always read them (the newest matching version's files)."""
    try:
        wanted = prefetch.read_requirements(path)
    except OSError as e:
        raise PrefetchError(f"cannot read {path}: {e.strerror}") from None
    outcome = await prefetch.plan(http, index, wanted, all_files=all_files, jobs=jobs, headers=headers)
    progress = Progress(sys.stderr, "prefetch", 0, len(outcome.plan))
    await prefetch.fetch(http, outcome, jobs=jobs, headers=headers, on_progress=progress.advance)
    progress.finish()
    return outcome


def read_locks(paths: Sequence[Path], target: Target) -> tuple[list[LockedFile], list[Path]]:
    """The wanted files of the lock files among ``paths``, and the paths that are requirements files."""
    locked: list[LockedFile] = []
    requirements = []
    for path in paths:
        try:
            fmt = format_of(path)
            if fmt == "requirements":
                requirements.append(path)
            else:
                locked += [f for f in read_lock(path, fmt) if target.wants(f)]
        except (OSError, UnicodeDecodeError, LockError) as e:
            raise PrefetchError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return locked, requirements


def write(summary: prefetch.Summary, as_json: bool, out: TextIO) -> int:
    """The summary, and the exit code: 1 if any file is missing or not as the lock says."""
    if as_json:
        out.write(json.dumps(summary.as_json(), indent=1) + "\n")
    else:
        fetched, cached = (sum(n for _, n in rows) for rows in (summary.fetched, summary.cached))
        out.write(
            f"Fetched {len(summary.fetched)} files ({human_bytes(fetched)}) from the upstream; "
            f"{len(summary.cached)} ({human_bytes(cached)}) were already cached.\n"
            f"{len(summary.skipped)} skipped, {len(summary.missing)} missing, "
            f"{len(summary.mismatched)} not as the lock says; {human_bytes(summary.bytes)} in all.\n"
        )
        for name, n in summary.fetched:
            out.write(f"  fetched  {name} ({human_bytes(n)})\n")
        for label, reasons in (
            ("skipped ", summary.skipped),
            ("MISSING ", summary.missing),
            ("MISMATCH", summary.mismatched),
            ("CONFLICT", summary.conflicts),
        ):
            for name, reason in reasons:
                out.write(f"  {label} {name}: {reason}\n")
    return 1 if summary.missing or summary.mismatched else 0
