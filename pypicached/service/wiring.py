"""The running daemon's parts, wired together: the upstream clients, the caches, the policy and the site."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool
from twisted.web.iweb import IAgent

from pypicached.base.disk import RunInThread, ThreadWork, atomic_write, disk_pool, thread_runner
from pypicached.cache.files import FileCache
from pypicached.cache.housekeeping import Budget, Housekeeper
from pypicached.cache.pages import PageCache
from pypicached.cache.router import Router, Source
from pypicached.config import IndexSettings, Settings
from pypicached.http.access import Access
from pypicached.http.acme import AcmeFiles
from pypicached.http.site import AccessLog, ProxySite
from pypicached.http.tokenfile import TokensFile
from pypicached.http.web import ProxyResource
from pypicached.ops.control import Control
from pypicached.ops.health import Health
from pypicached.ops.ledger import STATE_FILE, Ledger
from pypicached.ops.metrics import Metrics
from pypicached.policy.advisories import AdvisoryFeed
from pypicached.policy.answers import Answers
from pypicached.policy.gate import Gate
from pypicached.service.certificates import CertificateKeeper
from pypicached.service.stoppable import StoppableAgent
from pypicached.service.tree import CacheService, Part, StatsSaver, tree_of
from pypicached.upstream.agent import pooled_agent, upstream_http
from pypicached.upstream.breaker import UpstreamHealth
from pypicached.upstream.client import Requests, UpstreamClient, UpstreamURLs
from pypicached.upstream.mirrors import IndexClient, MirrorClient
from pypicached.upstream.report import Unreported

log = Logger()


class Proxy:
    """Everything that answers requests, wired together; no listeners yet."""

    def __init__(
        self,
        settings: Settings,
        reactor: Any,  # the whole reactor: time, threads, TCP, TLS; no one interface says so
        *,
        clock: IReactorTime | None = None,
        run_in_thread: RunInThread | None = None,
        agent: IAgent | None = None,
    ) -> None:
        clock = clock or reactor
        root = Path(settings.cache_dir)
        pool = None if run_in_thread else disk_pool()
        run = self.disk_work = ThreadWork(run_in_thread or thread_runner(reactor, pool))
        self.settings = settings
        self._root = root
        self.metrics = Metrics(clock, Ledger.load(root / STATE_FILE, clock.seconds()))
        http, http_pool = self._upstream_http(reactor, agent)
        self.sources = [self._source(index, http, clock, run) for index in settings.indexes]
        self.indexes = Router(self.sources, root=root, tmp=root / "tmp", run_in_thread=run)
        first = self.sources[0]  # what a single-index proxy (and many tests) call them
        self.upstream_health, self.client, self.pages = first.health, first.client, first.pages
        self.files = FileCache(root=root, clock=clock, run_in_thread=run)
        self.advisories = self._advisories(http, clock, run)
        self.gate = self._gate(clock)
        self.housekeeper = self._housekeeper(clock, run)
        self.health = Health(clock=clock, directory=root / "tmp", run_in_thread=run, upstreams=self.metrics.upstreams)
        self._watch()
        self._save_lock = DeferredLock()
        self.access, self.tokens = self._access(clock)
        self.certificates = self._certificates(reactor, clock)
        self.site = self._site(clock)
        self.cache_service = CacheService(reactor=reactor, settings=settings, sweep=self.files.sweep,
                                          disk_work=run, disk_pool=pool, http_pool=http_pool)  # fmt: skip
        if self.tokens is not None:
            self.cache_service.reloaders.append(self.tokens.reload)
        #: The parts that start and stop with the daemon, in order; ``make_service`` adds the listeners.
        self.service = self._tree(clock)

    def _upstream_http(self, reactor: Any, agent: IAgent | None) -> tuple[Requests, HTTPConnectionPool | None]:
        """treq over the agent (the daemon's pooled one, or a test's), each request breakable at stop."""
        pool = None
        if agent is None:
            agent, pool = pooled_agent(reactor, self.settings.connect_timeout)
        self.upstream_requests = StoppableAgent(agent)
        return upstream_http(self.upstream_requests), pool

    def _gate(self, clock: IReactorTime) -> Gate:
        """Each index's policy, with the advisories, where requests pass; its tallies exported."""
        policies = {index.name: index.policy for index in self.settings.indexes}
        gate = Gate(clock=clock, indexes=self.indexes, policies=policies, stored_at=self.files.stored_at,
                    feed=self.advisories)  # fmt: skip
        self.metrics.registry.register(gate.held)
        return gate

    def _housekeeper(self, clock: IReactorTime, run: RunInThread) -> Housekeeper:
        """Keeps the disk budget, told of every file committed."""
        settings = self.settings
        budget = Budget(settings.max_size, settings.min_free, settings.inactive)
        housekeeper = Housekeeper(root=self._root, budget=budget, clock=clock, run_in_thread=run)
        self.files.on_commit = housekeeper.committed

        def forget(paths: tuple[str, ...]) -> None:
            for source in self.sources:
                source.pages.evicted(set(paths))

        housekeeper.pages_evicted = forget
        return housekeeper

    def _source(self, settings: IndexSettings, http: Requests, clock: IReactorTime, run: RunInThread) -> Source:
        """One index: a client per mirror (most have one), each with its own health; its pages, under its first URL."""
        urls = UpstreamURLs(settings.url)
        clients = [self._mirror(settings, url, http, clock) for url in settings.mirrors]
        client: IndexClient = clients[0] if len(clients) == 1 else MirrorClient(list(zip(settings.mirrors, clients)))
        pages = PageCache(
            clock=clock, urls=urls, client=client, root=self._root, freshness=settings.freshness(), run_in_thread=run
        )
        return Source(settings.name, settings.projects, urls, client.health, client, pages)

    def _mirror(self, settings: IndexSettings, url: str, http: Requests, clock: IReactorTime) -> UpstreamClient:
        """A client for one mirror of an index, and its shared health (probed with a HEAD of its URL)."""
        health = UpstreamHealth(
            url, clock, lambda: client.probe(url), retry_max=settings.upstream_retry_max, name=settings.name
        )
        self.metrics.upstreams.append(health)
        client = UpstreamClient(
            http,
            clock=clock,
            health=health,
            report=self.metrics,
            response_timeout=settings.response_timeout,
            file_timeout=settings.file_response_timeout,
            idle_timeout=settings.idle_timeout,
        )
        return client

    def _advisories(self, http: Requests, clock: IReactorTime, run: RunInThread) -> AdvisoryFeed | None:
        """
        The advisory feed, if one is configured: fetched like a page, over the same
        connection pool, by a client whose health and figures are its own (a feed host
        that fails must not mark an index down).
        """
        url = self.settings.advisories_url
        if url is None:
            return None
        health = UpstreamHealth(
            url, clock, lambda: client.probe(url), retry_max=self.settings.upstream_retry_max, name="advisories"
        )
        # its own figures too (never exported): the feed's bytes are not the index traffic the cache saves
        client = UpstreamClient(
            http,
            clock=clock,
            health=health,
            report=Unreported(),
            response_timeout=self.settings.response_timeout,
            file_timeout=self.settings.file_response_timeout,
            idle_timeout=self.settings.idle_timeout,
        )
        return AdvisoryFeed(
            clock=clock,
            client=client,
            url=url,
            refresh=self.settings.advisories_refresh,
            path=self._root / "advisories" / "advisories.zip",
            tmp=self._root / "tmp",
            run_in_thread=run,
        )

    def _access(self, clock: IReactorTime) -> tuple[Access | None, TokensFile | None]:
        """With a tokens file: who may ask (``Access``), and the file it learns the tokens from."""
        settings = self.settings
        if settings.tokens_file is None:
            return None, None
        access = Access(clock=clock, registry=self.metrics.registry, open_networks=settings.open_networks,
                        admin_token=settings.admin_token)  # fmt: skip
        return access, TokensFile(settings.tokens_file, clock, access.load)

    def _certificates(self, reactor: Any, clock: IReactorTime) -> CertificateKeeper | None:
        """The ACME certificate's keeper, if a CA is configured; its orders run in the reactor's threads."""
        settings = self.settings
        if settings.acme_directory is None:
            return None
        return CertificateKeeper(reactor=reactor, clock=clock, run_in_thread=thread_runner(reactor),
                                 files=AcmeFiles(self._root / "acme"), directory=settings.acme_directory,
                                 domains=settings.acme_domains, email=settings.acme_email)  # fmt: skip

    def _site(self, clock: IReactorTime) -> ProxySite:
        """What answers clients: the resource over the caches and the operator's side, in a site."""
        settings = self.settings
        control = Control(
            metrics=self.metrics,
            health=self.health,
            indexes=self.indexes,
            gate=self.gate,
            files=self.files,
            housekeeper=self.housekeeper,
            clock=clock,
            upstream_url=self.sources[0].url,
            admin_token=settings.admin_token,
            access_summary=self.access.summary if self.access else None,
            challenges=self.certificates.challenges if self.certificates else None,
            certificate=self.certificates.state if self.certificates else None,
        )
        self.resource = ProxyResource(
            answers=Answers(router=self.indexes, files=self.files, gate=self.gate, clock=clock),
            clock=clock,
            control=control,
            access_log=AccessLog(
                clock=clock,
                metrics=self.metrics,
                log_format=settings.log_format,
                served=self.access.served if self.access else None,
            ),  # fmt: skip
            client_timeout=settings.client_timeout,
            access=self.access,
        )
        return ProxySite(
            self.resource,
            clock=clock,
            client_timeout=settings.client_timeout,
            header_timeout=settings.header_timeout,
        )

    def _tree(self, clock: IReactorTime) -> MultiService:
        """
        The cache's own start first; the feed's copy is read before the heartbeat starts; upstream
        requests still in flight are broken off before the last save and before the probers stop
        (a request broken off may mark its upstream down and schedule a probe).
        """
        probers = [Part(f"prober {source.name}", stop=source.health.stop) for source in self.sources]
        return tree_of(
            [
                self.cache_service,
                *([Part("tokens file", self.tokens.start, self.tokens.stop)] if self.tokens else []),
                *([self.certificates] if self.certificates is not None else []),
                Part("housekeeper", self.housekeeper.start, self.housekeeper.stop),
                *probers,
                *([self.advisories] if self.advisories is not None else []),
                Part("heartbeat", self.health.start, self.health.stop),
                StatsSaver(self.save_state, clock),
                Part("upstream requests", stop=self.upstream_requests.stop),
            ]
        )

    def start(self) -> None:
        """Start the parts as twistd would (tests, which add no listeners)."""
        self.service.privilegedStartService()
        self.service.startService()

    def _watch(self) -> None:
        """Export the live figures other parts keep."""
        files, keeper = self.files, self.housekeeper
        for name, kind, read, doc in (
            ("downloads_in_flight", "gauge", files.in_flight, "Files being fetched from the upstream now."),
            ("cache_size_bytes", "gauge", lambda: keeper.size, "Bytes cached, files and pages (as of the last "
             "housekeeping pass, plus new files)."),
            ("cache_files", "gauge", lambda: keeper.files, "Cached files."),
            ("cache_max_size_bytes", "gauge", lambda: self.settings.max_size, "The cache's size budget (max_size)."),
            ("evictions", "counter", lambda: keeper.evictions, "Files and pages evicted to keep the disk budget."),
            ("evicted_bytes", "counter", lambda: keeper.evicted_bytes, "Bytes evicted to keep the disk budget."),
            ("digest_mismatches", "counter", lambda: files.digest_mismatches,
             "Downloads refused because their digest did not match."),
        ):  # fmt: skip
            self.metrics.watch("pypicached_" + name, doc, kind, read)

    def save_state(self) -> Deferred[None]:
        """Write the savings figures to the cache directory (in the disk thread)."""
        data = self.metrics.ledger.to_json()
        # one save at a time, in order: the final save at stop must land last
        d = self._save_lock.run(self.disk_work, atomic_write, self._root / STATE_FILE, data, self._root / "tmp")
        return d.addErrback(lambda f: log.error("Could not save {file}: {e}", file=STATE_FILE, e=f.getErrorMessage()))

    async def stop(self) -> None:
        """Stop the parts in reverse (once): pending disk writes land and upstream connections close."""
        if self.service.running:
            await self.service.stopService()
