"""Scaling out: Debian's HAProxy with the shipped deploy/haproxy.cfg in front of real nodes.

The configuration must keep each project's pages and files on one node (so the cluster fetches
each file from upstream once), take a failing node out (only its projects move, to the others)
and give them back when it returns.  Every test runs the shipped file: on loopback byte for byte
(three nodes on 127.0.0.1:3142-3144, as shipped), and across network namespaces, where
:func:`tests.haproxy_config.with_servers` points its server lines at two nodes' own addresses.

What is asserted comes from the fake upstream's request log (what the cluster fetched), the
nodes' access logs (who answered what) and their cache directories (what each one holds), never
from the installer's exit code alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import attrs
import pytest
from pytest_twisted import ensureDeferred

from pypicached.base.names import normalize, projects_for_filename

from .cluster import LoadBalancer, Namespaces, Node, group, haproxy_binary, netns_unavailable
from .fake_upstream import JSON_TYPE, FakeUpstream, start_fake_upstream
from .haproxy_config import SHIPPED, Server, servers, with_servers
from .installers import clean_env, run_pip, run_process, tool_bin
from .projects import assert_installed
from .proxy_rig import RunningProxy
from .wheels import Dist, build_sdist, build_wheel


def cluster_dists() -> dict[str, list[Dist]]:
    """Thirteen projects, some with display names PEP 503 rewrites, some with an sdist too."""
    made = [
        build_wheel("pcx-alpha", "1.0"),
        build_sdist("pcx-alpha", "1.0"),
        build_wheel("pcx-alpha", "2.0"),
        build_wheel("pcx-beta", "0.1", requires_dist=["pcx-alpha>=2"]),
        build_wheel("Pcx_Gamma", "1.0"),
        build_wheel("pcx.dotted", "1.0"),
        build_sdist("pcx.dotted", "1.0"),
        build_wheel("PCX-Upper", "3.1"),
        build_wheel("pcx-delta", "1.0", requires_dist=["pcx-epsilon"]),
        build_wheel("pcx-epsilon", "0.5"),
        build_sdist("pcx-epsilon", "0.5"),
        build_wheel("pcx-zeta", "2.0"),
        build_wheel("pcx-eta", "1.0"),
        build_wheel("pcx-theta", "1.0"),
        build_wheel("pcx-iota", "1.0"),
        build_wheel("pcx-kappa", "1.0"),
        build_wheel("pcx-lambda", "1.0", size_padding=512 * 1024),
    ]
    out: dict[str, list[Dist]] = {}
    for dist in made:
        out.setdefault(dist.project, []).append(dist)
    return out


#: A dozen requirements, spelled as people do; pcx-epsilon comes in as pcx-delta's dependency.
REQUIREMENTS = [
    "pcx_alpha", "pcx-beta", "Pcx_Gamma", "pcx.dotted", "PCX-Upper", "pcx-delta",
    "pcx-zeta", "pcx-eta", "pcx-theta", "pcx-iota", "pcx-kappa", "pcx-lambda",
]  # fmt: skip
PROJECTS = {normalize(r) for r in REQUIREMENTS} | {"pcx-epsilon"}


def newest_wheels(dists: Mapping[str, Iterable[Dist]]) -> list[Dist]:
    return [max((d for d in ds if d.is_wheel), key=lambda d: d.version) for ds in dists.values()]


# --------------------------------------------------------------------------------------------
# The rig


@attrs.define
class Cluster:
    """The upstream, the nodes, the load balancer, and how clients reach it."""

    upstream: FakeUpstream
    nodes: list[Node]
    lb: LoadBalancer
    base_url: str
    home: Path
    pip_args: tuple[str, ...] = ()
    pip_env: dict[str, str] = attrs.field(factory=dict)
    dists: dict[str, Dist] = attrs.field(factory=dict)  # by file name

    @property
    def index_url(self) -> str:
        return self.base_url + "/simple/"

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def project_of(self, filename: str) -> str:
        return self.dists[filename.removesuffix(".metadata")].project

    async def pip_install(self, phase: str) -> None:
        """A fresh client (empty cache, own home) installs the dozen; checks every byte."""
        target = self.home / phase / "target"
        result = await run_pip(
            ["install", "--target", str(target), *self.pip_args, *REQUIREMENTS],
            self.index_url,
            python=tool_bin("pip", "python"),
            home=self.home / phase / "home",
            env_extra=self.pip_env,
        )
        result.check()
        assert_installed(target, newest_wheels(group(self.dists.values(), key=lambda d: d.project)))

    def fetched(self, since: int = 0) -> list[tuple[str, str]]:
        """What the cluster asked the upstream (since a position in its log), as (project, path)."""
        out = []
        for r in self.upstream.log[since:]:
            project = r.path.split("/")[2] if r.is_page else self.project_of(r.path.rsplit("/", 1)[-1])
            out.append((project, r.path))
        return out

    def owners(self, since: Sequence[int] | None = None) -> dict[str, set[str]]:
        """project -> the nodes that answered a request about it (since the marks given)."""
        found: dict[str, set[str]] = {}
        for i, node in enumerate(self.nodes):
            for access in node.answered(since[i] if since else 0):
                if access.path.startswith("/simple/"):
                    project = access.path.split("/")[2]
                elif access.path.startswith("/packages/"):
                    project = self.project_of(access.filename)
                else:
                    continue
                found.setdefault(project, set()).add(node.name)
        return found

    def holders(self) -> dict[str, set[str]]:
        """project -> the nodes whose cache directory holds a file of it."""
        found: dict[str, set[str]] = {}
        for node in self.nodes:
            for filename in node.cached_files():
                found.setdefault(self.project_of(filename), set()).add(node.name)
        return found

    def marks(self) -> list[int]:
        return [n.mark() for n in self.nodes]


def assert_each_once(fetched: list[tuple[str, str]]) -> None:
    counts = Counter(path for _, path in fetched)
    assert all(n == 1 for n in counts.values()), f"fetched more than once: {counts}"


async def scenario(c: Cluster) -> None:
    """Install through the cluster; kill the busiest node and install again; bring it back."""
    names = [n.name for n in c.nodes]
    await c.lb.wait_status({name: "UP" for name in names})

    # 1. A dozen projects: every page and file fetched once, each project on one node only.
    await c.pip_install("first")
    first = c.fetched()
    assert_each_once(first)
    assert {p for p, _ in first} == PROJECTS
    assert {path for _, path in first if path.startswith("/simple/")} == {f"/simple/{p}/" for p in PROJECTS}
    owners = c.owners()
    assert set(owners) == PROJECTS
    assert all(len(nodes) == 1 for nodes in owners.values()), f"a project was answered by two nodes: {owners}"
    owner = {project: next(iter(nodes)) for project, nodes in owners.items()}
    assert c.holders() == owners, "a node holds files of a project it does not own"
    share = group(owner, key=owner.get)
    assert set(share) == set(names), f"a node got no project at all: {share}"

    # The sdists (not installed: pip prefers the wheels) also go to their project's node, named
    # in HAProxy's X-Pypicached-Node; the file names spell the projects differently than pages.
    client = RunningProxy(None, None, c.base_url)  # type: ignore[arg-type]
    for dist in (d for d in c.dists.values() if not d.is_wheel):
        page_url = f"{c.base_url}/simple/{dist.project}/"
        page = await client.get(page_url, {"Accept": JSON_TYPE})
        listed = {f["filename"]: f["url"] for f in json.loads(await page.content())["files"]}
        reply = await client.get(urljoin(page_url, listed[dist.filename]))
        assert reply.code == 200 and hashlib.sha256(await reply.content()).hexdigest() == dist.sha256
        assert reply.header("X-Pypicached-Node") == owner[dist.project], (dist.filename, owner[dist.project])
        assert reply.header("X-Pypicached-Project") == dist.project
        assert page.header("X-Pypicached-Node") == owner[dist.project]
    assert_each_once(c.fetched())
    assert c.holders() == owners

    # 2. The node with the most projects dies. At once (HAProxy has not checked it yet), a fresh
    # client installs the same dozen: the first request that cannot connect takes the node out
    # and goes where its projects now go. Only the dead node's projects are fetched again, once
    # each, by the survivors; the rest stay put.
    victim = c.node(max(sorted(share), key=lambda name: len(share[name])))
    lost = share[victim.name]
    log_mark, marks = len(c.upstream.log), c.marks()
    await victim.stop(signal.SIGKILL)
    await c.pip_install("victim-down")
    await c.lb.wait_status({victim.name: "DOWN"})
    again = c.fetched(log_mark)
    assert_each_once(again)
    assert {path for _, path in again} == {path for p, path in first if p in lost}
    moved = c.owners(marks)
    assert set(moved) == PROJECTS
    assert all(len(nodes) == 1 for nodes in moved.values()), moved
    for project, nodes in moved.items():
        if project in lost:
            assert nodes != {victim.name}
        else:
            assert nodes == {owner[project]}, f"{project} moved from {owner[project]} to {nodes}"
    holders = c.holders()
    for project in lost:  # on the dead node's disk, and on exactly one survivor's
        assert victim.name in holders[project] and len(holders[project]) == 2, holders

    # 3. The node comes back (same cache): its projects go back to it, straight from its cache.
    await victim.start()
    await c.lb.wait_status({name: "UP" for name in names})
    log_mark, marks = len(c.upstream.log), c.marks()
    await c.pip_install("victim-back")
    assert c.fetched(log_mark) == []
    back = c.owners(marks)
    assert {p for p, nodes in back.items() if victim.name in nodes} == lost
    assert all(len(nodes) == 1 for nodes in back.values()), back
    assert {p: next(iter(n)) for p, n in back.items()} == owner
    returned = victim.answered(marks[c.nodes.index(victim)])
    assert returned and {a.cache for a in returned} == {"HIT"}, returned


@attrs.define
class Running:
    """What a test started, stopped in reverse order whatever happens."""

    stoppers: list[Any] = attrs.field(factory=list)

    async def close(self) -> None:
        failures = []
        for stop in reversed(self.stoppers):
            try:
                await stop()
            except Exception as e:  # stop the rest all the same
                failures.append(e)
        if failures:
            raise failures[0]


def require_root() -> None:
    # The shipped file drops privileges to the haproxy user and chroots, as Debian's does.
    if os.geteuid() != 0:
        pytest.skip("the shipped haproxy.cfg switches to the haproxy user and chroots: run as root")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# The configuration itself


@ensureDeferred
async def test_shipped_haproxy_config_is_valid(tmp_path):
    result = await run_process([haproxy_binary(), "-c", "-f", str(SHIPPED)], env=clean_env(tmp_path), timeout=60)
    assert result.code == 0 and "Configuration file is valid" in result.output, result.output
    assert [(s.name, s.address, s.id) for s in servers(SHIPPED.read_text())] == [
        ("node1", "127.0.0.1:3142", 1), ("node2", "127.0.0.1:3143", 2), ("node3", "127.0.0.1:3144", 3),
    ]  # fmt: skip


def test_with_servers_changes_only_the_addresses():
    shipped = SHIPPED.read_text()
    two = with_servers(shipped, ["10.9.8.11:3142", "10.9.8.12:3143"])
    assert [(s.name, s.address, s.id) for s in servers(two)] == [
        ("node1", "10.9.8.11:3142", 1),
        ("node2", "10.9.8.12:3143", 2),
    ]
    kept = [line for line in shipped.splitlines() if not line.lstrip().startswith("server ")]
    assert [line for line in two.splitlines() if not line.lstrip().startswith("server ")] == kept
    with pytest.raises(ValueError):
        with_servers(shipped, ["a:1"] * 4)


#: Paths, and the project the node itself reads from each (None: about no project).
ROUTES = [
    ("/simple/", None),
    ("/simple", None),
    ("/", None),
    ("/health", None),
    ("/stats", None),
    ("/simple/Foo_Bar/", "foo-bar"),
    ("/simple/foo-bar", "foo-bar"),
    ("/simple/zope.interface/", "zope-interface"),
    ("/simple/a%2Db/", "a-b"),
    ("/pypi/Django/json", "django"),
    ("/pypi/Django/4.2/json", "django"),
    ("/index/torch/simple/Torch/", "torch"),
    ("/index/cu124/pypi/Foo.Bar/json", "foo-bar"),
    ("/packages/ab/cd/" + "e" * 60 + "/zope.interface-6.0-cp311-cp311-manylinux_2_17_x86_64.whl", None),
    ("/packages/ab/cd/" + "e" * 60 + "/Foo_Bar-1.0-py3-none-any.whl.metadata", None),
    ("/packages/ab/cd/" + "e" * 60 + "/python-dateutil-2.8.2.tar.gz", None),
    ("/packages/+f/0123456789abcdef/torch-2.5.1%2Bcu124-cp311-cp311-linux_x86_64.whl", None),
    ("/packages/+f/0123456789abcdef/Foo_Bar-1.0-1-py3-none-any.whl", None),
    ("/packages/%2Bf/0123456789abcdef/pcx_beta-0.1-py3-none-any.whl", None),  # as pip sends it
    ("/packages/+f/0123456789abcdef/pcx.dotted-1.0.tar.gz", None),
    ("/packages/+f/0123456789abcdef/Pcx_Gamma-1.0.zip", None),
    ("/packages/+f/0123456789abcdef/foo-2-1.0.tar.gz", None),  # ambiguous: foo-2 1.0, or foo 2-1.0
    ("/packages/+f/0123456789abcdef/legacy-1.0-py2.7.egg", None),
    ("/index/torch/packages/+f/0123456789abcdef/torch-2.5.1-cp311-none-linux_x86_64.whl", None),
]


@ensureDeferred
async def test_haproxy_hashes_on_the_project_the_node_reads_from_the_path(tmp_path):
    """
    The key HAProxy hashes on (X-Pypicached-Project) is the PEP 503 name of the page's project,
    and for a file the first project the node itself guesses from its name (the node tries the
    others after it, so an ambiguous sdist name still works, on that first guess's node).
    No node runs: HAProxy answers 503 itself, with the same headers.
    """
    require_root()
    env = {**clean_env(tmp_path), "PYPICACHED_FRONTEND": f"127.0.0.1:{free_port()}"}
    lb = LoadBalancer(SHIPPED, tmp_path / "admin.sock", env)
    await lb.start()
    try:
        await lb.wait_status({s.name: "DOWN" for s in servers(SHIPPED.read_text())})
        client = RunningProxy(None, None, "http://" + env["PYPICACHED_FRONTEND"])  # type: ignore[arg-type]
        for path, project in ROUTES:
            if project is None and path.startswith(("/packages/", "/index/")):
                project = projects_for_filename(path.rsplit("/", 1)[-1].replace("%2B", "+"))[0]
            reply = await client.get(path)
            await reply.content()
            assert reply.header("X-Pypicached-Project") == project, path
            if reply.code == 503:
                assert (await reply.text()).startswith("pypicached: no node is available"), path
        assert projects_for_filename("foo-2-1.0.tar.gz") == ["foo-2", "foo"]  # the ambiguity is real
        refused = await client.get("/admin/purge/foo", method="POST")
        assert refused.code == 403 and "not served through the load balancer" in await refused.text()
    finally:
        await lb.stop()


# --------------------------------------------------------------------------------------------
# The cluster


@ensureDeferred
async def test_cluster_on_loopback(tmp_path):
    """Three nodes on 127.0.0.1:3142-3144 behind the shipped file, exactly as shipped."""
    require_root()
    shipped = servers(SHIPPED.read_text())
    for server in shipped:
        with socket.socket() as probe:
            if probe.connect_ex((server.host, server.port)) == 0:
                raise AssertionError(f"{server.address} is in use: the shipped config's nodes need it free")
    running = Running()
    try:
        upstream = FakeUpstream(cluster_dists(), "json")
        listening = start_fake_upstream(upstream)
        running.stoppers.append(listening.stop)
        env = clean_env(tmp_path / "env")
        nodes = [Node(s, tmp_path / s.name, upstream.simple_url, env=env) for s in shipped]
        for node in nodes:
            running.stoppers.append(node.stop)
            await node.start()
        frontend = f"127.0.0.1:{free_port()}"
        lb = LoadBalancer(SHIPPED, tmp_path / "admin.sock", {**env, "PYPICACHED_FRONTEND": frontend})
        running.stoppers.append(lb.stop)
        await lb.start()
        dists = {d.filename: d for ds in cluster_dists().values() for d in ds}
        await scenario(Cluster(upstream, nodes, lb, f"http://{frontend}", tmp_path / "clients", dists=dists))
    finally:
        await running.close()


@ensureDeferred
async def test_cluster_across_network_namespaces(tmp_path):
    """
    A load balancer and two nodes, each in its own network namespace with its own address on a
    private bridge; the fake upstream and the installer on the bridge's host side.  The index
    is a plain HTML one, so the nodes serve its files under /packages/+f/<key>/<file>.
    """
    reason = netns_unavailable()
    if reason:
        pytest.skip(reason)
    running = Running()
    spaces = Namespaces(["lb", "node1", "node2"])
    try:
        spaces.create()
        running.stoppers.append(lambda: _removed(spaces))
        upstream = FakeUpstream(cluster_dists(), "html")
        listening = start_fake_upstream(upstream, interface=spaces.host_address)
        running.stoppers.append(listening.stop)
        shipped = servers(SHIPPED.read_text())[:2]
        config = tmp_path / "haproxy.cfg"
        config.write_text(with_servers(SHIPPED.read_text(), [f"{spaces.address(s.name)}:{s.port}" for s in shipped]))
        env = clean_env(tmp_path / "env")
        nodes = [
            Node(Server(s.name, spaces.address(s.name), s.port, s.id), tmp_path / s.name, upstream.simple_url,
                 prefix=spaces.exec_prefix(s.name), env=env)
            for s in servers(config.read_text())
        ]  # fmt: skip
        for node in nodes:
            running.stoppers.append(node.stop)
            await node.start()
        lb = LoadBalancer(config, tmp_path / "admin.sock", env, prefix=spaces.exec_prefix("lb"))
        running.stoppers.append(lb.stop)
        await lb.start()
        address = spaces.address("lb")
        loopback = "127.0.0.1,localhost,::1"
        dists = {d.filename: d for ds in cluster_dists().values() for d in ds}
        await scenario(
            Cluster(
                upstream, nodes, lb, f"http://{address}:3141", tmp_path / "clients",
                pip_args=("--trusted-host", address),
                pip_env={"NO_PROXY": f"{loopback},{address}", "no_proxy": f"{loopback},{address}"},
                dists=dists,
            )
        )  # fmt: skip
    finally:
        await running.close()


async def _removed(spaces: Namespaces) -> None:
    spaces.remove()
