"""
The daemon as a tree of services. Twisted starts the children in order and stops
them in reverse: the cache's own start (the disk threads, leftovers swept before
any listener binds) comes first and its stop (pending writes landed, connections
closed) last; the listeners, added last by ``make_service``, stop first.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from twisted.web.client import HTTPConnectionPool

from pypicached.base.disk import ThreadWork
from pypicached.config import Settings
from pypicached.http.tls import ReloadableContext

log = Logger()

#: How often the savings figures are saved.
SAVE_EVERY = 60.0


class Part(Service):
    """A part of the daemon that starts and stops with it (its own ``start`` and ``stop``), as a child service."""

    def __init__(
        self, name: str, start: Callable[[], None] | None = None, stop: Callable[[], Any] | None = None
    ) -> None:
        self.name = name
        self._start = start
        self._stop = stop

    def startService(self) -> None:
        super().startService()
        if self._start is not None:
            self._start()

    def stopService(self) -> Deferred[Any] | None:
        super().stopService()
        return maybeDeferred(self._stop) if self._stop is not None else None


class StatsSaver(TimerService):
    """Saves the savings figures every ``SAVE_EVERY`` seconds, and once more at stop, after any save under way."""

    name = "stats saver"

    def __init__(self, save: Callable[[], Deferred[None]], clock: IReactorTime) -> None:
        super().__init__(SAVE_EVERY, save)
        self.clock = clock
        self._save = save

    def stopService(self) -> Deferred[Any]:
        stopped = super().stopService()
        return gatherResults([stopped, self._save()])


class CacheService(Service):
    """
    The cache's own start and stop: the disk threads, leftovers swept before the
    listeners bind, the start-up lines, certificates reloaded on SIGHUP; at stop,
    every pending disk write landed, then upstream connections and threads closed.
    """

    name = "cache"

    def __init__(
        self,
        *,
        reactor: Any,
        settings: Settings,
        sweep: Callable[[], int],
        disk_work: ThreadWork,
        disk_pool: ThreadPool | None,
        http_pool: HTTPConnectionPool | None,
    ) -> None:
        self._reactor = reactor
        self._settings = settings
        self._sweep = sweep
        self._disk_work = disk_work
        self._disk_pool = disk_pool
        self._http_pool = http_pool
        self.tls_contexts: list[ReloadableContext] = []
        #: Anything else SIGHUP re-reads (the tokens file).
        self.reloaders: list[Callable[[], None]] = []
        self._previous_sighup: Any = None

    def privilegedStartService(self) -> None:
        """Before the listeners bind (they follow this service), so no request meets leftovers."""
        super().privilegedStartService()
        if self._disk_pool is not None:
            self._disk_pool.start()
        removed = self._sweep()
        if removed:
            log.info("Removed {n} unfinished downloads left by the last run", n=removed)

    def startService(self) -> None:
        super().startService()
        if self.tls_contexts or self.reloaders:
            self._previous_sighup = signal.signal(signal.SIGHUP, lambda *_: self._reactor.callFromThread(self.reload))
        settings = self._settings
        log.info(
            "pypicached serving {upstream} from cache {cache} on {listen}; index pages fresh for {ttl:g}s",
            upstream=", ".join(f"{index.name}={index.url}" for index in settings.indexes),
            cache=str(Path(settings.cache_dir).resolve()),
            listen=", ".join(settings.listen),
            ttl=settings.index_ttl,
        )
        log.info("Effective configuration: {config}", config=json.dumps(settings.effective()))

    def reload_tls(self) -> None:
        for context in self.tls_contexts:
            context.reload()

    def reload(self) -> None:
        """What SIGHUP does: certificates and the tokens file read anew."""
        self.reload_tls()
        for reload in self.reloaders:
            reload()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        return ensureDeferred(self._closed())

    async def _closed(self) -> None:
        while self._disk_work.busy:  # a write may start as another lands (the last save after one under way)
            await self._disk_work.idle()
        if self._http_pool is not None:
            await self._http_pool.closeCachedConnections()
        if self._disk_pool is not None and self._disk_pool.started:
            self._disk_pool.stop()


def tree_of(children: Sequence[Service]) -> MultiService:
    """A MultiService of ``children``, started in this order and stopped in reverse."""
    top = MultiService()
    for child in children:
        child.setServiceParent(top)
    return top
