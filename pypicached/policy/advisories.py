"""
OSV malware and vulnerability advisories for the policy: the service that keeps a
snapshot of the feed (``osv.read_zip``) fresh.

Each refresh downloads the feed whole, checks that it reads, and only then moves
it into place on disk; a refresh that fails leaves the last good snapshot (and its
copy on disk) in use, so an outage of the feed never unblocks anything.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.http_headers import Headers

from pypicached.base.disk import RunInThread, atomic_write, commit
from pypicached.cache.records import unlink
from pypicached.policy.osv import EMPTY, Advisory, AdvisoryIndex, read_zip
from pypicached.upstream.body import discard_body, read_body_into
from pypicached.upstream.client import UpstreamClient
from pypicached.upstream.errors import UpstreamError

__all__ = ["EMPTY", "Advisory", "AdvisoryFeed", "AdvisoryIndex", "read_zip"]

log = Logger()

#: The public PyPI feed is tens of MB; anything near this is not an advisory feed.
MAX_FEED_BYTES = 512 * 1024 * 1024


def _adopt(downloaded: Path, path: Path, validators: dict[str, str]) -> AdvisoryIndex:
    """
    A downloaded feed read, and only then made the copy on disk (durably), its
    validators beside it: a bad one never replaces a good one.
    """
    index = read_zip(downloaded)
    with open(downloaded, "rb") as f:
        os.fsync(f.fileno())
    commit(downloaded, path)
    atomic_write(_validators_path(path), json.dumps(validators).encode(), downloaded.parent)
    return index


def _read_if_present(path: Path) -> tuple[AdvisoryIndex, dict[str, str]] | None:
    """The copy on disk and the validators it came with (none if they cannot be read: asked for whole)."""
    if not path.exists():
        return None
    index = read_zip(path)
    try:
        validators = json.loads(_validators_path(path).read_bytes())
    except (OSError, ValueError):
        validators = {}
    ok = isinstance(validators, dict) and all(isinstance(v, str) for v in validators.values())
    return index, {k: v for k, v in validators.items() if k in _ASKED_WITH} if ok else {}


def _validators_path(path: Path) -> Path:
    return path.with_name(path.name + ".validators")


#: The response header each request header repeats.
_ASKED_WITH = {"If-None-Match": b"etag", "If-Modified-Since": b"last-modified"}


def _validators_of(headers: Headers) -> dict[str, str]:
    """The conditional request headers that ask again for the feed these response headers came with."""
    found = {}
    for asked, answered in _ASKED_WITH.items():
        values = headers.getRawHeaders(answered)
        if values:
            found[asked] = values[0].decode("latin-1")
    return found


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

    def __init__(
        self,
        *,
        clock: IReactorTime,
        client: UpstreamClient,
        url: str,
        refresh: float,
        path: Path,
        tmp: Path,
        run_in_thread: RunInThread,
    ) -> None:
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
        #: The conditional headers that ask for the feed only if it changed since ``current`` came.
        self._validators: dict[str, str] = {}
        self._stopped = False
        self._running: Deferred[None] | None = None
        self._waiting: list[Deferred] = []

    def startService(self) -> None:
        """
        Load the copy on disk, then refresh at once and every ``refresh`` seconds. The
        copy is read before this returns (a second or two for the public feed), so
        that no request is answered before the advisories it holds are in force.
        """
        super().startService()
        self._stopped = False
        try:
            self._loaded(_read_if_present(self.path))
        except Exception as e:
            self._unreadable(e)
        loop = self._loop = LoopingCall(self.refresh)
        loop.clock = self._clock
        loop.start(self.interval, now=True)

    def stopService(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        self._stopped = True
        if self._running is not None:
            self._running.cancel()  # a download under way: its connection closed, its temporary file removed
        self._client.health.stop()
        super().stopService()

    def _loaded(self, found: tuple[AdvisoryIndex, dict[str, str]] | None) -> None:
        if found is not None and self.current is EMPTY:
            index, self._validators = found
            self.current = index
            log.info(
                "advisories: loaded {count} PyPI advisories ({version}) from {path}",
                count=index.count,
                version=index.version,
                path=str(self.path),
            )

    def _unreadable(self, error: Exception) -> None:
        self.last_error = f"the copy on disk is unusable: {error}"
        log.warn(
            "advisories: {path}: {error}; no advisories until a refresh succeeds",
            path=str(self.path),
            error=self.last_error,
        )

    def refresh(self) -> Deferred[None]:
        """One refresh now (or the end of the one under way); never fails."""
        if self._stopped:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            self._running = ensureDeferred(self._refresh())
            self._running.addErrback(
                lambda f: None if self._stopped else log.failure("advisories: refresh failed unexpectedly", f)
            ).addBoth(self._settled)
        return waiter

    def _settled(self, _: object) -> None:
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    async def _refresh(self) -> None:
        try:
            index = await self._download()
            if self._stopped:
                return  # stopped meanwhile: nothing more to do, nothing to log
        except Exception as e:
            if self._stopped:
                return  # cancelled by the stop: not a failure of the feed
            self.last_error = _why(e)
            log.warn(
                "advisories: refresh from {url} failed: {error}; still using {previous}",
                url=self.url,
                error=self.last_error,
                previous=_described(self.current),
            )
            return
        if index.version != self.current.version:
            log.info(
                "advisories: {count} PyPI advisories ({version}) from {url}",
                count=index.count,
                version=index.version,
                url=self.url,
            )
        self.current = index
        self.last_refresh = self._clock.seconds()
        self.last_error = None

    async def _download(self) -> AdvisoryIndex:
        """
        The feed, streamed to a temporary file, read and put in place in a disk thread;
        asked conditionally, so an unchanged feed costs one small answer (304).
        """
        fd, name = tempfile.mkstemp(dir=self._tmp, prefix="advisories-")
        try:
            with os.fdopen(fd, "wb", buffering=0) as out:
                headers = self._validators if self.current is not EMPTY else {}
                response = await self._client.get(self.url, headers, timeout=self._client.file_timeout)
                if response.code == 304 and headers:
                    discard_body(self._client, response)
                    return self.current
                if response.code != 200:
                    discard_body(self._client, response)
                    phrase = response.phrase.decode("latin-1", "replace")
                    raise UpstreamError(f"the feed answered {response.code} {phrase}")
                await read_body_into(self._client, response, out, MAX_FEED_BYTES)
            if self._stopped:
                return self.current  # stopped meanwhile: the disk threads may be gone
            validators = _validators_of(response.headers)
            index = await self._run_in_thread(_adopt, Path(name), self.path, validators)
            self._validators = validators
            return index
        finally:
            unlink(Path(name))


def _described(index: AdvisoryIndex) -> str:
    return f"the previous {index.count} advisories ({index.version})" if index.version else "no advisories"
