"""
Filling the cache ahead of a CI rush: for each requirement of a requirements
file, the newest matching version's files are fetched through the proxy, just
as an installer would fetch them, and thrown away; the proxy keeps them.

It does not resolve dependencies: give it a fully pinned file (``pip freeze``,
``pip-compile`` or ``uv pip compile`` output), which is what CI installs from.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import attrs
import treq
from packaging.requirements import InvalidRequirement, Requirement
from packaging.tags import Tag, sys_tags
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version
from twisted.internet.defer import DeferredSemaphore, ensureDeferred, gatherResults

from pypicached.simpleapi.simple import BadPage, parse_json_object

ACCEPT_JSON = "application/vnd.pypi.simple.v1+json"


@attrs.frozen
class Wanted:
    """One line of a requirements file, as a requirement or the reason it is not one."""

    line: str
    requirement: Requirement | None = None
    problem: str | None = None


def read_requirements(path: Path, seen: frozenset[Path] = frozenset()) -> list[Wanted]:
    """The requirements of a pip requirements file, following ``-r`` includes."""
    path = path.resolve()
    if path in seen:
        return [Wanted(f"-r {path}", problem="included twice (a loop)")]
    wanted: list[Wanted] = []
    logical = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.endswith("\\"):
            logical += raw[:-1] + " "
            continue
        line, logical = (logical + raw).split(" #", 1)[0].strip(), ""
        if not line or line.startswith("#"):
            continue
        if line.startswith(("-r ", "--requirement ", "-c ", "--constraint ")):
            flag, target = line.split(None, 1)
            if flag in ("-r", "--requirement"):
                wanted += read_requirements(path.parent / target.strip(), seen | {path})
            continue
        if line.startswith("-"):
            wanted.append(Wanted(line, problem="an option, not a requirement; skipped"))
            continue
        try:
            requirement = Requirement(line.split(" --hash", 1)[0].strip())
        except InvalidRequirement as e:
            wanted.append(Wanted(line, problem=f"not a requirement: {e}"))
            continue
        if requirement.url:
            wanted.append(Wanted(line, problem="a direct URL, not from the index"))
            continue
        wanted.append(Wanted(line, requirement))
    return wanted


@attrs.frozen
class Candidate:
    filename: str
    url: str
    version: Version
    wheel_tags: frozenset[Tag] | None  # None for an sdist
    yanked: bool
    metadata: bool


def candidates(page: dict[str, Any], page_url: str) -> list[Candidate]:
    """The installable files of a PEP 691 project page."""
    found = []
    for entry in page.get("files", []):
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            continue
        filename = entry["filename"]
        try:
            if filename.endswith(".whl"):
                _, version, _, tags = parse_wheel_filename(filename)
                wheel_tags: frozenset[Tag] | None = frozenset(tags)
            else:
                _, version = parse_sdist_filename(filename)
                wheel_tags = None
        except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
            continue
        found.append(
            Candidate(
                filename,
                urljoin(page_url, entry.get("url", "")),
                version,
                wheel_tags,
                bool(entry.get("yanked")),
                bool(entry.get("core-metadata") or entry.get("dist-info-metadata")),
            )
        )
    return found


def choose(requirement: Requirement, found: list[Candidate], all_files: bool, tags: frozenset[Tag]) -> list[Candidate]:
    """The files to fetch: the newest version the requirement allows, its files for these tags."""
    pinned = any(spec.operator in ("==", "===") for spec in requirement.specifier)
    versions = sorted(
        {
            c.version
            for c in found
            if (pinned or not c.yanked) and requirement.specifier.contains(c.version, prereleases=pinned or None)
        },
        reverse=True,
    )
    if not versions:
        return []
    files = [c for c in found if c.version == versions[0]]
    if all_files:
        return files
    wheels = [c for c in files if c.wheel_tags is not None and c.wheel_tags & tags]
    return wheels or [c for c in files if c.wheel_tags is None]


@attrs.define
class Summary:
    """What a prefetch did, as the command prints it (and as ``--json``)."""

    fetched: list[tuple[str, int]] = attrs.field(factory=list)
    cached: list[tuple[str, int]] = attrs.field(factory=list)
    skipped: list[tuple[str, str]] = attrs.field(factory=list)
    missing: list[tuple[str, str]] = attrs.field(factory=list)
    #: Files whose bytes differ from the lock's digest: not counted as prefetched.
    mismatched: list[tuple[str, str]] = attrs.field(factory=list)
    #: Lock hashes that differ from the index page's (the bytes will then differ from the lock's).
    conflicts: list[tuple[str, str]] = attrs.field(factory=list)

    def extend(self, other: Summary) -> None:
        """Add ``other``'s files to these (one summary for several lock and requirements files)."""
        for field in ("fetched", "cached", "skipped", "missing", "mismatched", "conflicts"):
            getattr(self, field).extend(getattr(other, field))

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.fetched) + sum(n for _, n in self.cached)

    def as_json(self) -> dict[str, Any]:
        def rows(pairs: list[tuple[str, Any]], what: str) -> list[dict[str, Any]]:
            return [{"file": f, what: v} for f, v in pairs]

        return {
            "fetched": rows(self.fetched, "bytes"),
            "cached": rows(self.cached, "bytes"),
            "skipped": rows(self.skipped, "reason"),
            "missing": rows(self.missing, "reason"),
            "mismatched": rows(self.mismatched, "reason"),
            "conflicts": rows(self.conflicts, "reason"),
            "bytes": self.bytes,
        }


@attrs.define
class Outcome(Summary):
    """A requirements file's prefetch: its summary, and the files planned from the index pages."""

    #: (requirement line, file) pairs to fetch, as planned from the index pages.
    plan: list[tuple[str, Candidate]] = attrs.field(factory=list)


class Missing(Exception):
    """A wanted project's page cannot be had; the message says why."""


async def read_page(http: Any, page_url: str, headers: dict[str, str] | None) -> dict[str, Any]:
    """A project's PEP 691 page through the proxy, or ``Missing`` with the reason."""
    try:
        response = await http.get(page_url, headers={"Accept": ACCEPT_JSON, **(headers or {})})
        body = await response.content()
    except Exception as e:
        raise Missing(f"cannot read its index page: {e}") from None
    if response.code == 404:
        raise Missing("no such project on the index")
    if response.code != 200:
        raise Missing(f"the proxy answered {response.code}: {body[:200].decode('utf-8', 'replace').strip()}")
    try:
        return parse_json_object(body)
    except BadPage:
        raise Missing("the proxy's page for it is not PEP 691 JSON") from None


async def plan(
    http: Any,
    index_url: str,
    wanted: list[Wanted],
    *,
    all_files: bool = False,
    jobs: int = 4,
    tags: frozenset[Tag] | None = None,
    headers: dict[str, str] | None = None,
) -> Outcome:
    """
    Read each wanted project's page through the proxy at ``index_url`` (with the
    treq ``HTTPClient`` ``http``) and choose the files to fetch.
    """
    tags = tags if tags is not None else frozenset(sys_tags())
    outcome = Outcome()
    limit = DeferredSemaphore(jobs)

    async def plan_one(item: Wanted) -> None:
        if item.requirement is None:
            outcome.skipped.append((item.line, item.problem or ""))
            return
        requirement = item.requirement
        if requirement.marker is not None and not requirement.marker.evaluate():
            outcome.skipped.append((item.line, "its environment marker does not apply here"))
            return
        page_url = f"{index_url.rstrip('/')}/{canonicalize_name(requirement.name)}/"
        try:
            page = await read_page(http, page_url, headers)
        except Missing as e:
            outcome.missing.append((item.line, str(e)))
            return
        chosen = choose(requirement, candidates(page, page_url), all_files, tags)
        if not chosen:
            outcome.missing.append((item.line, "no version or file matches (for this platform; try --all-files)"))
        outcome.plan.extend((item.line, c) for c in chosen)

    await gatherResults([limit.run(lambda item: ensureDeferred(plan_one(item)), w) for w in wanted], consumeErrors=True)
    return outcome


async def fetch(
    http: Any,
    outcome: Outcome,
    *,
    jobs: int = 4,
    headers: dict[str, str] | None = None,
    on_progress: Callable[[int, int], None] = lambda nbytes, items: None,
) -> Outcome:
    """Fetch the planned files (and their metadata files) through the proxy, and throw them away."""
    limit = DeferredSemaphore(jobs)

    async def fetch_one(candidate: Candidate) -> None:
        urls = [candidate.url] + ([candidate.url + ".metadata"] if candidate.metadata else [])
        for url in urls:
            received = 0

            def count(data: bytes) -> None:
                nonlocal received
                received += len(data)
                on_progress(len(data), 0)

            try:
                response = await http.get(url, headers=headers or {}, unbuffered=True)
                await treq.collect(response, count)
            except Exception as e:
                outcome.missing.append((url.rsplit("/", 1)[-1], f"download failed: {e}"))
                break
            if response.code != 200:
                outcome.missing.append((url.rsplit("/", 1)[-1], f"the proxy answered {response.code}"))
            elif url == candidate.url:
                status = (response.headers.getRawHeaders("x-pypi-cache") or ["-"])[0]
                (outcome.cached if status == "HIT" else outcome.fetched).append((candidate.filename, received))
        on_progress(0, 1)

    planned = [c for _, c in outcome.plan]
    await gatherResults(
        [limit.run(lambda item: ensureDeferred(fetch_one(item)), c) for c in planned], consumeErrors=True
    )
    return outcome
