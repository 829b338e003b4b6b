"""
The value types of a page as clients get it: a ``Form`` (JSON or HTML, link
depth, gzip or not), a ``Rendering`` of one page version in one form, and the
ETag it is sent under.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import attrs

#: Part of every page ETag: a new rendering code means new validators.
RENDER_VERSION = 3
#: Renderings this small are also kept in memory with their page (at most a few per page,
#: for the 256 pages kept in memory): a warm request then costs no file system call.
KEEP_IN_MEMORY = 16 * 1024


@attrs.frozen(cache_hash=True)  # a key of every page's renderings, looked up on every request
class Form:
    """One way a page version is sent: JSON or HTML, how deep its relative links start, gzip or not."""

    json: bool
    depth: int
    gzip: bool = False

    @property
    def filename(self) -> str:
        return f"{'json' if self.json else 'html'}-{self.depth}" + (".gz" if self.gzip else "")

    def plain(self) -> Form:
        return form(self.json, self.depth, False)


@functools.lru_cache(maxsize=64)
def form(json: bool, depth: int, gzip: bool = False) -> Form:
    """The one ``Form`` value for these (its hash worked out once)."""
    return Form(json, depth, gzip)


@attrs.frozen
class Rendering:
    """A rendered body on disk, with the validator it is sent under."""

    #: None for a rendering the disk would not take (its bytes are in ``body``).
    path: Path | None
    size: int
    etag: bytes
    gzipped: bool
    #: The bytes too, when there are few: sent without opening a file (most project pages).
    body: bytes | None = attrs.field(default=None, repr=False)

    @classmethod
    def of(cls, path: Path, etag: bytes, gzipped: bool) -> Rendering:
        """(In a disk thread.) The rendering in ``path``, its bytes kept if it is small."""
        size = path.stat().st_size
        return cls(path, size, etag, gzipped, path.read_bytes() if size <= KEEP_IN_MEMORY else None)


def etag_for(version: str, form: Form) -> bytes:
    """A strong validator for one form of one page version (HTML for either HTML type)."""
    key = f"{RENDER_VERSION}:{version}:{form.plain().filename}".encode()
    tag = hashlib.blake2b(key, digest_size=12).hexdigest()
    return f'"{tag}-gz"'.encode() if form.gzip else f'"{tag}"'.encode()
