"""
OSV malware and vulnerability advisories for the policy: the service that keeps a
snapshot of the feed (``osv.read_zip``) fresh.

Each refresh downloads the feed whole, checks that it reads, and only then moves
it into place on disk; a refresh that fails leaves the last good snapshot (and its
copy on disk) in use, so an outage of the feed never unblocks anything.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from pypicached.cache.disk import RunInThread, commit
from pypicached.cache.records import unlink
from pypicached.policy.osv import EMPTY, Advisory, AdvisoryIndex, read_zip
from pypicached.upstream.client import UpstreamClient, UpstreamError, discard_body, read_body_into

__all__ = ["EMPTY", "Advisory", "AdvisoryFeed", "AdvisoryIndex", "read_zip"]

log = Logger()

#: The public PyPI feed is tens of MB; anything near this is not an advisory feed.
MAX_FEED_BYTES = 512 * 1024 * 1024


def _adopt(downloaded: Path, path: Path) -> AdvisoryIndex:
    """A downloaded feed read, and only then made the copy on disk (durably): a bad one never replaces a good one."""
    index = read_zip(downloaded)
    with open(downloaded, "rb") as f:
        os.fsync(f.fileno())
    commit(downloaded, path)
    return index


def _read_if_present(path: Path) -> AdvisoryIndex | None:
    return read_zip(path) if path.exists() else None


def _why(error: Exception) -> str:
    """A failed refresh's reason, in one line."""
    if isinstance(error, UpstreamError):
        return error.reason
    if isinstance(error, ValueError):
        return f"the feed is unusable: {error}"
    if isinstance(error, OSError):
        return f"cannot store the feed: {error.strerror or error}"
    return f"{type(error).__name__}: {error}"


class AdvisoryFeed(Service):
    """
    Keeps ``current`` up to date: the copy on disk at start, then the feed every
    ``refresh`` seconds. A refresh that fails keeps the last good snapshot, logs
    one warning line and leaves its reason in ``last_error``.

    ``client`` should be one of the feed's own (its own ``UpstreamHealth``): the
    feed's host being down says nothing about the package index's.
    """

    def __init__(self, *, clock: IReactorTime, client: UpstreamClient, url: str, refresh: float, path: Path,
                 tmp: Path, run_in_thread: RunInThread) -> None:
        self._clock = clock
        self._client = client
        self.url = url
        self.interval = refresh
        self.path = path
        self._tmp = tmp
        self._run_in_thread = run_in_thread
        self.current: AdvisoryIndex = EMPTY
        #: When a refresh last succeeded (clock time), and why the latest attempt failed, if it did.
        self.last_refresh: float | None = None
        self.last_error: str | None = None
        self._loop: LoopingCall | None = None
        self._waiting: list[Deferred] = []

    def startService(self) -> None:
        """Load the copy on disk (in a thread), then refresh at once and every ``refresh`` seconds."""
        super().startService()
        loop = self._loop = LoopingCall(self.refresh)
        loop.clock = self._clock
        d = self._run_in_thread(_read_if_present, self.path)
        d.addCallbacks(self._loaded, self._unreadable)
        d.addCallback(lambda _: self._start(loop))

    def stopService(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        super().stopService()

    def _start(self, loop: LoopingCall) -> None:
        if self.running and loop is self._loop:  # not stopped while the disk copy was read
            loop.start(self.interval, now=True)

    def _loaded(self, index: AdvisoryIndex | None) -> None:
        if index is not None and self.current is EMPTY:
            self.current = index
            log.info("advisories: loaded {count} PyPI advisories ({version}) from {path}",
                     count=index.count, version=index.version, path=str(self.path))

    def _unreadable(self, failure: Failure) -> None:
        self.last_error = f"the copy on disk is unusable: {failure.getErrorMessage()}"
        log.warn("advisories: {path}: {error}; no advisories until a refresh succeeds",
                 path=str(self.path), error=self.last_error)

    def refresh(self) -> "Deferred[None]":
        """One refresh now (or the end of the one under way); never fails."""
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            ensureDeferred(self._refresh()).addErrback(
                lambda f: log.failure("advisories: refresh failed unexpectedly", f)
            ).addBoth(self._settled)
        return waiter

    def _settled(self, _: object) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    async def _refresh(self) -> None:
        try:
            index = await self._download()
        except Exception as e:
            self.last_error = _why(e)
            log.warn("advisories: refresh from {url} failed: {error}; still using {previous}",
                     url=self.url, error=self.last_error, previous=_described(self.current))
            return
        if index.version != self.current.version:
            log.info("advisories: {count} PyPI advisories ({version}) from {url}",
                     count=index.count, version=index.version, url=self.url)
        self.current = index
        self.last_refresh = self._clock.seconds()
        self.last_error = None

    async def _download(self) -> AdvisoryIndex:
        """The feed, streamed to a temporary file, read and put in place in a disk thread."""
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="advisories-")
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                response = await self._client.get(self.url, timeout=self._client.file_timeout)
                if response.code != 200:
                    discard_body(self._client, response)
                    phrase = response.phrase.decode("latin-1", "replace")
                    raise UpstreamError(f"the feed answered {response.code} {phrase}")
                await read_body_into(self._client, response, out, MAX_FEED_BYTES)
            return await self._run_in_thread(_adopt, Path(name), self.path)
        finally:
            unlink(Path(name))


def _described(index: AdvisoryIndex) -> str:
    return f"the previous {index.count} advisories ({index.version})" if index.version else "no advisories"
