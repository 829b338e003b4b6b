"""
The pages of bench/cold.py: big project pages shaped like the public index's
(absolute links to another host, sha256 fragments, ``data-requires-python``,
PEP 658 metadata under both spellings, yanked files with and without a reason,
local versions spelled ``%2B``; in JSON also ``size`` and ``upload-time``), made
to a chosen size in either form, and the one real wheel pip downloads from each.
"""

from __future__ import annotations

import datetime
import hashlib
import html
import json
from typing import Any

MB = 1_000_000
HTML_TYPE = "text/html"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
FILES_HOST = "https://files.example.lan"
_EPOCH = datetime.datetime(2019, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def entry(project: str, i: int) -> dict[str, Any]:
    """File ``i`` of ``project``: a wheel or an sdist, now and then yanked, with every field the index gives."""
    version = f"1.{i // 400}.{i % 400 // 4}" + ("+cpu" if i % 4 >= 2 else "")
    wheel = i % 2 == 0
    filename = f"{project}-{version}-py3-none-any.whl" if wheel else f"{project}-{version}.tar.gz"
    blake = hashlib.blake2b(filename.encode(), digest_size=32).hexdigest()
    metadata = {"sha256": hashlib.sha256(b"metadata " + filename.encode()).hexdigest()} if wheel else False
    yanked: bool | str = False
    if i % 97 == 0:
        yanked = "broken build, use the next one" if i % 2 else True
    quoted = filename.replace("+", "%2B")
    return {
        "core-metadata": metadata,
        "data-dist-info-metadata": metadata,
        "filename": filename,
        "hashes": {"sha256": hashlib.sha256(filename.encode()).hexdigest()},
        "requires-python": ">=3.8",
        "size": 130_000 + 37 * i,
        "upload-time": (_EPOCH + datetime.timedelta(minutes=37 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "url": f"{FILES_HOST}/packages/{blake[:2]}/{blake[2:4]}/{blake[4:]}/{quoted}",
        "yanked": yanked,
    }


def anchor(e: dict[str, Any]) -> str:
    """One file as the index's HTML spells it."""
    attributes = f' data-requires-python="{html.escape(e["requires-python"])}"'
    if e["core-metadata"]:
        digest = f"sha256={e['core-metadata']['sha256']}"
        attributes += f' data-dist-info-metadata="{digest}" data-core-metadata="{digest}"'
    if e["yanked"] is not False:
        attributes += f' data-yanked="{html.escape(e["yanked"] if isinstance(e["yanked"], str) else "")}"'
    href = f"{e['url']}#sha256={e['hashes']['sha256']}"
    return f'    <a href="{html.escape(href)}"{attributes}>{html.escape(e["filename"])}</a><br />\n'


def render(project: str, entries: list[dict[str, Any]], as_json: bool) -> bytes:
    """The page in one form."""
    if as_json:
        versions = sorted({e["filename"][len(project) + 1 :].split("-")[0].removesuffix(".tar.gz") for e in entries})
        document = {
            "files": entries,
            "meta": {"_last-serial": 30_000_000, "api-version": "1.1"},
            "name": project,
            "versions": versions,
        }
        return json.dumps(document, separators=(",", ":")).encode()
    head = (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.1">\n'
        f"    <title>Links for {project}</title>\n  </head>\n  <body>\n    <h1>Links for {project}</h1>\n"
    )
    return (head + "".join(map(anchor, entries)) + "  </body>\n</html>\n<!--SERIAL 30000000-->").encode()


def page_of_size(project: str, size: float, as_json: bool, extra: list[dict[str, Any]] = ()) -> bytes:  # type: ignore[assignment]
    """``project``'s page of about ``size`` bytes in one form, its files plus ``extra`` (the real ones) last."""
    sample = len(render(project, [entry(project, i) for i in range(200)], as_json)) / 200
    count = max(1, int(size / sample))
    return render(project, [entry(project, i) for i in range(count)] + list(extra), as_json)


def real_entry(filename: str, data: bytes, url: str) -> dict[str, Any]:
    """The entry of a real file (the newest release, which pip picks): no metadata advertised, never yanked."""
    return {
        "core-metadata": False,
        "data-dist-info-metadata": False,
        "filename": filename,
        "hashes": {"sha256": hashlib.sha256(data).hexdigest()},
        "requires-python": ">=3.8",
        "size": len(data),
        "upload-time": "2024-01-01T00:00:00.000000Z",
        "url": url,
        "yanked": False,
    }
