"""
The supply-chain policy as real installers meet it (issue #13): a fake JSON upstream whose
``pcx-cool`` 1.0 is a month old and 2.0 an hour old, behind a proxy with
``min_release_age = 7 days``; pip, uv and poetry resolve to 1.0, a pin on 2.0 finds nothing,
and neither the installers nor a direct request get the new file out of the proxy.

The upload times are real wall-clock times: the loopback proxy judges them by the real
reactor's clock.  Each test asserts, from the fake upstream's and the proxy's request logs,
that the held-back files never crossed either link, not only what the installer said.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from pytest_twisted import ensureDeferred

from pypicached.policy.rules import deny_list

from .fake_upstream import PIP_ACCEPT, FakeUpstream
from .installers import Result, run_pip, run_poetry, run_uv, tool_bin
from .observe import ClientLog
from .projects import assert_installed, poetry_project
from .wheels import Dist, build_wheel

DAY = 86400
WEEK = 7 * DAY

COOL_OLD = build_wheel("pcx-cool", "1.0", requires_dist=["pcx-dep"])
COOL_NEW = build_wheel("pcx-cool", "2.0", requires_dist=["pcx-dep"])
DEP_OLD = build_wheel("pcx-dep", "1.0")
DEP_NEW = build_wheel("pcx-dep", "1.1")  # also too young: the rule holds for dependencies too
OLD = (COOL_OLD, DEP_OLD)
NEW = (COOL_NEW, DEP_NEW)


@attrs.define
class Rig:
    upstream: FakeUpstream
    proxy: Any
    clients: ClientLog

    @property
    def index_url(self) -> str:
        return self.proxy.index_url


@pytest.fixture
def rig(serve_upstream, start_proxy):
    """A fake JSON upstream with a month-old and an hour-old release of each project, and a proxy before it."""

    async def make(**settings: Any) -> Rig:
        served = serve_upstream("json", {})
        now = datetime.datetime.now(datetime.UTC)
        for dist in OLD:
            served.upstream.add(dist, upload_time=now - datetime.timedelta(days=30))
        for dist in NEW:
            served.upstream.add(dist, upload_time=now - datetime.timedelta(hours=1))
        proxy = await start_proxy(served.simple_url, min_release_age=float(WEEK), **settings)
        return Rig(served.upstream, proxy, ClientLog.attach(proxy.proxy.site))

    return make


def assert_never_fetched(r: Rig, dists: tuple[Dist, ...] = NEW) -> None:
    """Neither the files nor their metadata crossed the upstream link, and the proxy refused every request for them."""
    names = {d.filename for d in dists}
    upstream = [
        q.path for q in r.upstream.log if q.is_file and q.path.rsplit("/", 1)[-1].removesuffix(".metadata") in names
    ]
    assert upstream == [], upstream
    not_refused = [
        (q.method, q.path, q.code)
        for q in r.clients.requests
        if q.is_file and q.filename.removesuffix(".metadata") in names and q.code != 403
    ]
    assert not_refused == [], not_refused


def assert_only_installed(site: Path, dists: tuple[Dist, ...]) -> None:
    """Exactly these dists are installed in ``site``, byte for byte."""
    assert_installed(site, dists)
    expected = sorted(f"{d.filename.split('-')[0]}-{d.version}.dist-info" for d in dists)
    assert sorted(p.name for p in site.glob("*.dist-info")) == expected


async def pip(r: Rig, tmp_path: Path, *requirements: str) -> Result:
    target = tmp_path / "target"
    return await run_pip(
        ["install", "--target", str(target), *requirements],
        r.index_url,
        python=tool_bin("pip", "python"),
        home=tmp_path / "pip-home",
    )


async def get(r: Rig, dist: Dist, suffix: str = "") -> tuple[int, str | None, str]:
    """A direct request for a file (as a lock file or a pinned URL would make it) to the proxy."""
    reply = await r.proxy.get(dist.pypi_path + suffix)
    return reply.code, reply.header("X-Pypi-Cache"), await reply.text()


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("installer", ["pip", "uv", "poetry"])
@ensureDeferred
async def test_installers_resolve_to_the_release_that_came_of_age(rig, installer, tmp_path):
    r = await rig()
    if installer == "pip":
        (await pip(r, tmp_path, "pcx-cool")).check()
        assert_only_installed(tmp_path / "target", OLD)
    elif installer == "uv":
        target = tmp_path / "target"
        (
            await run_uv(
                ["install", "--target", str(target), "pcx-cool"],
                r.index_url,
                uv=tool_bin("uv"),
                python=tool_bin("uv", "python"),
                home=tmp_path / "uv-home",
            )
        ).check()
        assert_only_installed(target, OLD)
    else:
        project = poetry_project(tmp_path / "project", r.index_url, ["pcx-cool"])
        (
            await run_poetry(
                ["lock"],
                cwd=project,
                poetry=tool_bin("poetry"),
                home=tmp_path / "poetry-home",
                env_extra={"POETRY_VIRTUALENVS_USE_POETRY_PYTHON": "true"},
            )
        ).check()
        lock = (project / "poetry.lock").read_text()
        for dist in OLD:
            assert f'name = "{dist.project}"\nversion = "{dist.version}"' in lock, lock
            assert f'"{dist.filename}", hash = "sha256:{dist.sha256}"' in lock
        for dist in NEW:
            assert dist.filename not in lock and dist.sha256 not in lock, lock
    assert_never_fetched(r)
    # the installer did go through the proxy, and the proxy through the upstream, for both projects
    assert {q.path for q in r.upstream.log if q.path.startswith("/simple/")} == {
        "/simple/pcx-cool/",
        "/simple/pcx-dep/",
    }
    pages = [q for q in r.clients.requests if q.is_page]
    assert pages and all(q.code == 200 for q in pages), [(q.path, q.code) for q in pages]


@ensureDeferred
async def test_a_pin_on_the_new_release_finds_nothing_and_its_file_is_refused(rig, tmp_path):
    r = await rig()
    # Before any page is cached: the proxy fetches the page that links the file, then refuses it.
    for suffix in ("", ".metadata"):
        code, cache, body = await get(r, COOL_NEW, suffix)
        assert (code, cache) == (403, "DENIED"), (code, cache, body)
        assert body.count("\n") == 1 and "min_release_age" in body and COOL_NEW.filename in body, body

    result = await pip(r, tmp_path, "pcx-cool==2.0")
    assert result.code != 0, result.output
    assert "No matching distribution found for pcx-cool==2.0" in result.output, result.output
    assert "(from versions: 1.0)" in result.output, result.output  # pip saw the old release only
    assert not (tmp_path / "target").exists() or not list((tmp_path / "target").iterdir())

    # The page as installers see it lists 1.0 alone; the cached page still knows 2.0.
    reply = await r.proxy.get("/simple/pcx-cool/", {"Accept": PIP_ACCEPT})
    page = json.loads(await reply.content())
    assert reply.code == 200 and page["versions"] == ["1.0"], page
    assert [f["filename"] for f in page["files"]] == [COOL_OLD.filename]
    code, cache, body = await get(r, COOL_NEW)
    assert (code, cache) == (403, "DENIED") and "min_release_age" in body, (code, cache, body)
    assert_never_fetched(r)
    assert [q.code for q in r.clients.for_file(COOL_NEW.filename)] == [403, 403]


@ensureDeferred
async def test_an_exempt_project_gets_its_new_release_and_its_dependency_still_waits(rig, tmp_path):
    r = await rig(min_release_age_exempt=("pcx-cool",))
    (await pip(r, tmp_path, "pcx-cool")).check()
    assert_only_installed(tmp_path / "target", (COOL_NEW, DEP_OLD))
    assert [q.code for q in r.clients.for_file(COOL_NEW.filename)] == [200]
    assert [q.path for q in r.upstream.file_requests() if q.path == COOL_NEW.pypi_path] == [COOL_NEW.pypi_path]
    assert_never_fetched(r, (DEP_NEW,))


@ensureDeferred
async def test_denied_old_release_and_young_new_one_leave_nothing_to_install(rig, tmp_path):
    r = await rig(deny=deny_list(["pcx-cool==1.0"]))
    result = await pip(r, tmp_path, "pcx-cool")
    assert result.code != 0, result.output
    assert "No matching distribution found for pcx-cool" in result.output, result.output
    assert "(from versions: none)" in result.output, result.output
    assert_never_fetched(r, (COOL_OLD, COOL_NEW))

    # Why, for whoever asks the proxy: each file with the rule that holds it back.
    code, cache, body = await get(r, COOL_OLD)
    assert (code, cache) == (403, "DENIED") and "denied by deny entry 'pcx-cool==1.0'" in body, body
    reply = await r.proxy.get("/policy/pcx-cool")
    explained = json.loads(await reply.content())
    rules = {f["filename"]: f["verdict"]["rule"] for v in explained["versions"] for f in v["files"]}
    assert rules == {COOL_OLD.filename: "deny", COOL_NEW.filename: "min_release_age"}, explained
