"""
Index pages as clients get them: each page version rendered once per form
(HTML or JSON, link depth, plain or gzip) into a file beside its record, and
sent from that file like a package file, with backpressure. A slow client then
costs one open file and one chunk, never its own copy of a 50 MB page, and a
page rendered once serves every later client without any CPU.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from twisted.internet.defer import Deferred, ensureDeferred, succeed

from pypicached.base.disk import RunInThread, atomic_write, durable_file
from pypicached.base.inflight import Inflight
from pypicached.cache.forms import Form, Rendering, etag_for
from pypicached.cache.records import StoredPage

#: Smaller bodies are not worth compressing.
GZIP_MIN = 1024
CHUNK = 1 << 20


def ensure_plain(directory: Path, version: str, form: Form, render: Callable[[], bytes] | None, tmp: Path) -> Rendering:
    """
    (In a disk thread.) The uncompressed file for ``form`` under ``directory``, written
    now if it is not there yet. Without ``render`` (the project list, rendered when
    fetched) a missing file raises ``FileNotFoundError``.
    """
    path = directory / form.filename
    if not path.exists():
        if render is None:
            raise FileNotFoundError(path)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(path, render(), tmp)
    return Rendering.of(path, etag_for(version, form), False)


def ensure_packed(plain: Rendering, version: str, form: Form, tmp: Path) -> Rendering:
    """(In a disk thread.) The gzip file beside ``plain``, or ``plain`` itself if it is too small to be worth it."""
    if plain.size < GZIP_MIN:
        return plain
    source = cast(Path, plain.path)  # the caller packs only a rendering on disk
    path = source.with_name(form.filename)
    if not path.exists():
        gzip_file(source, path, tmp)
    return Rendering.of(path, etag_for(version, form), True)


def in_memory(render: Callable[[], bytes], version: str, form: Form) -> Rendering:
    """(In a disk thread.) A rendering the disk would not take: the bytes alone, for this request."""
    body = render()
    return Rendering(None, len(body), etag_for(version, form), False, body)


def packed_in_memory(plain: Rendering, version: str, form: Form) -> Rendering:
    body = plain.body if plain.body is not None else cast(Path, plain.path).read_bytes()  # no body: on disk
    if len(body) < GZIP_MIN:
        return plain
    packed = gzip.compress(body, 6, mtime=0)
    return Rendering(None, len(packed), etag_for(version, form), True, packed)


def gzip_file(source: Path, final: Path, tmp: Path) -> None:
    """Compress ``source`` into ``final`` in chunks, so a big page never sits in memory."""
    with durable_file(final, tmp) as out, open(source, "rb") as src:
        with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as packed:
            shutil.copyfileobj(src, packed, CHUNK)


def prune_versions(directory: Path, keep: str) -> None:
    """
    Remove the renderings of every version but ``keep`` and the policy's views of
    it (``keep.<tag>``); readers keep their open files.
    """
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.name.partition(".")[0] != keep and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


class Renderer:
    """Makes each form of each page version once, however many clients ask for it at the same time."""

    def __init__(self, run_in_thread: RunInThread, tmp: Path) -> None:
        self._run_in_thread = run_in_thread
        self._tmp = tmp
        self._work: Inflight[tuple[Any, str, Form], Rendering] = Inflight()

    def rendering(self, page: StoredPage, form: Form, directory: Path) -> Deferred[Rendering]:
        """``page`` in ``form``, from ``directory`` (its version's), rendered there first if need be."""
        done = page.renderings.get(form)
        if done is not None:
            return succeed(done)

        def keep(rendering: Rendering) -> Rendering:
            if rendering.path is not None:  # one the disk refused is made again next time, maybe onto disk
                page.renderings[form] = rendering
            return rendering

        work = (page.key, page.version, form)
        return self._work.run(work, lambda: ensureDeferred(self._render(page, form, directory))).addCallback(keep)

    async def _render(self, page: StoredPage, form: Form, directory: Path) -> Rendering:
        if form.gzip:  # from the plain rendering, made once whichever form asks first
            plain = await self.rendering(page, form.plain(), directory)
            try:
                if plain.path is None:
                    raise OSError("the plain rendering is not on disk either")
                return await self._run_in_thread(ensure_packed, plain, page.version, form, self._tmp)
            except OSError:
                return await self._run_in_thread(packed_in_memory, plain, page.version, form)
        key = page.key
        render = None if key.kind.render is None else functools.partial(key.kind.render, page.page, key.project, form)
        try:
            return await self._run_in_thread(ensure_plain, directory, page.version, form, render, self._tmp)
        except FileNotFoundError:
            raise
        except OSError:  # the disk refuses (full, read-only): this client still gets the page, from memory
            if render is None:
                raise
            return await self._run_in_thread(in_memory, render, page.version, form)
