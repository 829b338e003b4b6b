"""Durable writes: nothing appears under a final name until it is whole and on disk."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

#: Runs a blocking callable off the event loop and reports back as a Deferred.
RunInThread = Callable[..., Deferred]


def thread_runner(reactor: IReactorThreads, pool: ThreadPool | None = None) -> RunInThread:
    """A thread pool (the reactor's by default) as a ``RunInThread``."""
    return lambda f, *a, **kw: deferToThreadPool(reactor, pool or reactor.getThreadPool(), f, *a, **kw)


def disk_pool() -> ThreadPool:
    """
    Threads for disk work only: fsyncs and housekeeping passes must not queue
    behind, or ahead of, the name lookups that share the reactor's own pool.
    """
    return ThreadPool(minthreads=1, maxthreads=4, name="pypicached-disk")


class ThreadWork:
    """
    Runs blocking disk work off the event loop and keeps count of what is
    unfinished, so that stopping the daemon can wait for every write to land.
    """

    def __init__(self, run: RunInThread) -> None:
        self._run = run
        self._pending: set[Deferred] = set()

    def __call__(self, f: Callable, *args: object, **kwargs: object) -> Deferred:
        d = self._run(f, *args, **kwargs)
        self._pending.add(d)

        def settled(result: object) -> object:
            self._pending.discard(d)
            return result

        return d.addBoth(settled)

    @property
    def busy(self) -> bool:
        """Whether any work started is unfinished."""
        return bool(self._pending)

    def idle(self) -> Deferred:
        """Fires once all work started so far has finished, however it ended."""
        from twisted.internet.defer import DeferredList

        def release(result: object, mine: Deferred[None]) -> object:
            mine.callback(None)
            return result

        waiting = []
        for d in list(self._pending):
            mine: Deferred[None] = Deferred()
            d.addBoth(release, mine)
            waiting.append(mine)
        return DeferredList(waiting)


def run_inline(f: Callable, *args: object, **kwargs: object) -> Deferred:
    """A ``RunInThread`` that runs in the caller's thread (tests, tools)."""
    try:
        return succeed(f(*args, **kwargs))
    except BaseException:
        from twisted.internet.defer import fail

        return fail()


def write_all(out: BinaryIO, data: bytes) -> None:
    """An unbuffered write may take only part of the data (a filling disk): write the rest."""
    view = memoryview(data)
    while view:
        n = out.write(view)
        if not n:
            raise OSError(errno.ENOSPC, "short write")
        view = view[n:]


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename a complete, fsynced temporary file to its final name, making its directory if need be."""
    for attempt in (1, 2):
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, final)
            return
        except FileNotFoundError:  # housekeeping removed the empty directory meanwhile
            if attempt == 2 or not tmp.exists():
                raise


def commit(tmp: Path, final: Path) -> None:
    """Move a complete, fsynced temporary file into place, durably."""
    move_into_place(tmp, final)
    fsync_dir(final.parent)


@contextmanager
def durable_file(final: Path, tmp_dir: Path) -> Iterator[BinaryIO]:
    """
    A new file to write that appears as ``final`` only once the block has ended
    without error, whole and on disk; readers see the old file or the new one.
    """
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="w-")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        commit(Path(name), final)
    except BaseException:
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
        raise


def atomic_write(final: Path, data: bytes, tmp_dir: Path) -> None:
    """Write ``data`` to ``final`` so that readers see the old or the new file, whole."""
    with durable_file(final, tmp_dir) as f:
        f.write(data)
