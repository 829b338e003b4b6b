"""The installer compatibility matrix: pip (current and 23.x), uv, poetry and pdm through the proxy.

Each installer runs from its own virtual environment (``make tools`` builds them from
``tests/installer-pins/``), as a child process, isolated from this machine's configuration
(see ``tests/installers.py``), against a fake upstream on 127.0.0.1.  Each test asserts that
the installer succeeded and installed the exact bytes the upstream published, what the installer
asked the proxy (``ClientLog``: metadata files, ranges, ``If-Range``, ``Cache-Control``) and
how the proxy answered, and that the upstream saw each page and file once, from the proxy
only.  Then the upstream is stopped and the installer repeats its work with an empty client
cache: everything must come from the proxy's cache (``X-Pypi-Cache: HIT``).
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
import pytest
from pytest_twisted import ensureDeferred
from twisted.internet.defer import ensureDeferred as as_deferred
from twisted.internet.defer import gatherResults

from .fake_upstream import FakeUpstream
from .installers import Result, run_pdm, run_pip, run_poetry, run_uv, run_uv_project, tool_bin
from .observe import ClientLog, CuttingRelay
from .projects import REQUIREMENTS, assert_installed, pdm_project, poetry_project, site_packages, uv_project
from .wheels import Dist, build_wheel

# The wheels REQUIREMENTS brings.
WHEELS = {"pcx_alpha-2.0-py3-none-any.whl", "pcx_beta-0.1-py3-none-any.whl", "pcx_big-1.0-py3-none-any.whl"}
PAGES = {"/simple/pcx-alpha/", "/simple/pcx-beta/", "/simple/pcx-big/"}
SMALL = {"pcx_alpha-2.0-py3-none-any.whl", "pcx_beta-0.1-py3-none-any.whl"}  # under 10 kB
BIG = "pcx_big-1.0-py3-none-any.whl"
# uv's message when a server does not honour range requests (it then downloads whole wheels).
RANGE_FALLBACK = re.compile(r"range requests (are )?(not supported|unsupported)", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# The rig: one fake upstream, one proxy, and the log of what clients asked the proxy.


@attrs.define
class Rig:
    upstream: FakeUpstream
    served: Any
    proxy: Any
    clients: ClientLog
    dists: dict[str, Dist]  # filename -> dist, everything the upstream publishes

    @property
    def index_url(self) -> str:
        return self.proxy.index_url

    async def stop_upstream(self) -> None:
        await self.served.stop()
        self.clients.mark("warm")


@pytest.fixture
def rig(serve_upstream, start_proxy):
    async def make(flavour: str = "json", extra: Iterable[tuple[Dist, datetime.datetime]] = (), **options: Any) -> Rig:
        served = serve_upstream(flavour, **options)
        for dist, uploaded in extra:
            served.upstream.add(dist, upload_time=uploaded)
        proxy = await start_proxy(served.simple_url)
        clients = ClientLog.attach(proxy.proxy.site)
        published = {d.filename: d for d in served.upstream.published()}
        return Rig(served.upstream, served, proxy, clients, published)

    return make


class Tools:
    """The installers' executables, looked up when a test first uses one.

    A missing installer environment makes the test that needs it fail (``MissingTool`` is an
    AssertionError naming ``make tools``), never skip.
    """

    def __getitem__(self, name: str) -> str:
        if name == "uv-python":
            return tool_bin("uv", "python")
        if name in ("pip", "pip-23"):
            return tool_bin(name, "python")  # run as `python -m pip`
        return tool_bin(name)


@pytest.fixture
def tools() -> Tools:
    return Tools()


# --------------------------------------------------------------------------------------------
# Assertions


def assert_upstream_once(
    upstream: FakeUpstream,
    *,
    files: set[str],
    metadata: frozenset[str] = frozenset(),
    pages: set[str] = PAGES,
    json_api: frozenset[str] = frozenset(),
) -> None:
    """The upstream saw exactly these requests, each once, whole (no ranges), from the proxy."""
    log = upstream.log
    counts = Counter((r.method, r.path) for r in log)
    assert all(n == 1 for n in counts.values()), f"fetched more than once: {counts}"
    assert all(r.method == "GET" and r.range is None for r in log), [(r.method, r.path, r.range) for r in log]
    agents = {r.user_agent for r in log}
    assert all((a or "").startswith("pypicached/") for a in agents), f"something else reached the upstream: {agents}"
    got_files = {r.path.rsplit("/", 1)[-1] for r in log if r.is_file and not r.is_metadata}
    got_metadata = {r.path.rsplit("/", 1)[-1].removesuffix(".metadata") for r in log if r.is_metadata}
    got_pages = {r.path for r in log if r.path.startswith("/simple/")}
    got_json = {r.path for r in log if r.path.startswith("/pypi/")}
    assert (got_files, got_metadata, got_pages, got_json) == (files, metadata, pages, json_api)


def assert_whole_files_served(rig: Rig, agent: str, filenames: Iterable[str], *, since: str | None = None) -> None:
    """Each file went to the installer in full, through the proxy: a finished 200 of its size."""
    for name in filenames:
        size = rig.dists[name].size
        whole = [
            r
            for r in rig.clients.for_file(name, since=since)
            if r.user_agent.startswith(agent) and r.method == "GET" and r.range is None
        ]
        assert any(r.code == 200 and r.finished and r.sent == size for r in whole), (name, whole)


def assert_no_errors(rig: Rig, *, since: str | None = None) -> None:
    pool = rig.clients.since(since) if since else rig.clients.requests
    bad = [r for r in pool if r.code is None or r.code >= 400]
    assert not bad, bad


def assert_all_hits(rig: Rig) -> None:
    """After the upstream was stopped: every answer came from the cache, none failed."""
    warm = rig.clients.since("warm")
    assert warm, "nothing was asked of the proxy after the upstream stopped"
    assert_no_errors(rig, since="warm")
    assert {r.cache for r in warm} == {"HIT"}, [(r.method, r.path, r.code, r.cache) for r in warm]


def check(result: Result) -> Result:
    return result.check()


def wanted(rig: Rig, names: Iterable[str] = WHEELS) -> list[Dist]:
    return [rig.dists[n] for n in sorted(names)]


# --------------------------------------------------------------------------------------------
# pip, current release


@ensureDeferred
async def test_pip_install_and_download_use_pep658_metadata(rig, tools, tmp_path):
    r = await rig("json")

    async def both(phase: str) -> None:
        dl = tmp_path / phase / "dl"
        result = check(
            await run_pip(
                ["download", "-v", "-d", str(dl), *REQUIREMENTS],
                r.index_url,
                python=tools["pip"],
                home=tmp_path / phase / "h1",
            )
        )
        assert {p.name for p in dl.iterdir()} == WHEELS
        assert all((dl / n).read_bytes() == r.dists[n].data for n in WHEELS)
        # pip -v names each metadata file it read instead of the wheel
        for name in WHEELS:
            assert re.search(
                rf"Obtaining dependency information for \S+ "
                rf"from {re.escape(r.proxy.base_url)}/\S+/{re.escape(name)}\.metadata",
                result.output,
            ), name
        target = tmp_path / phase / "target"
        check(
            await run_pip(
                ["install", "-v", "--target", str(target), *REQUIREMENTS],
                r.index_url,
                python=tools["pip"],
                home=tmp_path / phase / "h2",
            )
        )
        assert_installed(target, wanted(r))

    await both("cold")
    for name in WHEELS:
        assert [m.code for m in r.clients.matching(lambda q, name=name: q.path.endswith(f"/{name}.metadata"))] == [
            200,
            200,
        ]
    assert_whole_files_served(r, "pip/26.", WHEELS)
    assert_no_errors(r)
    assert_upstream_once(r.upstream, files=WHEELS, metadata=WHEELS)

    await r.stop_upstream()
    await both("warm")
    assert_whole_files_served(r, "pip/26.", WHEELS, since="warm")
    assert_all_hits(r)


@ensureDeferred
async def test_pip_resumes_a_download_the_proxy_dropped(rig, tools, tmp_path):
    r = await rig("json")
    big = r.dists[BIG]

    async def cut_and_resume(phase: str) -> tuple[int, Result]:
        relay = CuttingRelay("127.0.0.1", r.proxy.port_number, target=BIG, cut_after=1024 * 1024)
        port = relay.listen()
        try:
            dl = tmp_path / phase
            result = check(
                await run_pip(
                    ["download", "-v", "--resume-retries", "3", "-d", str(dl), "pcx-big"],
                    f"http://127.0.0.1:{port}/simple/",
                    python=tools["pip"],
                    home=tmp_path / f"{phase}-home",
                )
            )
        finally:
            await relay.stop()
        assert relay.cut.called, "the relay never cut the download"
        assert (dl / BIG).read_bytes() == big.data
        assert "Attempting to resume incomplete download" in result.output
        assert re.search(r"Resuming download \S*pcx_big-1\.0-py3-none-any\.whl", result.output), result.output
        return len(r.clients.requests), result

    await cut_and_resume("cold")
    first, resumed = r.clients.for_file(BIG)
    # the cut request: a whole GET that the client did not see finish
    assert first.method == "GET" and first.range is None and not first.finished and first.etag
    # the resume: Range from where the cut left it, If-Range with the validator pip was given
    m = re.fullmatch(r"bytes=(\d+)-", resumed.range or "")
    assert m, resumed
    offset = int(m.group(1))
    assert 0 < offset < big.size
    assert resumed.header("if-range") == first.etag
    assert resumed.code == 206 and resumed.finished
    assert resumed.content_range == f"bytes {offset}-{big.size - 1}/{big.size}"
    assert resumed.sent == big.size - offset
    assert_upstream_once(r.upstream, files={BIG}, metadata={BIG}, pages={"/simple/pcx-big/"})

    await r.stop_upstream()
    await cut_and_resume("warm")
    warm_first, warm_resumed = r.clients.for_file(BIG, since="warm")
    assert not warm_first.finished and warm_resumed.code == 206 and warm_resumed.header("if-range") == warm_first.etag
    assert {q.cache for q in r.clients.since("warm")} == {"HIT"}


@ensureDeferred
async def test_pip_fast_deps_reads_wheels_with_head_and_ranges(rig, tools, tmp_path):
    # The plain HTML index has no PEP 658 metadata: fast-deps must read each wheel's tail.
    r = await rig("html")

    async def run(phase: str) -> None:
        dl = tmp_path / phase
        result = check(
            await run_pip(
                ["download", "-v", "--use-feature=fast-deps", "-d", str(dl), *REQUIREMENTS],
                r.index_url,
                python=tools["pip"],
                home=tmp_path / f"{phase}-home",
            )
        )
        assert "lazily downloaded wheels using HTTP range requests" in result.output
        assert not re.search(r"range requests? (is |are )?not supported", result.output, re.IGNORECASE)
        assert all((dl / n).read_bytes() == r.dists[n].data for n in WHEELS)

    await run("cold")
    for name in WHEELS:
        asked = r.clients.for_file(name)
        heads = [q for q in asked if q.method == "HEAD"]
        ranged = [q for q in asked if q.method == "GET" and q.range]
        assert heads and all(q.code == 200 and q.sent == 0 for q in heads), asked
        assert ranged and all(q.code == 206 and q.content_range for q in ranged), asked
    # on the 3 MiB wheel, the ranges are the central directory's: a small part of the file
    big_ranges = [q for q in r.clients.for_file(BIG) if q.range]
    assert sum(q.sent for q in big_ranges) < r.dists[BIG].size // 10, big_ranges
    assert not r.clients.matching(lambda q: q.path.endswith(".metadata"))
    assert_whole_files_served(r, "pip/26.", WHEELS)
    assert_no_errors(r)
    assert_upstream_once(r.upstream, files=WHEELS)

    await r.stop_upstream()
    await run("warm")
    assert_all_hits(r)


# --------------------------------------------------------------------------------------------
# pip 23.x: Cache-Control: max-age=0 on every index request


@ensureDeferred
async def test_pip_23_max_age_0_is_served_from_the_cache(rig, tools, tmp_path):
    r = await rig("json")
    for run_number in (1, 2):
        dl = tmp_path / f"dl{run_number}"
        check(
            await run_pip(
                ["download", "-d", str(dl), *REQUIREMENTS],
                r.index_url,
                python=tools["pip-23"],
                home=tmp_path / f"h{run_number}",
            )
        )
        assert all((dl / n).read_bytes() == r.dists[n].data for n in WHEELS)
    target = tmp_path / "target"
    check(
        await run_pip(
            ["install", "--target", str(target), *REQUIREMENTS],
            r.index_url,
            python=tools["pip-23"],
            home=tmp_path / "h3",
        )
    )
    assert_installed(target, wanted(r))

    pages = r.clients.matching(lambda q: q.is_page)
    assert len(pages) == 9 and all(q.user_agent.startswith("pip/23.") for q in pages)
    assert all(q.header("cache-control") == "max-age=0" for q in pages), [q.headers for q in pages]
    # one upstream fetch per page; the other two runs' max-age=0 requests were cache hits
    assert Counter(q.cache for q in pages) == {"MISS": 3, "HIT": 6}
    assert_whole_files_served(r, "pip/23.", WHEELS)
    assert_no_errors(r)
    assert_upstream_once(r.upstream, files=WHEELS, metadata=WHEELS)

    await r.stop_upstream()
    warm = tmp_path / "warm"
    check(
        await run_pip(
            ["install", "--target", str(warm), *REQUIREMENTS], r.index_url, python=tools["pip-23"], home=tmp_path / "h4"
        )
    )
    assert_installed(warm, wanted(r))
    assert_all_hits(r)


# --------------------------------------------------------------------------------------------
# uv


async def uv_install_and_lock(r: Rig, tools: Tools, base: Path, *extra: str) -> tuple[Result, Result, str]:
    target = base / "target"
    install = check(
        await run_uv(
            ["install", "-v", "--target", str(target), *extra, *REQUIREMENTS],
            r.index_url,
            uv=tools["uv"],
            python=tools["uv-python"],
            home=base / "h1",
        )
    )
    assert_installed(target, wanted(r))
    project = uv_project(base / "project", r.index_url)
    lock = check(
        await run_uv_project(
            ["lock", "-v", "--python", tools["uv-python"], *extra], cwd=project, uv=tools["uv"], home=base / "h2"
        )
    )
    text = (project / "uv.lock").read_text()
    for dist in wanted(r):
        assert (
            f'name = "{dist.project}"\nversion = "{dist.version}"\nsource = {{ registry = "{r.index_url}" }}' in text
        ), text
        assert f"sha256:{dist.sha256}" in text
    return install, lock, text


@ensureDeferred
async def test_uv_pip_install_and_lock_with_pep658_metadata(rig, tools, tmp_path):
    r = await rig("json")
    _, _, cold_lock = await uv_install_and_lock(r, tools, tmp_path / "cold")
    for name in WHEELS:
        meta = r.clients.matching(lambda q, name=name: q.path.endswith(f"/{name}.metadata"))
        assert [q.code for q in meta] == [200, 200], meta  # uv pip install, then uv lock
    # with metadata, uv needs neither HEAD nor ranges on the wheels
    assert not r.clients.matching(lambda q: q.method == "HEAD" or q.range is not None)
    assert_whole_files_served(r, "uv/", WHEELS)
    assert_no_errors(r)
    assert_upstream_once(r.upstream, files=WHEELS, metadata=WHEELS)

    await r.stop_upstream()
    _, _, warm_lock = await uv_install_and_lock(r, tools, tmp_path / "warm")
    assert warm_lock == cold_lock
    assert_all_hits(r)


@ensureDeferred
async def test_uv_without_pep658_metadata_reads_wheels_with_head_and_ranges(rig, tools, tmp_path):
    r = await rig("json", core_metadata=False)
    for phase in ("cold", "warm"):
        if phase == "warm":
            await r.stop_upstream()
        install, lock, _ = await uv_install_and_lock(r, tools, tmp_path / phase)
        for result in (install, lock):
            assert not RANGE_FALLBACK.search(result.output), RANGE_FALLBACK.search(result.output)
        for name in WHEELS:
            asked = r.clients.for_file(name, since="warm" if phase == "warm" else None)
            heads = [q for q in asked if q.method == "HEAD"]
            ranged = [q for q in asked if q.method == "GET" and q.range]
            # HEAD (Accept-Ranges, Content-Length) then closed ranges, both by install and lock
            assert len(heads) == 2 and all(q.code == 200 for q in heads), asked
            assert len(ranged) >= 2 and all(re.fullmatch(r"bytes=\d+-\d+", q.range) for q in ranged), asked
            assert all(q.code == 206 and q.content_range for q in ranged), asked
        assert not r.clients.matching(lambda q: q.path.endswith(".metadata"))
    big_ranges = [q for q in r.clients.for_file(BIG) if q.range]
    assert sum(q.sent for q in big_ranges) < r.dists[BIG].size // 10, big_ranges
    assert_whole_files_served(r, "uv/", WHEELS)
    assert_upstream_once(r.upstream, files=WHEELS)
    assert_all_hits(r)


@ensureDeferred
async def test_uv_exclude_newer_uses_the_upload_times(rig, tools, tmp_path):
    later = build_wheel("pcx-alpha", "3.0", requires_python=">=3.8")
    r = await rig("json", extra=[(later, datetime.datetime(2025, 6, 1, tzinfo=datetime.UTC))])
    cutoff = "2025-01-01T00:00:00Z"

    async def install(where: Path, *extra: str) -> Result:
        return check(
            await run_uv(
                ["install", "--target", str(where), *extra, "pcx-alpha"],
                r.index_url,
                uv=tools["uv"],
                python=tools["uv-python"],
                home=where.with_name(where.name + "-home"),
            )
        )

    # both at once: one proxy, two uv processes
    await gatherResults(
        [
            as_deferred(install(tmp_path / "newest")),
            as_deferred(install(tmp_path / "before", "--exclude-newer", cutoff)),
        ]
    )
    assert_installed(tmp_path / "newest", [later])
    assert_installed(tmp_path / "before", [r.dists["pcx_alpha-2.0-py3-none-any.whl"]])
    project = uv_project(tmp_path / "project", r.index_url, ["pcx-alpha"])
    check(
        await run_uv_project(
            ["lock", "--exclude-newer", cutoff, "--python", tools["uv-python"]],
            cwd=project,
            uv=tools["uv"],
            home=tmp_path / "lock-home",
        )
    )
    lock = (project / "uv.lock").read_text()
    assert 'name = "pcx-alpha"\nversion = "2.0"' in lock and 'version = "3.0"' not in lock
    assert 'upload-time = "2024-01-02T03:' in lock  # uv read the upload times through the proxy
    assert_no_errors(r)
    both = {"pcx_alpha-2.0-py3-none-any.whl", later.filename}
    assert_upstream_once(r.upstream, files=both, metadata=both, pages={"/simple/pcx-alpha/"})

    await r.stop_upstream()
    await install(tmp_path / "warm", "--exclude-newer", cutoff)
    assert_installed(tmp_path / "warm", [r.dists["pcx_alpha-2.0-py3-none-any.whl"]])
    assert_all_hits(r)


# --------------------------------------------------------------------------------------------
# poetry


@ensureDeferred
async def test_poetry_lock_and_install_with_a_primary_source(rig, tools, tmp_path):
    # PEP 658 metadata for the big wheel only: poetry reads the small ones with a suffix range.
    r = await rig("json", core_metadata=lambda dist: dist.filename == BIG)
    assert all(r.dists[n].size < 10_000 for n in SMALL)

    async def lock_and_install(phase: str) -> str:
        project = poetry_project(tmp_path / phase, r.index_url)
        env = {"POETRY_VIRTUALENVS_USE_POETRY_PYTHON": "true"}
        check(
            await run_poetry(
                ["lock", "-v"], cwd=project, poetry=tools["poetry"], home=tmp_path / f"{phase}-h1", env_extra=env
            )
        )
        # a fresh poetry cache for the install: every wheel must come from the proxy again
        check(
            await run_poetry(
                ["install", "-v"], cwd=project, poetry=tools["poetry"], home=tmp_path / f"{phase}-h2", env_extra=env
            )
        )
        assert_installed(site_packages(project / ".venv"), wanted(r))
        text = (project / "poetry.lock").read_text()
        assert text.count(f'url = "{r.index_url.rstrip("/")}"\nreference = "lan"') == 3, text
        for dist in wanted(r):
            assert f'"{dist.filename}", hash = "sha256:{dist.sha256}"' in text
        return text

    cold_lock = await lock_and_install("cold")
    for name in SMALL:
        size = r.dists[name].size
        suffix = [q for q in r.clients.for_file(name) if q.range]
        assert [q.range for q in suffix] == ["bytes=-10000"], suffix
        assert (
            suffix[0].code == 206 and suffix[0].content_range == f"bytes 0-{size - 1}/{size}" and suffix[0].sent == size
        )
    assert [q.code for q in r.clients.matching(lambda q: q.path.endswith(f"/{BIG}.metadata"))] == [200]
    assert not [q for q in r.clients.for_file(BIG) if q.range]
    assert_whole_files_served(r, "poetry/", WHEELS)
    assert_no_errors(r)
    assert_upstream_once(r.upstream, files=WHEELS, metadata={BIG})

    await r.stop_upstream()
    assert await lock_and_install("warm") == cold_lock
    assert [q.range for q in r.clients.for_file("pcx_beta-0.1-py3-none-any.whl", since="warm") if q.range] == [
        "bytes=-10000"
    ]
    assert_all_hits(r)


# --------------------------------------------------------------------------------------------
# pdm


async def pdm_lock_and_install(r: Rig, tools: Tools, base: Path, env: dict[str, str]) -> str:
    project = pdm_project(base, r.index_url)
    check(
        await run_pdm(
            ["lock", "-v"], cwd=project, pdm=tools["pdm"], home=base.with_name(base.name + "-h1"), env_extra=env
        )
    )
    check(
        await run_pdm(
            ["install", "-v"], cwd=project, pdm=tools["pdm"], home=base.with_name(base.name + "-h2"), env_extra=env
        )
    )
    assert_installed(site_packages(project / ".venv"), wanted(r))
    text = (project / "pdm.lock").read_text()
    for dist in wanted(r):
        assert f'name = "{dist.project}"\nversion = "{dist.version}"' in text, text
        assert f"sha256:{dist.sha256}" in text
    return text


@ensureDeferred
async def test_pdm_lock_and_install_with_the_proxy_as_only_source(rig, tools, tmp_path):
    r = await rig("json")
    cold_lock = await pdm_lock_and_install(r, tools, tmp_path / "cold", {})
    assert [q.code for q in r.clients.matching(lambda q: q.path.endswith(".metadata"))] == [200] * 3
    assert not r.clients.matching(lambda q: q.path.startswith("/pypi/"))
    assert_whole_files_served(r, "pdm/", WHEELS)
    assert_no_errors(r)
    assert_upstream_once(r.upstream, files=WHEELS, metadata=WHEELS)

    await r.stop_upstream()
    assert await pdm_lock_and_install(r, tools, tmp_path / "warm", {}) == cold_lock
    assert_all_hits(r)


@ensureDeferred
async def test_pdm_json_api_mode(rig, tools, tmp_path):
    r = await rig("json")
    env = {"PDM_PYPI_JSON_API": "true"}
    cold_lock = await pdm_lock_and_install(r, tools, tmp_path / "cold", env)
    json_api = {f"/pypi/{d.project}/{d.version}/json" for d in wanted(r)}
    asked = r.clients.matching(lambda q: q.path.startswith("/pypi/"))
    assert {q.path for q in asked} == json_api and all(q.code == 200 for q in asked), asked
    assert_whole_files_served(r, "pdm/", WHEELS)
    assert_no_errors(r)
    assert_upstream_once(r.upstream, files=WHEELS, json_api=json_api)

    await r.stop_upstream()
    assert await pdm_lock_and_install(r, tools, tmp_path / "warm", env) == cold_lock
    assert {q.path for q in r.clients.since("warm") if q.path.startswith("/pypi/")} == json_api
    assert_all_hits(r)


# --------------------------------------------------------------------------------------------
# Everyone at once


@ensureDeferred
async def test_every_installer_at_once_then_from_the_warm_cache(rig, tools, tmp_path):
    """A CI farm's morning: every tool on a cold cache at the same time, then the upstream dies."""
    r = await rig("json")

    async def pip(python: str, base: Path) -> None:
        check(
            await run_pip(
                ["install", "--target", str(base / "t"), *REQUIREMENTS], r.index_url, python=python, home=base / "h"
            )
        )
        assert_installed(base / "t", wanted(r))

    async def uv(base: Path) -> None:
        await uv_install_and_lock(r, tools, base)

    async def poetry(base: Path) -> None:
        project = poetry_project(base / "project", r.index_url)
        env = {"POETRY_VIRTUALENVS_USE_POETRY_PYTHON": "true"}
        check(await run_poetry(["lock"], cwd=project, poetry=tools["poetry"], home=base / "h1", env_extra=env))
        check(await run_poetry(["install"], cwd=project, poetry=tools["poetry"], home=base / "h2", env_extra=env))
        assert_installed(site_packages(project / ".venv"), wanted(r))

    async def everyone(phase: str) -> None:
        base = tmp_path / phase
        await gatherResults(
            [
                as_deferred(pip(tools["pip"], base / "pip")),
                as_deferred(pip(tools["pip-23"], base / "pip-23")),
                as_deferred(uv(base / "uv")),
                as_deferred(poetry(base / "poetry")),
                as_deferred(pdm_lock_and_install(r, tools, base / "pdm", {})),
            ],
            consumeErrors=True,
        )

    await everyone("cold")
    for agent in ("pip/26.", "pip/23.", "uv/", "poetry/", "pdm/"):
        assert_whole_files_served(r, agent, WHEELS)
    assert_no_errors(r)
    # however many clients asked at once, one upstream fetch per page and file
    assert_upstream_once(r.upstream, files=WHEELS, metadata=WHEELS)

    await r.stop_upstream()
    await everyone("warm")
    for agent in ("pip/26.", "pip/23.", "uv/", "poetry/", "pdm/"):
        assert_whole_files_served(r, agent, WHEELS, since="warm")
    assert_all_hits(r)
