"""Shared fixtures.  The fake-upstream fixtures below come from tests/fake_upstream.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, inlineCallbacks

from .fake_upstream import FakeUpstream, start_fake_upstream
from .wheels import Dist, sample_dists


@pytest.fixture(scope="session")
def dists() -> dict[str, list[Dist]]:
    """The sample projects (immutable values, so one build serves the whole session)."""
    return sample_dists()


def _serve(dists: dict[str, list[Dist]], flavour: str) -> Iterator[FakeUpstream]:
    upstream = FakeUpstream(dists, flavour)  # type: ignore[arg-type]
    listening = start_fake_upstream(upstream)
    try:
        yield upstream
    finally:
        pytest_twisted.blockon(listening.stop())


@pytest.fixture
def fake_upstream_html(dists: dict[str, list[Dist]]) -> Iterator[FakeUpstream]:
    """A plain PEP 503 index (relative links, no PEP 658), listening on 127.0.0.1."""
    yield from _serve(dists, "html")


@pytest.fixture
def fake_upstream_json(dists: dict[str, list[Dist]]) -> Iterator[FakeUpstream]:
    """A PyPI-like index (PEP 691 JSON, PEP 658, /pypi/<p>/json), listening on 127.0.0.1."""
    yield from _serve(dists, "json")


@pytest.fixture
def serve_upstream(dists: dict[str, list[Dist]]) -> Iterator[Any]:
    """Start fake upstreams on 127.0.0.1: ``serve_upstream(flavour, dists=None, **options)``.

    Returns a :class:`ServedUpstream`; its ``stop()`` (idempotent) takes the upstream away in
    the middle of a test.  Every one still running is stopped after the test.
    """
    served: list[ServedUpstream] = []

    def serve(flavour: str = "json", dists_: Any = None, **options: Any) -> ServedUpstream:
        upstream = FakeUpstream(dists if dists_ is None else dists_, flavour, **options)  # type: ignore[arg-type]
        one = ServedUpstream(upstream, start_fake_upstream(upstream))
        served.append(one)
        return one

    yield serve
    for one in served:
        pytest_twisted.blockon(one.stop())


class ServedUpstream:
    """A listening fake upstream that a test can stop (once or more)."""

    def __init__(self, upstream: FakeUpstream, listening: Any) -> None:
        self.upstream = upstream
        self._listening = listening
        self._stopped: Any = None

    @property
    def simple_url(self) -> str:
        return self.upstream.simple_url

    def stop(self) -> Any:
        """Stop listening and close every connection; fires when they are gone."""
        if self._stopped is None:
            self._stopped = self._listening.stop()
            self._stopped.addCallback(lambda _: None)
        done: Deferred[None] = Deferred()
        self._stopped.addBoth(lambda result: (done.callback(None), result)[1])
        return done


@pytest.fixture
def make_world(dists, tmp_path):
    """Proxies joined in memory to an upstream (tests/memory.py): ``make_world(upstream=dists, flavour="json",
    cache_dir=None, now=0.0, **settings)``; every one stopped after the test."""
    from .memory import World

    worlds = []

    def make(
        upstream: Any = None, flavour: str = "json", cache_dir: Any = None, now: float = 0.0, **settings: Any
    ) -> World:
        world = World(
            dists if upstream is None else upstream,
            cache_dir or tmp_path / f"cache{len(worlds)}",
            flavour,
            now,
            **settings,
        )
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.stop()


@pytest.fixture
def start_proxy(tmp_path):
    """Start proxies on 127.0.0.1 (``yield start_proxy(upstream_url, **settings)``); all stopped after."""
    from .proxy_rig import start_proxy as start

    running = []

    @inlineCallbacks
    def starter(upstream_url: str, cache_dir=None, **settings):
        proxy = yield start(upstream_url, cache_dir or tmp_path / f"cache{len(running)}", **settings)
        running.append(proxy)
        return proxy

    yield starter
    for proxy in running:
        pytest_twisted.blockon(proxy.stop())


@pytest.fixture(autouse=True)
def twisted_log_to_stdout():
    """Show the daemon's log lines (access log, errors) in a failing test's captured output."""
    import sys

    from twisted.logger import globalLogPublisher, textFileLogObserver

    observer = textFileLogObserver(sys.stdout)
    globalLogPublisher.addObserver(observer)
    yield
    globalLogPublisher.removeObserver(observer)
