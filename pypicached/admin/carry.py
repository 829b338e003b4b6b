"""
The ``export`` and ``import`` commands: what they print and how they exit (2 when
a bundle is refused, with the cache as it was).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from pypicached.admin import bundle, exporting, import_
from pypicached.admin.locks import LockError
from pypicached.admin.progress import Progress
from pypicached.ops.summary import human_bytes


class CarryError(Exception):
    """The command cannot do its work; printed without a traceback, exit 2."""


def export(root: Path, args: argparse.Namespace, out: TextIO) -> int:
    if not args.files and not args.all:
        raise CarryError("export what? give lock or requirements files, or --all for the whole cache")
    try:
        members = bundle.entries(root, exporting.chosen(root, list(args.files), args.all))
    except (OSError, UnicodeDecodeError, LockError) as e:
        raise CarryError(f"cannot read what to export: {e}") from None
    made_from = {"all": bool(args.all), "files": [str(p) for p in args.files], "cache_dir": str(root)}
    total = sum(m.size for m in members)
    progress = Progress(sys.stderr, "export", total, len(members))
    try:
        compression = bundle.write(args.out, members, made_from, lambda n: progress.advance(n, 1))
    except (OSError, bundle.BundleError) as e:
        raise CarryError(f"cannot write {args.out}: {e}") from None
    progress.finish()
    files = [m for m in members if m.name.startswith("files/")]
    out.write(
        f"Wrote {args.out} ({compression}): {len(files)} files ({human_bytes(sum(m.size for m in files))}) "
        f"and {len(members) - len(files)} page records and renderings.\n"
    )
    return 0


def import_bundle(root: Path, max_size: int, path: Path, out: TextIO) -> int:
    try:
        report = import_.import_bundle(path, root, max_size)
    except import_.Refused as e:
        out.write(f"Refused {path}: {e}. The cache is as it was.\n")
        return 2
    except OSError as e:
        raise CarryError(f"cannot read {path}: {e.strerror or e}") from None
    out.write(
        f"Imported {path}: {report.files} new files ({human_bytes(report.bytes)}), {report.pages} pages; "
        f"{report.already} files were already cached, {report.kept_newer} cached pages were as new or newer.\n"
    )
    return 0
