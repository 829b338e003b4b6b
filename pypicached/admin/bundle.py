"""
``pypicached-admin export``: a cache's files and pages as one bundle to carry to
an air-gapped site. A plain tar (zstd-compressed when ``zstandard`` is
importable, else gzip), the manifest first (every member's sha256 and size, and
what the bundle was made from), members at their paths below the cache root.
Streamed both ways, so memory does not grow with the bundle, and written to a
temporary file renamed into place, so a bundle is whole or absent.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, BinaryIO

import attrs

from pypicached.cache.layout import classify

MANIFEST = "manifest.json"
FORMAT = "pypicached-bundle/1"
CHUNK = 1 << 20
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class BundleError(Exception):
    """The bundle cannot be written or read; the message says why."""


def zstandard() -> Any:
    """The ``zstandard`` module, or None: it is optional (gzip otherwise)."""
    try:
        import zstandard as module  # optional at run time (pyproject: missing imports ignored)
    except ImportError:
        return None
    return module


@attrs.frozen
class Entry:
    name: str
    path: Path
    sha256: str
    size: int


def hash_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def entries(root: Path, paths: Iterable[Path]) -> list[Entry]:
    """Each path below ``root`` a bundle may carry, hashed; others are left out."""
    found: dict[str, Entry] = {}
    for path in paths:
        name = path.relative_to(root).as_posix()
        if name in found or classify(name) is None:
            continue
        try:
            found[name] = Entry(name, path, *hash_file(path))
        except FileNotFoundError:
            continue  # evicted meanwhile
    return list(found.values())


@contextmanager
def _compressed(out: BinaryIO) -> Iterator[tuple[IO[bytes], str]]:
    """A writer compressing into ``out``: zstd if it can, else gzip."""
    module = zstandard()
    if module is not None:
        with module.ZstdCompressor(level=3).stream_writer(out, closefd=False) as writer:
            yield writer, "zstd"
    else:
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as packed:
            yield packed, "gzip"  # type: ignore[misc]  # a GzipFile is a binary stream


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, 0, tarfile.REGTYPE
    return info


def write(
    out: Path, members: list[Entry], made_from: dict[str, Any], on_progress: Callable[[int], None] = lambda n: None
) -> str:
    """Write the bundle to ``out`` atomically; the compression used."""
    manifest = {
        "format": FORMAT,
        "created": time.time(),
        "made_from": made_from,
        "members": [{"name": m.name, "sha256": m.sha256, "size": m.size} for m in members],
    }
    body = json.dumps(manifest, indent=0).encode()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        with os.fdopen(fd, "wb") as raw:
            with _compressed(raw) as (stream, compression):
                with tarfile.open(fileobj=stream, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    tar.addfile(_info(MANIFEST, len(body)), io.BytesIO(body))
                    for member in members:
                        _add(tar, member)
                        on_progress(member.size)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, out)
    except BaseException:
        os.unlink(temporary)
        raise
    return compression


def _add(tar: tarfile.TarFile, member: Entry) -> None:
    """One member, checked again as it goes in: a file changed since it was hashed spoils the bundle."""
    digest = hashlib.sha256()

    class Hashing(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            n = f.readinto(buffer)
            digest.update(memoryview(buffer)[:n])
            return n

    try:
        with open(member.path, "rb") as f:
            tar.addfile(_info(member.name, member.size), io.BufferedReader(Hashing(), CHUNK))
    except (OSError, tarfile.TarError) as e:
        raise BundleError(f"{member.name} changed while the bundle was written ({e}); export again") from None
    if digest.hexdigest() != member.sha256:
        raise BundleError(f"{member.name} changed while the bundle was written; export again")
