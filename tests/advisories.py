"""OSV advisories and the zip feed that carries them, built the way the tests need them.

Why apart: the advisory feed's tests and the policy's tests build the same documents.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

__all__ = ["advisory", "zip_of"]


def advisory(
    id_: str,
    name: str,
    *,
    versions: tuple[str, ...] = (),
    events: tuple[dict, ...] = (),
    ecosystem: str = "PyPI",
    **fields: Any,
) -> dict:
    """One OSV document naming ``name`` in ``ecosystem``, by listed ``versions`` and/or range ``events``."""
    affected: dict[str, Any] = {"package": {"ecosystem": ecosystem, "name": name}, "versions": list(versions)}
    if events:
        affected["ranges"] = [{"type": "ECOSYSTEM", "events": list(events)}]
    return {"id": id_, "summary": f"summary of {id_}", "aliases": [], "affected": [affected], **fields}


def zip_of(*docs: dict, extra: dict[str, bytes] | None = None) -> bytes:
    """A feed as the OSV bucket serves it: one ``<id>.json`` per document, plus any ``extra`` members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for doc in docs:
            archive.writestr(f"{doc['id']}.json", json.dumps(doc))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()
