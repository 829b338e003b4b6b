"""
What the policy does to one project and why, for ``pypicached-admin policy
check``: the project's verdict by name, then each version's files with the
rule that holds each back, judged as a client's request would be now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from packaging.version import Version

from pypicached.base.names import parse_version, version_of
from pypicached.cache.fetch import NotFound
from pypicached.cache.pagekind import PROJECT, PageKey
from pypicached.policy.judge import Verdict, iso_z, upload_time
from pypicached.policy.view import SHAPES, view

if TYPE_CHECKING:
    from pypicached.cache.router import Router
    from pypicached.policy.gate import Gate


def _verdict(verdict: Verdict | None) -> dict[str, Any] | None:
    return None if verdict is None else {"rule": verdict.rule, "reason": verdict.reason, "hidden": verdict.hides}


async def explain(gate: Gate, indexes: Router, project: str, version: str | None, now: float) -> dict[str, Any]:
    """The explanation as JSON: ``verdict`` for the project, ``versions`` each with its files."""
    route = indexes.route(project)
    answer: dict[str, Any] = {
        "project": project,
        "version": version,
        "index": route[0].name if route else None,
        "verdict": None,
        "versions": [],
    }
    refusal = gate.refusal(None, project)
    if refusal is not None:
        answer["verdict"] = _verdict(refusal)
        return answer
    try:
        result, upstream = await indexes.page(PageKey(PROJECT, project))
    except NotFound:
        answer["error"] = "no index has this project"
        return answer
    assert upstream is not None, "a project page always has its index"
    answer["index"] = upstream.name
    made = view(gate.judge(upstream.name), result.page, now, "")
    if made.refusal is not None:
        answer["verdict"] = _verdict(made.refusal)
        return answer
    answer["versions"] = _versions(project, result.page.page, {**made.flagged, **made.hidden}, version)
    return answer


def _versions(
    project: str, page: dict[str, Any], verdicts: dict[str, Verdict], wanted: str | None
) -> list[dict[str, Any]]:
    """Each version's files (or ``wanted``'s alone), newest first, with what the policy does to each."""
    shape = SHAPES["project"]
    releases: dict[str, list[dict[str, Any]]] = {}
    for entry in shape.entries(page):
        filename = str(entry.get("filename"))
        parsed = version_of(project, filename)
        if wanted is not None and (parsed is None or str(parsed) != _canonical(wanted)):
            continue
        uploaded = upload_time(shape.uploaded(entry))
        releases.setdefault(str(parsed) if parsed is not None else "?", []).append(
            {
                "filename": filename,
                "uploaded": None if uploaded is None else iso_z(uploaded),
                "verdict": _verdict(verdicts.get(filename)),
            }
        )
    ordered = sorted(releases.items(), key=lambda item: _order(project, item[1][0]["filename"]), reverse=True)
    return [
        {"version": name, "shown": sum(not (f["verdict"] or {}).get("hidden") for f in files), "files": files}
        for name, files in ordered
    ]


def _canonical(text: str) -> str:
    parsed = parse_version(text)
    return text if parsed is None else str(parsed)


def _order(project: str, filename: str) -> Version:
    return version_of(project, filename) or Version("0")


def as_text(answer: dict[str, Any]) -> str:
    """The explanation for a terminal."""
    head = f"{answer['project']}" + (f"=={answer['version']}" if answer.get("version") else "")
    lines = [f"{head} (index {answer.get('index') or '-'})"]
    if answer.get("verdict"):
        lines.append(f"  DENIED: {answer['verdict']['reason']}")
        return "\n".join(lines) + "\n"
    if answer.get("error"):
        lines.append(f"  {answer['error']}")
    if not answer["versions"] and not answer.get("error"):
        lines.append("  no such version on the index" if answer.get("version") else "  the index lists no files")
    for release in answer["versions"]:
        files = release["files"]
        state = (
            "served" if release["shown"] == len(files) else "held back" if not release["shown"] else "partly held back"
        )
        lines.append(f"  {release['version']}: {state} ({release['shown']} of {len(files)} files shown)")
        for f in files:
            if f["verdict"]:
                mark = "hidden " if f["verdict"]["hidden"] else "flagged"
                lines.append(f"    {mark} {f['verdict']['reason']}")
    return "\n".join(lines) + "\n"
