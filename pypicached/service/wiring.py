"""The running daemon's parts, wired together: the upstream clients, the caches, the policy and the site."""

from __future__ import annotations

from pathlib import Path

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IAgent

from pypicached.base.disk import RunInThread, ThreadWork, atomic_write, disk_pool, thread_runner
from pypicached.cache.files import FileCache
from pypicached.cache.freshness import Freshness
from pypicached.cache.housekeeping import Budget, Housekeeper
from pypicached.cache.pages import PageCache
from pypicached.cache.router import Router, Source
from pypicached.config import IndexSettings, Settings
from pypicached.http.acme import AcmeFiles
from pypicached.http.site import AccessLog, ProxySite
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
from pypicached.upstream.report import Unreported

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
        agent: IAgent | None = None,
    ) -> None:
        clock = clock or reactor
        root = Path(settings.cache_dir)
        pool = None if run_in_thread else disk_pool()
        run = self.disk_work = ThreadWork(run_in_thread or thread_runner(reactor, pool))
        self.settings = settings
        self._root = root
        self.metrics = Metrics(clock, Ledger.load(root / STATE_FILE, clock.seconds()))
        http_pool = None
        if agent is None:
            agent, http_pool = pooled_agent(reactor, settings.connect_timeout)
        agent = self.upstream_requests = StoppableAgent(agent)
        http = upstream_http(agent)
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
        self.certificates = self._certificates(reactor, clock)
        self.site = self._site(clock)
        self.cache_service = CacheService(reactor=reactor, settings=settings, sweep=self.files.sweep,
                                          disk_work=run, disk_pool=pool, http_pool=http_pool)  # fmt: skip
        #: The parts that start and stop with the daemon, in order; ``make_service`` adds the listeners.
        self.service = self._tree(clock)

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
        housekeeper = Housekeeper(root=self._root / "files", budget=budget, clock=clock, run_in_thread=run)
        self.files.on_commit = housekeeper.committed
        return housekeeper

    def _source(self, settings: IndexSettings, http: Requests, clock: IReactorTime, run: RunInThread) -> Source:
        """One index: its shared health (probed with a HEAD of its URL), the client that reports to it, its pages."""
        urls = UpstreamURLs(settings.url)
        health = UpstreamHealth(
            settings.url,
            clock,
            lambda: client.probe(urls.simple_url),
            retry_max=settings.upstream_retry_max,
            name=settings.name,
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
        pages = PageCache(
            clock=clock, urls=urls, client=client, root=self._root, freshness=freshness_of(settings), run_in_thread=run
        )
        return Source(settings.name, settings.projects, urls, health, client, pages)

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

    def _certificates(self, reactor, clock: IReactorTime) -> CertificateKeeper | None:  # type: ignore[no-untyped-def]
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
            challenges=self.certificates.challenges if self.certificates else None,
            certificate=self.certificates.state if self.certificates else None,
        )
        self.resource = ProxyResource(
            answers=Answers(router=self.indexes, files=self.files, gate=self.gate, clock=clock),
            clock=clock,
            control=control,
            access_log=AccessLog(clock=clock, metrics=self.metrics, log_format=settings.log_format),
            client_timeout=settings.client_timeout,
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
        watch, files, housekeeper = self.metrics.watch, self.files, self.housekeeper
        watch("pypicached_downloads_in_flight", "Files being fetched from the upstream now.", "gauge", files.in_flight)
        watch(
            "pypicached_cache_size_bytes",
            "Bytes of cached files (as of the last housekeeping pass, plus new files).",
            "gauge",
            lambda: housekeeper.size,
        )
        watch("pypicached_cache_files", "Cached files.", "gauge", lambda: housekeeper.files)
        watch(
            "pypicached_cache_max_size_bytes",
            "The cache's size budget (max_size).",
            "gauge",
            lambda: self.settings.max_size,
        )
        watch(
            "pypicached_evictions", "Files evicted to keep the disk budget.", "counter", lambda: housekeeper.evictions
        )
        watch(
            "pypicached_evicted_bytes",
            "Bytes evicted to keep the disk budget.",
            "counter",
            lambda: housekeeper.evicted_bytes,
        )
        watch(
            "pypicached_digest_mismatches",
            "Downloads refused because their digest did not match.",
            "counter",
            lambda: files.digest_mismatches,
        )

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


def freshness_of(settings: IndexSettings) -> Freshness:
    """The settings that decide how long index pages are trusted and what stands in for them."""
    return Freshness(
        ttl=settings.index_ttl,
        offline=settings.offline,
        stale_if_error=settings.stale_if_error,
        stale_while_revalidate=settings.stale_while_revalidate,
        stale_if_slow=settings.stale_if_slow,
    )
