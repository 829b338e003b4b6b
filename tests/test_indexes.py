"""
Several upstream indexes behind one URL (issue #12): the public-like index first, a
PyTorch-like one second with ``projects = ["pcx-torch", "pcx-nvidia-*"]``.

Both list ``pcx-shared``, the PyTorch-like one a newer version; the public-like one also
lists impostors of the pinned projects, at higher versions, as a dependency-confusion attack
would.  Every test asserts, from the two upstreams' request logs, which index each page and
file came from: a pinned project from its index alone (a 404 there is the answer, an outage
there is served stale or refused), any other from the first unpinning index that has it,
whole, and files never across indexes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import attrs
import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers

from pypicached.config import DEFAULT_UPSTREAM, ConfigError, build_settings, read_toml
from pypicached.service import Proxy

from .fake_upstream import PIP_ACCEPT, FakeUpstream
from .installers import clean_env, run_pip, run_process, run_uv, run_uv_project, tool_bin
from .observe import ClientLog
from .operator_tools import ADMIN, samples
from .projects import assert_installed, site_packages
from .proxy_rig import Reply, RunningProxy, settled, until
from .torch_upstream import ServedTorch, TorchUpstream, start_torch_upstream
from .wheels import Dist, build_wheel

TORCH = "pcx-torch"
CUBLAS = "pcx-nvidia-cublas-cu12"
CUDNN = "pcx-nvidia-cudnn-cu12"  # pinned by the glob; only the public-like index has it
SHARED = "pcx-shared"
TRITON = "pcx-triton"  # only on the PyTorch-like index
PINNED = ["pcx-torch", "pcx-nvidia-*"]
HTML_ACCEPT = "text/html"


@attrs.frozen
class Catalogue:
    torch: Dist  # pcx-torch 2.5.1+cu124, needs pcx-shared and pcx-nvidia-cublas-cu12
    cublas: Dist
    shared_newer: Dist  # pcx-shared 2.0, on the PyTorch-like index only
    shared_torch: Dist  # pcx-shared 1.0 there: the public file's name, other bytes
    triton: Dist
    shared: Dist  # pcx-shared 1.0 on the public-like index
    alpha: Dist
    impostors: tuple[Dist, ...]  # pcx-torch, cublas and cudnn 99.0 on the public-like index

    @property
    def on_torch(self) -> list[Dist]:
        return [self.torch, self.cublas, self.shared_newer, self.shared_torch, self.triton]

    @property
    def on_public(self) -> list[Dist]:
        return [self.shared, self.alpha, *self.impostors]

    def impostor(self, project: str) -> Dist:
        return next(d for d in self.impostors if d.project == project)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue(
        torch=build_wheel(TORCH, "2.5.1+cu124", requires_dist=[SHARED, f"{CUBLAS}==12.4.5.8"]),
        cublas=build_wheel(CUBLAS, "12.4.5.8"),
        shared_newer=build_wheel(SHARED, "2.0"),
        shared_torch=build_wheel(SHARED, "1.0", size_padding=4096),
        triton=build_wheel(TRITON, "3.1.0"),
        shared=build_wheel(SHARED, "1.0"),
        alpha=build_wheel("pcx-alpha", "1.0"),
        impostors=tuple(build_wheel(p, "99.0") for p in (TORCH, CUBLAS, CUDNN)),
    )


# --------------------------------------------------------------------------------------------
# The rig: two upstreams and a proxy configured with both.


async def start_indexes_proxy(
    tables: list[dict[str, Any]], cache_dir: Path, *, clock: Any = None, **settings: Any
) -> RunningProxy:
    """A proxy on a random loopback port over ``[[index]]`` tables, validated as the daemon does."""
    values = {"index": tables, "cache_dir": str(cache_dir), **settings}
    proxy = Proxy(build_settings(values, {}), reactor, clock=clock)
    proxy.start()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(proxy.site)
    return RunningProxy(proxy, port, f"http://127.0.0.1:{port.getHost().port}")


@attrs.define
class Rig:
    public: FakeUpstream
    public_served: Any
    torch: TorchUpstream
    torch_served: ServedTorch
    proxy: RunningProxy
    catalogue: Catalogue
    tables: list[dict[str, Any]]

    def upstream(self, name: str) -> Any:
        found = self.proxy.proxy.indexes.named(name)
        assert found is not None, name
        return found

    async def get(self, path: str, accept: str = PIP_ACCEPT) -> tuple[Any, bytes]:
        reply = await self.proxy.get(path, {"Accept": accept})
        return reply, await reply.content()

    async def page(self, path: str) -> tuple[Any, dict[str, Any]]:
        """A PEP 691 page through the proxy (asserting a 200)."""
        reply, body = await self.get(path)
        assert reply.code == 200, (path, reply.code, body)
        return reply, json.loads(body)

    async def file_path(self, page_path: str, filename: str) -> str:
        """The proxy path a page links ``filename`` under."""
        _, page = await self.page(page_path)
        entry = next(f for f in page["files"] if f["filename"] == filename)
        return urljoin(page_path, entry["url"])

    def public_asked_about(self, *projects: str) -> list[str]:
        """Paths of requests the public-like index got for these projects' pages or files."""
        files = {d.filename for d in self.catalogue.on_public if d.project in projects}
        return [
            r.path
            for r in self.public.log
            if any(r.path.startswith((f"/simple/{p}/", f"/pypi/{p}/")) for p in projects)
            or r.path.rsplit("/", 1)[-1].removesuffix(".metadata") in files
        ]


@pytest.fixture
def two_indexes(serve_upstream, catalogue, tmp_path):
    """``await two_indexes(pinned=True, clock=None, **settings)``: both upstreams and a proxy."""
    proxies: list[RunningProxy] = []
    torches: list[ServedTorch] = []

    async def make(*, pinned: bool = True, clock: Any = None, **settings: Any) -> Rig:
        public = serve_upstream("json", catalogue.on_public)
        torch = TorchUpstream(catalogue.on_torch)
        torch_served = start_torch_upstream(torch)
        torches.append(torch_served)
        tables = [
            {"name": "pypi", "url": public.simple_url},
            {"name": "pytorch", "url": torch.simple_url, **({"projects": PINNED} if pinned else {})},
        ]
        proxy = await start_indexes_proxy(tables, tmp_path / f"cache{len(proxies)}", clock=clock, **settings)
        proxies.append(proxy)
        return Rig(public.upstream, public, torch, torch_served, proxy, catalogue, tables)

    yield make
    for proxy in proxies:
        pytest_twisted.blockon(proxy.stop())
    for served in torches:
        pytest_twisted.blockon(served.stop())


def assert_each_from_its_index(r: Rig) -> None:
    """What installing pcx-torch through /simple/ must have asked of each upstream, and nothing more."""
    c, torch = r.catalogue, r.torch
    assert torch.asked("index") == {("index", torch.page_path(TORCH)), ("index", torch.page_path(CUBLAS))}
    assert torch.asked("files") == {
        ("files", torch.file_path(d) + suffix) for d in (c.torch, c.cublas) for suffix in ("", ".metadata")
    }
    # the files from the host the links name, by the links' own spelling of the local version
    assert {q.host for q in torch.requests("files")} == {urlsplit(torch.files_base).netloc}
    assert not [q.raw_path for q in torch.log if "+" in q.raw_path]  # "%2B", as the links spell it
    assert not torch.about(SHARED), "pcx-shared is not pinned: the first index has it, the newer one is not asked"
    # pcx-shared whole from the first index; the impostors of the pinned projects never asked
    assert {q.path for q in r.public.page_requests()} == {"/simple/pcx-shared/"}
    assert {q.path for q in r.public.file_requests()} == {c.shared.pypi_path, c.shared.pypi_path + ".metadata"}
    agents = {q.user_agent for q in torch.log} | {q.user_agent for q in r.public.log}
    assert all((a or "").startswith("pypicached/") for a in agents), agents


def fetch_from(url: str, accept: str = PIP_ACCEPT) -> Any:
    """A response straight from an upstream (not through the proxy), body unread."""
    agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    return agent.request(b"GET", url.encode(), Headers({"Accept": [accept]})).addCallback(Reply)


@ensureDeferred
async def test_the_pytorch_like_index_is_like_the_real_one(catalogue):
    """The fake itself: HTML whatever is asked, absolute links to another host, %2B, metadata, no JSON API."""
    torch = TorchUpstream(catalogue.on_torch)
    served = start_torch_upstream(torch)
    try:
        c = catalogue
        reply = await fetch_from(torch.simple_url)
        listing = await reply.text()
        assert reply.code == 200 and reply.header("Content-Type") == "text/html"
        assert '<a href="/whl/cu124/pcx-torch/">pcx-torch</a>' in listing
        reply = await fetch_from(torch.simple_url + "pcx-torch/")  # PEP 691 JSON preferred: HTML all the same
        page = await reply.text()
        assert reply.header("Content-Type") == "text/html"
        file_url = (
            f"http://127.0.0.2:{urlsplit(torch.files_base).port}/whl/cu124/pcx_torch-2.5.1%2Bcu124-py3-none-any.whl"
        )
        assert (
            f'<a href="{file_url}#sha256={c.torch.sha256}" data-dist-info-metadata="sha256={c.torch.metadata_sha256}"'
            f' data-core-metadata="sha256={c.torch.metadata_sha256}">{c.torch.filename}</a>'
        ) in page
        assert "upload" not in page and "requires-python" not in page
        assert await (await fetch_from(file_url)).content() == c.torch.data
        assert await (await fetch_from(file_url + ".metadata")).content() == c.torch.metadata
        assert (await fetch_from(file_url.replace("%2B", "+"))).code == 404  # an S3 key: "+" is a space
        assert (await fetch_from(torch.index_base + urlsplit(file_url).path)).code == 404  # files live elsewhere
        assert (await fetch_from(torch.index_base + "/pypi/pcx-torch/json")).code == 404
        assert [(q.server, q.host) for q in torch.log if q.server == "files"] == [
            ("files", urlsplit(file_url).netloc)
        ] * 3
        torch.failing = 503
        assert (await fetch_from(torch.simple_url)).code == 503
    finally:
        await served.stop()


# --------------------------------------------------------------------------------------------
# Installers


@pytest.mark.parametrize("installer", ["pip", "uv"])
@ensureDeferred
async def test_installers_get_each_project_from_its_index(two_indexes, installer, tmp_path):
    r = await two_indexes()
    c = r.catalogue
    target = tmp_path / "target"
    args = ["install", "-v", "--target", str(target), TORCH]
    if installer == "pip":
        result = await run_pip(args, r.proxy.index_url, python=tool_bin("pip", "python"), home=tmp_path / "home")
    else:
        result = await run_uv(
            args, r.proxy.index_url, uv=tool_bin("uv"), python=tool_bin("uv", "python"), home=tmp_path / "home"
        )
    result.check()
    assert_installed(target, [c.torch, c.cublas, c.shared])
    assert sorted(p.name for p in target.glob("*.dist-info")) == [
        "pcx_nvidia_cublas_cu12-12.4.5.8.dist-info",
        "pcx_shared-1.0.dist-info",
        "pcx_torch-2.5.1+cu124.dist-info",
    ]
    assert_each_from_its_index(r)


def uv_project_with_explicit_index(path: Path, base_url: str) -> Path:
    path.mkdir(parents=True)
    (path / "pyproject.toml").write_text(
        "[project]\n"
        'name = "indexes-uv"\n'
        'version = "0"\n'
        'requires-python = ">=3.11"\n'
        f'dependencies = ["{TORCH}"]\n'
        "\n[[tool.uv.index]]\n"
        'name = "pytorch"\n'
        f'url = "{base_url}/index/pytorch/simple/"\n'
        "explicit = true\n"
        "\n[[tool.uv.index]]\n"
        'name = "lan"\n'
        f'url = "{base_url}/simple/"\n'
        "default = true\n"
        "\n[tool.uv.sources]\n"
        f'{TORCH} = {{ index = "pytorch" }}\n'
    )
    return path


@ensureDeferred
async def test_uv_with_the_pytorch_index_as_an_explicit_source(two_indexes, tmp_path):
    r = await two_indexes()
    c = r.catalogue
    clients = ClientLog.attach(r.proxy.proxy.site)
    project = uv_project_with_explicit_index(tmp_path / "project", r.proxy.base_url)
    python = tool_bin("uv", "python")
    (await run_uv_project(["lock", "--python", python], cwd=project, uv=tool_bin("uv"), home=tmp_path / "h1")).check()
    lock = (project / "uv.lock").read_text()
    explicit, default = f"{r.proxy.base_url}/index/pytorch/simple/", f"{r.proxy.base_url}/simple/"
    for dist, registry in ((c.torch, explicit), (c.cublas, default), (c.shared, default)):
        assert f'name = "{dist.project}"\nversion = "{dist.version}"\nsource = {{ registry = "{registry}" }}' in lock, (
            lock
        )
        assert f"sha256:{dist.sha256}" in lock
    (await run_uv_project(["sync", "--python", python], cwd=project, uv=tool_bin("uv"), home=tmp_path / "h2")).check()
    assert_installed(site_packages(project / ".venv"), [c.torch, c.cublas, c.shared])

    torch_page = [q for q in clients.requests if q.path == "/index/pytorch/simple/pcx-torch/"]
    assert torch_page and all(q.code == 200 for q in torch_page), torch_page
    assert not [q for q in clients.requests if q.code is None or q.code >= 400]
    assert_each_from_its_index(r)


# --------------------------------------------------------------------------------------------
# Routing, asked directly


@ensureDeferred
async def test_pinned_projects_come_from_their_index_and_the_rest_from_the_first(two_indexes):
    r = await two_indexes()
    c = r.catalogue
    reply, page = await r.page("/simple/pcx-torch/")
    assert reply.header("X-Pypi-Index") == "pytorch" and reply.header("X-Pypi-Cache") == "MISS"
    assert [f["filename"] for f in page["files"]] == [c.torch.filename]  # not the impostor's 99.0
    entry = page["files"][0]
    assert entry["url"].startswith("../../packages/+f/") and entry["url"].endswith("/" + c.torch.filename)
    assert entry["hashes"] == {"sha256": c.torch.sha256}
    assert entry["core-metadata"] == {"sha256": c.torch.metadata_sha256}
    assert "upload-time" not in entry  # the PyTorch index gives none; none is made up

    reply, body = await r.get("/simple/pcx-torch/", HTML_ACCEPT)
    html = body.decode()
    assert reply.header("X-Pypi-Index") == "pytorch" and reply.header("X-Pypi-Cache") == "HIT"
    assert f'data-core-metadata="sha256={c.torch.metadata_sha256}"' in html and f"#sha256={c.torch.sha256}" in html
    assert "http://" not in html and f">{c.torch.filename}</a>" in html

    reply, page = await r.page("/simple/pcx-nvidia-cublas-cu12/")
    assert reply.header("X-Pypi-Index") == "pytorch" and [f["filename"] for f in page["files"]] == [c.cublas.filename]

    reply, page = await r.page("/simple/pcx-shared/")
    assert reply.header("X-Pypi-Index") == "pypi"
    assert [(f["filename"], f["hashes"]["sha256"]) for f in page["files"]] == [(c.shared.filename, c.shared.sha256)]
    reply, body = await r.get("/pypi/pcx-shared/json")
    assert reply.code == 200 and reply.header("X-Pypi-Index") == "pypi"
    assert json.loads(body)["info"]["version"] == "1.0"

    # the pinned index has no JSON API: that is the answer, not a reason to ask the other one
    reply, _ = await r.get("/pypi/pcx-torch/json")
    assert reply.code == 404
    assert r.public_asked_about(TORCH, CUBLAS) == []
    assert not r.torch.about(SHARED)


@ensureDeferred
async def test_a_pinned_project_its_index_lacks_is_a_404_never_looked_up_elsewhere(two_indexes):
    r = await two_indexes()
    for _ in range(2):  # asked again: still its index's answer, now remembered
        reply, body = await r.get("/simple/pcx-nvidia-cudnn-cu12/")
        assert reply.code == 404, body
    assert r.torch.asked() == {("index", r.torch.page_path(CUDNN))}
    reply, _ = await r.get("/pypi/pcx-nvidia-cudnn-cu12/json")
    assert reply.code == 404
    # the public-like index has it (an impostor), and was never asked
    assert r.public_asked_about(CUDNN) == []
    assert r.public.log == []


@ensureDeferred
async def test_index_paths_serve_one_index_alone(two_indexes):
    r = await two_indexes()
    c = r.catalogue
    reply, page = await r.page("/index/pytorch/simple/pcx-shared/")
    assert reply.header("X-Pypi-Index") == "pytorch"
    assert sorted(f["filename"] for f in page["files"]) == sorted([c.shared_newer.filename, c.shared_torch.filename])
    reply, page = await r.page("/index/pypi/simple/pcx-torch/")
    assert reply.header("X-Pypi-Index") == "pypi"
    assert [f["filename"] for f in page["files"]] == [c.impostor(TORCH).filename]
    reply, page = await r.page("/index/pytorch/simple/")
    assert reply.header("X-Pypi-Index") == "pytorch"
    assert sorted(p["name"] for p in page["projects"]) == sorted({d.project for d in c.on_torch})
    reply, _ = await r.get("/index/nothing/simple/pcx-torch/")
    assert reply.code == 404
    reply, _ = await r.get("/index/pytorch/simple/Pcx_Shared/")
    assert reply.code == 301 and reply.header("Location") == "/index/pytorch/simple/pcx-shared/"
    # the page of /simple/pcx-shared/ is the first index's still, cached apart
    reply, page = await r.page("/simple/pcx-shared/")
    assert reply.header("X-Pypi-Index") == "pypi" and [f["filename"] for f in page["files"]] == [c.shared.filename]


@ensureDeferred
async def test_the_project_list_joins_both_indexes(two_indexes):
    r = await two_indexes()
    c = r.catalogue
    reply, page = await r.page("/simple/")
    names = [p["name"] for p in page["projects"]]
    assert reply.header("X-Pypi-Index") == "*"
    # a pinning index offers only its pinned names: pcx-triton, which it has but does not pin,
    # would be a 404 here (no unpinning index has it), so it is not listed
    pinned = {d.project for d in c.on_torch if d.project == "pcx-torch" or d.project.startswith("pcx-nvidia-")}
    assert sorted(names) == sorted({d.project for d in c.on_public} | pinned), names
    assert "pcx-triton" not in names
    reply, body = await r.get("/simple/", HTML_ACCEPT)
    assert reply.code == 200 and reply.header("X-Pypi-Index") == "*"
    assert '<a href="pcx-torch/">' in body.decode() and '<a href="pcx-alpha/">' in body.decode()
    assert r.public.count("/simple/") == 1 and r.torch.asked() == {("index", r.torch.prefix)}
    assert (await r.get("/simple/pcx-triton/"))[0].code == 404


@ensureDeferred
async def test_without_pins_the_first_index_that_has_a_project_serves_it_whole(two_indexes):
    clock = Clock()
    r = await two_indexes(pinned=False, clock=clock)
    c = r.catalogue
    pypi = r.upstream("pypi")

    # the first index failing is not a 404: the second one is not asked instead
    r.public.behaviour["/simple/pcx-triton/"] = ["status:503"]
    reply, body = await r.get("/simple/pcx-triton/")
    assert reply.code in (502, 503) and reply.header("X-Pypi-Cache") == "ERROR", body
    assert pypi.health.is_down
    reply, body = await r.get("/simple/pcx-triton/")
    assert reply.code == 503, body
    assert not r.torch.about(TRITON)

    clock.advance(1)  # the probe finds it answering again
    await until(lambda: not pypi.health.is_down)
    reply, page = await r.page("/simple/pcx-triton/")  # the first says 404: the next one has it
    assert reply.header("X-Pypi-Index") == "pytorch" and [f["filename"] for f in page["files"]] == [c.triton.filename]
    assert r.public.count("/simple/pcx-triton/") == 2  # the 503, then the 404

    # whole: the first index's page alone, never merged with the newer versions of the second
    reply, page = await r.page("/simple/pcx-shared/")
    assert reply.header("X-Pypi-Index") == "pypi" and [f["filename"] for f in page["files"]] == [c.shared.filename]
    reply, page = await r.page("/simple/pcx-torch/")  # what pinning is for
    assert reply.header("X-Pypi-Index") == "pypi"
    assert [f["filename"] for f in page["files"]] == [c.impostor(TORCH).filename]
    assert not r.torch.about(SHARED) and not r.torch.about(TORCH)


# --------------------------------------------------------------------------------------------
# One index failing, the other up


@pytest.mark.parametrize("failure", ["stopped", "5xx"])
@ensureDeferred
async def test_a_pinned_project_is_served_stale_or_refused_while_its_index_fails(two_indexes, failure):
    clock = Clock()
    r = await two_indexes(clock=clock, index_ttl=60)
    c = r.catalogue
    reply, page = await r.page("/simple/pcx-torch/")
    assert reply.header("X-Pypi-Cache") == "MISS" and reply.header("X-Pypi-Index") == "pytorch"
    wheel_path = urljoin("/simple/pcx-torch/", page["files"][0]["url"])
    await r.page("/simple/pcx-shared/")
    if failure == "stopped":
        await r.torch_served.stop()
    else:
        r.torch.failing = 503
    clock.pump([1] * 61)  # a second at a time, as the event loop's heartbeat expects

    reply, body = await r.get("/simple/pcx-torch/")
    assert reply.code == 200, body
    assert reply.header("X-Pypi-Cache") == "STALE" and reply.header("X-Pypi-Index") == "pytorch"
    assert [f["filename"] for f in json.loads(body)["files"]] == [c.torch.filename]
    assert r.upstream("pytorch").health.is_down
    reply, body = await r.get("/simple/pcx-nvidia-cublas-cu12/")  # never seen
    assert reply.code == 503 and reply.header("X-Pypi-Cache") == "ERROR", body
    reply, body = await r.get(wheel_path)  # never downloaded
    assert reply.code == 503, body

    # the other index serves on
    reply, page = await r.page("/simple/pcx-shared/")
    assert reply.header("X-Pypi-Index") == "pypi" and reply.header("X-Pypi-Cache") == "REVALIDATED"
    assert r.public.count("/simple/pcx-shared/") == 2
    # and was never asked for what its failing neighbour pins
    assert r.public_asked_about(TORCH, CUBLAS) == []
    if failure == "5xx":
        assert r.torch.requests("index")[-1].path == r.torch.page_path(TORCH)  # the failed revalidation
        assert not r.torch.requests("files")

    m = samples((await r.get("/metrics"))[1].decode())
    assert m[("pypicached_upstream_up", (("upstream", r.torch.simple_url),))] == 0
    assert m[("pypicached_upstream_up", (("upstream", r.public.simple_url),))] == 1
    reply, body = await r.get("/health")
    health = json.loads(body)
    assert reply.code == 200 and {u["name"]: u["state"] for u in health["upstreams"]} == {
        "pypi": "up",
        "pytorch": "down",
    }
    reply, body = await r.get("/", HTML_ACCEPT)
    status_page = body.decode()
    assert f"Upstream {r.torch.simple_url} is down since" in status_page
    assert f"Upstream {r.public.simple_url} is down" not in status_page
    assert "<td>pytorch</td>" in status_page and '<td class="bad">down</td>' in status_page


# --------------------------------------------------------------------------------------------
# The operator's side


@ensureDeferred
async def test_metrics_health_stats_and_status_page_name_both_indexes(two_indexes):
    r = await two_indexes()
    await r.page("/simple/pcx-torch/")
    await r.page("/simple/pcx-shared/")
    urls = {"pypi": r.public.simple_url, "pytorch": r.torch.simple_url}

    m = samples((await r.get("/metrics"))[1].decode())
    for url in urls.values():
        assert m[("pypicached_upstream_up", (("upstream", url),))] == 1
    reply, body = await r.get("/health")
    health = json.loads(body)
    assert reply.code == 200 and health["status"] == "ok"
    assert [(u["name"], u["url"], u["state"]) for u in health["upstreams"]] == [
        ("pypi", urls["pypi"], "up"),
        ("pytorch", urls["pytorch"], "up"),
    ]
    assert all(u["last_answer"] is not None for u in health["upstreams"])

    reply, body = await r.get("/stats")
    stats = json.loads(body)
    assert [(u["name"], u["url"]) for u in stats["upstreams"]] == list(urls.items())
    # the single-upstream summary names the first index, not the default it was never given
    assert stats["upstream"]["url"] == urls["pypi"]

    reply, body = await r.get("/", HTML_ACCEPT)
    page = body.decode()
    assert reply.code == 200 and 'id="indexes"' in page
    for name, url in urls.items():
        assert f"<td>{name}</td><td><code>{url}</code></td>" in page
    assert DEFAULT_UPSTREAM not in page


def write_config(path: Path, r: Rig, cache_dir: Path) -> Path:
    """The daemon's TOML config for this rig, as an operator would write it."""
    lines = [f'cache_dir = "{cache_dir}"', 'listen = ["tcp:1"]']
    for table in r.tables:
        lines += ["", "[[index]]", f'name = "{table["name"]}"', f'url = "{table["url"]}"']
        if "projects" in table:
            lines.append("projects = [" + ", ".join(f'"{p}"' for p in table["projects"]) + "]")
    path.write_text("\n".join(lines) + "\n")
    return path


async def admin(r: Rig, *args: str, tmp_path: Path) -> Any:
    config = write_config(tmp_path / "pypicached.toml", r, Path(r.proxy.proxy.settings.cache_dir))
    argv = [ADMIN, "--config", str(config), "--url", r.proxy.base_url, *args]
    return await run_process(argv, env=clean_env(tmp_path), timeout=120)


async def download(r: Rig, page_path: str, dist: Dist) -> str:
    path = await r.file_path(page_path, dist.filename)
    reply, body = await r.get(path)
    assert reply.code == 200 and body == dist.data, (path, reply.code)
    await settled(r.proxy, path)
    return path


@ensureDeferred
async def test_admin_stats_purge_and_verify_with_two_indexes(two_indexes, tmp_path):
    r = await two_indexes()
    c = r.catalogue
    torch_path = await download(r, "/simple/pcx-torch/", c.torch)
    await download(r, "/simple/pcx-shared/", c.shared)

    result = (await admin(r, "stats", tmp_path=tmp_path)).check()
    assert "hit ratio" in result.out and DEFAULT_UPSTREAM not in result.out
    for url in (r.public.simple_url, r.torch.simple_url):
        assert url in result.out, result.out
    result = (await admin(r, "stats", "--json", tmp_path=tmp_path)).check()
    assert [u["name"] for u in json.loads(result.out)["upstreams"]] == ["pypi", "pytorch"]

    # purge forgets the project's pages on every index
    await r.page("/index/pytorch/simple/pcx-shared/")
    result = (await admin(r, "purge", "PCX_Shared", tmp_path=tmp_path)).check()
    assert "Purged 2 index page(s) of pcx-shared" in result.out
    for path, name in (("/simple/pcx-shared/", "pypi"), ("/index/pytorch/simple/pcx-shared/", "pytorch")):
        reply, _ = await r.page(path)
        assert reply.header("X-Pypi-Cache") == "MISS" and reply.header("X-Pypi-Index") == name
    assert r.public.count("/simple/pcx-shared/") == 2
    assert len([q for q in r.torch.requests("index") if q.path == r.torch.page_path(SHARED)]) == 2

    # verify checks the PyTorch-like index's file against the sha256 its page published
    cache = Path(r.proxy.proxy.settings.cache_dir)
    damaged = cache / "files" / torch_path.lstrip("/")
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    result = await admin(r, "verify", tmp_path=tmp_path)
    assert result.code == 1, result.output
    assert "Checked 2 files" in result.out and "1 good, 1 bad (deleted)" in result.out
    assert f"BAD {torch_path.lstrip('/')}" in result.out and not damaged.exists()
    reply, body = await r.get(torch_path)  # fetched afresh from its own index
    assert reply.header("X-Pypi-Cache") == "MISS" and body == c.torch.data
    await settled(r.proxy, torch_path)
    assert [q.method for q in r.torch.requests("files") if q.path == r.torch.file_path(c.torch)] == ["GET", "GET"]
    assert "2 good, 0 bad" in (await admin(r, "verify", tmp_path=tmp_path)).check().out


@ensureDeferred
async def test_admin_prefetch_fills_the_cache_from_both_indexes(two_indexes, tmp_path):
    r = await two_indexes()
    c = r.catalogue
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{TORCH}==2.5.1+cu124\n{CUBLAS}==12.4.5.8\n{SHARED}==1.0\n")
    result = (await admin(r, "prefetch", "-r", str(requirements), tmp_path=tmp_path)).check()
    assert "Fetched 3 files" in result.out, result.out
    for dist in (c.torch, c.cublas, c.shared):
        assert f"fetched  {dist.filename}" in result.out
    assert {q.path for q in r.torch.requests("files") if q.is_file} == {
        r.torch.file_path(d) for d in (c.torch, c.cublas)
    }
    assert {q.path for q in r.public.file_requests() if not q.is_metadata} == {c.shared.pypi_path}
    assert r.public_asked_about(TORCH, CUBLAS) == [] and not r.torch.about(SHARED)
    result = (await admin(r, "prefetch", "-r", str(requirements), tmp_path=tmp_path)).check()
    assert "Fetched 0 files" in result.out and "3 (" in result.out


# --------------------------------------------------------------------------------------------
# Files


@ensureDeferred
async def test_plus_and_percent_2b_are_the_same_cached_file(two_indexes):
    r = await two_indexes()
    c = r.catalogue
    plus = await r.file_path("/simple/pcx-torch/", c.torch.filename)
    assert plus.startswith("/packages/+f/") and plus.endswith("/pcx_torch-2.5.1+cu124-py3-none-any.whl")
    encoded = plus.replace("+cu124", "%2Bcu124")
    for suffix, data in (("", c.torch.data), (".metadata", c.torch.metadata)):
        reply, body = await r.get(encoded + suffix)
        assert reply.code == 200 and reply.header("X-Pypi-Cache") == "MISS" and body == data
        await settled(r.proxy, plus + suffix)
        reply, body = await r.get(plus + suffix)
        assert reply.code == 200 and reply.header("X-Pypi-Cache") == "HIT" and body == data
        reply, body = await r.get(encoded + suffix)
        assert reply.header("X-Pypi-Cache") == "HIT" and body == data
    fetched = [q for q in r.torch.requests("files") if q.method == "GET"]
    assert sorted(q.path for q in fetched) == [r.torch.file_path(c.torch), r.torch.file_path(c.torch) + ".metadata"]
    cached = sorted(p.name for p in (Path(r.proxy.proxy.settings.cache_dir) / "files").rglob("pcx_torch-*"))
    assert cached == [c.torch.filename, c.torch.filename + ".metadata"]


@ensureDeferred
async def test_one_file_name_on_two_indexes_is_two_cache_entries(two_indexes):
    r = await two_indexes()
    c = r.catalogue
    assert c.shared.filename == c.shared_torch.filename and c.shared.data != c.shared_torch.data
    paths = {}
    for name, dist in (("pypi", c.shared), ("pytorch", c.shared_torch)):
        page_path = f"/index/{name}/simple/pcx-shared/"
        reply, page = await r.page(page_path)
        entry = next(f for f in page["files"] if f["filename"] == dist.filename)
        assert reply.header("X-Pypi-Index") == name and entry["hashes"]["sha256"] == dist.sha256
        paths[name] = urljoin(page_path, entry["url"])
        reply, body = await r.get(paths[name])
        assert reply.code == 200 and body == dist.data, (name, paths[name], reply.code, body[:200])
        await settled(r.proxy, paths[name])
    assert paths["pypi"] != paths["pytorch"]
    files = Path(r.proxy.proxy.settings.cache_dir) / "files"
    assert sorted(p.read_bytes() for p in files.rglob(c.shared.filename)) == sorted(
        [c.shared.data, c.shared_torch.data]
    )
    for name, dist in (("pypi", c.shared), ("pytorch", c.shared_torch)):
        reply, body = await r.get(paths[name])
        assert reply.header("X-Pypi-Cache") == "HIT" and body == dist.data
    assert [q.path for q in r.public.file_requests()] == [c.shared.pypi_path]
    assert [q.path for q in r.torch.requests("files")] == [r.torch.file_path(c.shared_torch)]


# --------------------------------------------------------------------------------------------
# Configuration


def tables(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": "pypi", "url": "http://127.0.0.1:1/simple/"}, *extra]


TORCH_TABLE = {"name": "pytorch", "url": "http://127.0.0.1:2/whl/cu124/", "projects": PINNED}


@pytest.mark.parametrize(
    "values, problem",
    [
        ({"upstream": "http://127.0.0.1:1/simple/", "index": tables(TORCH_TABLE)}, "upstream and [[index]]"),
        ({"index": tables(dict(TORCH_TABLE, name="pypi"))}, "the name 'pypi' is used twice"),
        ({"index": tables(dict(TORCH_TABLE, name="PyTorch"))}, "'name' must be lower-case letters, digits and '-'"),
        ({"index": tables(dict(TORCH_TABLE, name="py torch"))}, "not 'py torch'"),
        ({"index": tables({"name": "pytorch"})}, "index 'pytorch': 'url' is missing"),
        (
            {"index": tables(dict(TORCH_TABLE, projects=["Torch"]))},
            "'projects' must be a list of normalized project names",
        ),
        (
            {"index": tables(dict(TORCH_TABLE, projects=["nvidia_cudnn_cu12"]))},
            "'projects' must be a list of normalized",
        ),
        ({"index": [dict(TORCH_TABLE, name="a"), dict(TORCH_TABLE, name="b")]}, "every index pins projects"),
        ({"index": tables(dict(TORCH_TABLE, ttl=60))}, "index 'pytorch': unknown setting 'ttl'"),
        (
            {"index": tables(dict(TORCH_TABLE, index_ttl="soon"))},
            "index 'pytorch': index_ttl: expected a number of seconds",
        ),
        ({"index": tables(dict(TORCH_TABLE, url="ftp://127.0.0.1/whl/"))}, "index 'pytorch': url:"),
        ({"index": []}, "expected one or more [[index]] tables"),
    ],
)
def test_config_errors_name_the_problem(values, problem):
    with pytest.raises(ConfigError) as caught:
        build_settings(values, {})
    assert problem in str(caught.value)


def test_a_config_file_with_two_indexes(tmp_path):
    config = tmp_path / "pypicached.toml"
    config.write_text(
        'index_ttl = "10m"\n'
        "\n[[index]]\n"
        'name = "pypi"\n'
        'url = "http://127.0.0.1:1/simple"\n'
        "\n[[index]]\n"
        'name = "pytorch"\n'
        'url = "http://127.0.0.1:2/whl/cu124/"\n'
        'projects = ["pcx-torch", "pcx-nvidia-*"]\n'
        'index_ttl = "1h"\n'
        'stale_if_error = "forever"\n'
    )
    pypi, torch = build_settings(read_toml(str(config)), {}).indexes
    assert (pypi.name, pypi.url, pypi.projects, pypi.index_ttl) == ("pypi", "http://127.0.0.1:1/simple/", (), 600)
    assert (torch.name, torch.url, torch.projects, torch.index_ttl) == (
        "pytorch",
        "http://127.0.0.1:2/whl/cu124/",
        ("pcx-torch", "pcx-nvidia-*"),
        3600,
    )
    assert torch.stale_if_error is None
    assert torch.pins("pcx-nvidia-cublas-cu12") and torch.pins("pcx-torch") and not torch.pins("pcx-torchvision")


def test_the_start_up_log_spells_each_index_as_its_table_does(tmp_path):
    tables = [
        {"name": "pypi", "url": "http://127.0.0.1:1/simple/"},
        {
            "name": "pytorch",
            "url": "http://127.0.0.1:2/whl/",
            "projects": ["pcx-torch"],
            "index_ttl": "1h",
            "deny": ["pcx-torch==1.0"],
        },
    ]
    settings = build_settings({"index_ttl": "10m", "index": tables}, {})
    shown = settings.effective()
    assert shown["index"] == [
        {"name": "pypi", "url": "http://127.0.0.1:1/simple/"},
        {
            "name": "pytorch",
            "url": "http://127.0.0.1:2/whl/",
            "projects": ["pcx-torch"],
            "index_ttl": 3600,
            "deny": ["pcx-torch==1.0"],
        },
    ]
    assert shown["index_ttl"] == 600 and shown["deny"] == []
    assert build_settings({}, {}).effective()["index"] == []  # the plain upstream is no table
