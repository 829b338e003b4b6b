"""
An index at several addresses (issue #19, part 3): ``upstream = [the LAN proxy, the
public index]``. Requests go to the first mirror that is up; one that fails is passed
over within the same request; its probe brings the traffic back; digests decide
whatever a mirror sends. In memory, on one clock, each mirror a ``FakeUpstream``
with its own scripted network and request log.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from twisted.web.iweb import IAgent
from twisted.web.server import Site
from zope.interface import implementer

from pypicached.config import ConfigError, build_settings
from pypicached.upstream.client import UpstreamURLs

from .fake_upstream import FakeUpstream
from .memory import UPSTREAM, ScriptedAgent, World, failure_of
from .operator_tools import samples
from .wheels import Dist, build_wheel

TTL = 600
LAN = "http://lan.test"
PROJECTS = ["pcx-mirror-a", "pcx-mirror-b", "pcx-mirror-c"]


@implementer(IAgent)
class ByHost:
    """Each host's own network: a connection goes to the agent of the URL's host."""

    def __init__(self, agents: dict[str, Any]) -> None:
        self.agents = agents

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Any:
        return self.agents[urlsplit(uri.decode()).hostname].request(method, uri, headers, bodyProducer)


class Mirrored:
    """A proxy whose one index has two mirrors: the LAN's first, then the public-like one."""

    def __init__(self, dists: dict[str, list[Dist]], cache_dir: Any, **settings: Any) -> None:
        self.world = w = World(dists, cache_dir, index_ttl=TTL, **settings)
        self.public, self.public_net = w.upstream, w.network
        self.lan = FakeUpstream(dists, "json")
        self.lan.base_url, self.lan._reactor = LAN, w.clock
        self.lan_net = ScriptedAgent(w._connect(Site(self.lan)))
        w.network = ByHost({"lan.test": self.lan_net, "upstream.test": self.public_net})
        w.restart(upstream=[LAN + "/simple/", UPSTREAM + "/simple/"])
        self.lan_health, self.public_health = w.proxy.metrics.upstreams

    def clear(self) -> None:
        self.lan.clear_log()
        self.public.clear_log()


@pytest.fixture(scope="module")
def dists() -> dict[str, list[Dist]]:
    return {p: [build_wheel(p, "1.0")] for p in PROJECTS}


@pytest.fixture
def mirrored(dists, tmp_path):
    made: list[Mirrored] = []

    def make(**settings: Any) -> Mirrored:
        m = Mirrored(dists, tmp_path / f"cache{len(made)}", **settings)
        made.append(m)
        return m

    yield make
    for m in made:
        m.world.stop()


def paths(upstream: FakeUpstream) -> list[str]:
    return [r.path for r in upstream.log]


def test_the_first_mirror_serves_while_up(mirrored, dists):
    m = mirrored()
    w = m.world
    dist = dists["pcx-mirror-a"][0]
    assert w.page("pcx-mirror-a").header("X-Pypi-Cache") == "MISS"
    reply = w.get(dist.pypi_path)
    assert reply.code == 200 and reply.body == dist.data
    assert paths(m.lan) == ["/simple/pcx-mirror-a/", dist.pypi_path] and paths(m.public) == []
    # the pages live where a single upstream at the first URL keeps them
    assert (w.proxy.settings.cache_dir / "pages" / UpstreamURLs(LAN + "/simple/").key / "simple").is_dir()


@pytest.mark.parametrize("failure", ["refuse", "503"])
def test_a_failing_first_mirror_is_passed_over_within_the_request(mirrored, dists, failure):
    m = mirrored()
    w = m.world
    if failure == "refuse":
        m.lan_net.mode = "refuse"
    else:
        m.lan.behaviour_fallback = lambda record: "status:503"
    reply = w.page("pcx-mirror-a")  # the same request, answered by the second mirror
    assert reply.code == 200 and reply.header("X-Pypi-Cache") == "MISS"
    assert json.loads(reply.body)["files"]
    assert m.lan_health.is_down and not m.public_health.is_down and not w.proxy.upstream_health.is_down
    assert paths(m.public) == ["/simple/pcx-mirror-a/"]
    attempts, asked = m.lan_net.attempts, len(m.lan.log)
    dist = dists["pcx-mirror-b"][0]
    assert w.page("pcx-mirror-b").code == 200
    assert w.get(dist.pypi_path).body == dist.data
    # the mirror that is down is not asked again, not even first
    assert (m.lan_net.attempts, len(m.lan.log)) == (attempts, asked)
    assert paths(m.public)[1:] == ["/simple/pcx-mirror-b/", dist.pypi_path]

    # its probe finds it again, and the traffic goes back to it
    m.lan_net.mode, m.lan.behaviour_fallback = None, None
    m.clear()
    w.advance(1)
    assert not m.lan_health.is_down
    assert [(r.method, r.path) for r in m.lan.log] == [("HEAD", "/simple/")]
    assert w.page("pcx-mirror-c").code == 200
    assert paths(m.lan)[1:] == ["/simple/pcx-mirror-c/"] and paths(m.public) == []


def test_each_mirror_is_shown(mirrored):
    m = mirrored()
    w = m.world
    m.lan_net.mode = "refuse"
    w.page("pcx-mirror-a")
    metrics = samples(w.get("/metrics").body.decode())
    assert metrics[("pypicached_upstream_up", (("upstream", LAN + "/simple/"),))] == 0
    assert metrics[("pypicached_upstream_up", (("upstream", UPSTREAM + "/simple/"),))] == 1
    health = json.loads(w.get("/health").body)
    assert [(u["name"], u["url"], u["state"]) for u in health["upstreams"]] == [
        ("pypi", LAN + "/simple/", "down"),
        ("pypi", UPSTREAM + "/simple/", "up"),
    ]
    stats = json.loads(w.get("/stats").body)
    assert [(u["url"], u["state"]) for u in stats["upstreams"]] == [
        (LAN + "/simple/", "down"),
        (UPSTREAM + "/simple/", "up"),
    ]
    page = w.get("/").body.decode()
    assert 'id="indexes"' in page and LAN + "/simple/" in page
    assert "requests go to the next mirror that is up" in page


def test_switching_mirrors_keeps_the_cache(mirrored):
    m = mirrored()
    w = m.world
    for project in PROJECTS:
        assert w.page(project).header("X-Pypi-Cache") == "MISS"
    m.lan_net.mode = "refuse"
    m.clear()
    for project in PROJECTS:  # fresh pages: nobody is asked
        assert w.page(project).header("X-Pypi-Cache") == "HIT"
    assert m.lan_net.attempts == len(PROJECTS) and paths(m.public) == []
    w.advance(TTL + 1)
    reply = w.page("pcx-mirror-a")  # the LAN copy's revalidation fails over
    assert reply.header("X-Pypi-Cache") in ("REVALIDATED", "EXPIRED")
    assert paths(m.public)[-1] == "/simple/pcx-mirror-a/"


def test_a_file_linked_on_a_mirror_now_down_comes_from_the_next(mirrored, dists):
    m = mirrored()
    w = m.world
    for project in PROJECTS:
        w.page(project)
    m.lan_net.mode = "refuse"
    w.get("/simple/never-seen/")  # finds the LAN mirror down
    assert m.lan_health.is_down
    m.clear()
    # at once: the link's path, asked of the next mirror (both mirrors lay files out alike)
    first = dists["pcx-mirror-a"][0]
    assert w.get(first.pypi_path).body == first.data
    assert paths(m.public) == [first.pypi_path]
    # later: the page that links the file is asked anew, of the mirror up, and the file as it says
    w.advance(30)
    m.lan.clear_log()
    m.public.clear_log()
    second = dists["pcx-mirror-b"][0]
    assert w.get(second.pypi_path).body == second.data
    assert paths(m.public) == ["/simple/pcx-mirror-b/", second.pypi_path]
    assert paths(m.lan) == []


def test_a_mirror_cannot_slip_in_other_bytes(mirrored, dists):
    m = mirrored()
    w = m.world
    dist = dists["pcx-mirror-a"][0]
    w.page("pcx-mirror-a")
    m.public.replace_data(dist.filename, b"not the wheel the LAN page promised")
    m.lan_net.mode = "refuse"
    w.get("/simple/never-seen/")
    m.clear()
    response = w.response(w.request(dist.pypi_path))
    assert response.code == 200  # streamed as it comes: the last byte is withheld, and the body broken off
    failure_of(w.read(response))
    assert paths(m.public) == [dist.pypi_path]
    assert w.proxy.files.digest_mismatches == 1
    assert not list((w.proxy.settings.cache_dir / "files").rglob(dist.filename))
    m.lan_net.mode = None
    w.advance(1)  # the LAN mirror is back: the file comes whole and good from it
    assert w.get(dist.pypi_path).body == dist.data


def test_with_every_mirror_down_the_cache_stands_in(mirrored):
    m = mirrored()
    w = m.world
    w.page("pcx-mirror-a")
    w.advance(TTL + 1)
    m.lan_net.mode = m.public_net.mode = "refuse"
    assert w.page("pcx-mirror-a").header("X-Pypi-Cache") == "STALE"
    assert w.proxy.upstream_health.is_down
    attempts = (m.lan_net.attempts, m.public_net.attempts)
    reply = w.get("/simple/never-seen/")
    assert reply.code == 503 and b"every mirror of index pypi is down" in reply.body
    assert LAN.encode() in reply.body and UPSTREAM.encode() in reply.body
    assert (m.lan_net.attempts, m.public_net.attempts) == attempts  # refused at once
    m.public_net.mode = None
    w.advance(1)  # the second mirror's probe: the index is up again, through it
    assert not w.proxy.upstream_health.is_down
    assert w.page("pcx-mirror-b").code == 200


# --------------------------------------------------------------------------------------------
# Configuration

A, B = "http://lan.test/simple/", "https://index.example/simple"


def test_upstream_as_a_list_or_a_string():
    settings = build_settings({"upstream": [A, B]}, {})
    (index,) = settings.indexes
    assert index.url == A and index.mirrors == (A, B + "/")
    assert settings.effective()["upstream"] == [A, B + "/"]
    single = build_settings({"upstream": A}, {})
    assert single.indexes[0].mirrors == (A,) and single.effective()["upstream"] == A
    assert build_settings({"upstream": [A]}, {}) == single  # a list of one is that one URL
    assert build_settings({}, {"upstream": A}) == single  # the flag


def test_an_index_table_takes_a_list():
    tables = [{"name": "pypi", "url": [A, B]}, {"name": "torch", "url": "http://127.0.0.1:2/whl/", "projects": ["t"]}]
    settings = build_settings({"index": tables}, {})
    assert [i.mirrors for i in settings.indexes] == [(A, B + "/"), ("http://127.0.0.1:2/whl/",)]
    assert settings.effective()["index"][0]["url"] == [A, B + "/"]
    assert settings.effective()["index"][1]["url"] == "http://127.0.0.1:2/whl/"


@pytest.mark.parametrize(
    "values, problem",
    [
        ({"upstream": []}, "upstream (config): expected an index URL or a non-empty list"),
        ({"upstream": [A, "ftp://x/simple/"]}, "upstream (config): mirror 2 of 2: 'ftp://x/simple/' is not an http"),
        ({"upstream": [A, 3]}, "upstream (config): mirror 2 of 2: expected a URL string"),
        ({"upstream": [A, A]}, "upstream (config): a mirror is listed twice"),
        ({"index": [{"name": "pypi", "url": []}]}, "index 'pypi': url: expected an index URL or a non-empty list"),
        ({"index": [{"name": "pypi", "url": ["nope", A]}]}, "index 'pypi': url: mirror 1 of 2:"),
    ],
)
def test_mirror_list_errors_name_the_setting(values, problem):
    with pytest.raises(ConfigError) as caught:
        build_settings(values, {})
    assert problem in str(caught.value)
