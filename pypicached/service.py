"""The running daemon: listeners, the upstream client and the caches, as one service."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IReactorTime, IStreamServerEndpoint
from twisted.logger import Logger

from pypicached.config import Settings
from pypicached.disk import RunInThread, ThreadWork, disk_pool, thread_runner
from pypicached.files import FileCache
from pypicached.housekeeping import Budget, Housekeeper
from pypicached.pages import PageCache
from pypicached.tls import ReloadableContext, TLSFiles, tls_endpoint
from pypicached.upstream import UpstreamClient, UpstreamIndex
from pypicached.web import ProxyResource, ProxySite

log = Logger()


class Proxy:
    """Everything that answers requests, wired together; no listeners yet."""

    def __init__(
        self,
        settings: Settings,
        reactor,  # type: ignore[no-untyped-def]
        *,
        clock: IReactorTime | None = None,
        run_in_thread: RunInThread | None = None,
    ) -> None:
        clock = clock or reactor
        root = Path(settings.cache_dir)
        self._pool = None if run_in_thread else disk_pool()
        run = self.disk_work = ThreadWork(run_in_thread or thread_runner(reactor, self._pool))
        self.settings = settings
        self.client = UpstreamClient(
            reactor,
            clock=clock,
            connect_timeout=settings.connect_timeout,
            response_timeout=settings.response_timeout,
            idle_timeout=settings.idle_timeout,
        )
        self.index = UpstreamIndex(settings.upstream)
        self.pages = PageCache(
            clock=clock,
            index=self.index,
            client=self.client,
            root=root,
            ttl=settings.index_ttl,
            run_in_thread=run,
            offline=settings.offline,
            stale_if_error=settings.stale_if_error,
            stale_while_revalidate=settings.stale_while_revalidate,
        )
        self.files = FileCache(
            root=root,
            client=self.client,
            clock=clock,
            run_in_thread=run,
            find_link=self.pages.find_link,
            offline=settings.offline,
        )
        self.housekeeper = Housekeeper(
            root=root / "files",
            budget=Budget(settings.max_size, settings.min_free, settings.inactive),
            clock=clock,
            run_in_thread=run,
        )
        self.files.on_commit = self.housekeeper.committed
        self.resource = ProxyResource(
            pages=self.pages,
            files=self.files,
            clock=clock,
            run_in_thread=run,
            client_timeout=settings.client_timeout,
        )
        self.site = ProxySite(
            self.resource,
            clock=clock,
            client_timeout=settings.client_timeout,
            header_timeout=settings.header_timeout,
        )

    def start(self) -> None:
        if self._pool is not None:
            self._pool.start()
        removed = self.files.sweep()
        if removed:
            log.info("Removed {n} unfinished downloads left by the last run", n=removed)
        self.housekeeper.start()

    async def stop(self) -> None:
        """Let pending disk writes land and close upstream connections."""
        self.housekeeper.stop()
        await self.disk_work.idle()
        await self.client.close()
        if self._pool is not None and self._pool.started:
            self._pool.stop()


class _CacheService(Service):
    """Sweeps leftovers at start, reloads certificates on SIGHUP, closes upstream connections at stop."""

    def __init__(self, proxy: Proxy, reactor) -> None:  # type: ignore[no-untyped-def]
        self._proxy = proxy
        self._reactor = reactor
        self.tls_contexts: list[ReloadableContext] = []
        self._previous_sighup: Any = None

    def privilegedStartService(self) -> None:
        """Before the listeners bind (they follow this service), so no request meets leftovers."""
        super().privilegedStartService()
        self._proxy.start()

    def startService(self) -> None:
        super().startService()
        if self.tls_contexts:
            self._previous_sighup = signal.signal(
                signal.SIGHUP, lambda *_: self._reactor.callFromThread(self.reload_tls)
            )
        settings = self._proxy.settings
        log.info(
            "pypicached serving {upstream} from cache {cache} on {listen}; index pages fresh for {ttl:g}s",
            upstream=settings.upstream,
            cache=str(Path(settings.cache_dir).resolve()),
            listen=", ".join(settings.listen),
            ttl=settings.index_ttl,
        )

    def reload_tls(self) -> None:
        for context in self.tls_contexts:
            context.reload()

    def stopService(self) -> "Deferred[None]":
        super().stopService()
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
        return ensureDeferred(self._proxy.stop())


def endpoint_for(
    reactor, description: str, settings: Settings  # type: ignore[no-untyped-def]
) -> tuple[IStreamServerEndpoint, ReloadableContext | None]:
    """A listen string's endpoint: ours for ``ssl:`` (TLS 1.2+, reloadable), Twisted's for the rest."""
    default_files = (
        TLSFiles(settings.tls_cert, settings.tls_key, settings.tls_chain)
        if settings.tls_cert is not None and settings.tls_key is not None
        else None
    )
    tls = tls_endpoint(reactor, description, default_files)
    if tls is not None:
        return tls
    return serverFromString(reactor, description), None


def make_service(settings: Settings, reactor) -> MultiService:  # type: ignore[no-untyped-def]
    """The daemon as a twistd service: the caches, then one listener per endpoint."""
    proxy = Proxy(settings, reactor)
    top = MultiService()
    cache_service = _CacheService(proxy, reactor)
    cache_service.setServiceParent(top)
    for description in settings.listen:
        endpoint, context = endpoint_for(reactor, description, settings)
        if context is not None:
            cache_service.tls_contexts.append(context)
        StreamServerEndpointService(endpoint, proxy.site).setServiceParent(top)
    return top
