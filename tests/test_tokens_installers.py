"""pip, uv, poetry and pdm through a proxy that answers token holders only (#19): credentials in the URL, and netrc."""

from __future__ import annotations

import io

import pytest
from pytest_twisted import ensureDeferred
from twisted.logger import formatEvent, globalLogPublisher

from pypicached.admin.tokens import add

from .installers import run_pdm, run_pip, run_poetry, run_uv, tool_bin
from .projects import REQUIREMENTS, WANTED, assert_installed, pdm_project, poetry_project, site_packages


@pytest.fixture
def logged():
    lines: list[str] = []
    observe = lambda event: lines.append(formatEvent(event) + " " + repr(event))  # noqa: E731
    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest.fixture
def guarded(start_proxy, serve_upstream, tmp_path):
    """A proxy with a tokens file and no open network, its upstream, and a token for it."""

    async def make():
        served = serve_upstream("json")
        out = io.StringIO()
        add(tmp_path / "tokens", "ci", "read", out)
        proxy = await start_proxy(served.simple_url, tokens_file=tmp_path / "tokens")
        token = out.getvalue().strip()
        host = f"127.0.0.1:{proxy.port_number}"
        return served, proxy, token, f"http://ci:{token}@{host}/simple/"

    return make


def no_token_in(lines: list[str], token: str) -> None:
    assert any("token=ci" in line and ".whl" in line for line in lines), "no file went out under the token"
    assert not [line for line in lines if token in line or "Authorization" in line]


def dists_of(served, names):
    return [d for d in served.upstream.published() if d.filename in names]


@ensureDeferred
async def test_pip_and_uv_with_the_token_in_the_url(guarded, tmp_path, logged):
    served, proxy, token, url = await guarded()
    refused = await run_pip(["download", "-d", str(tmp_path / "no"), "pcx-beta"], proxy.index_url, home=tmp_path / "h0")
    assert refused.code != 0
    assert any('"GET /simple/pcx-beta/" 401 ' in line for line in logged)
    (await run_pip(["download", "-d", str(tmp_path / "pip"), "pcx-beta"], url, home=tmp_path / "h1")).check()
    assert sorted(p.name for p in (tmp_path / "pip").iterdir()) == WANTED
    target = tmp_path / "uv"
    (await run_uv(["install", "--target", str(target), "pcx-beta"], url, home=tmp_path / "h2")).check()
    assert b'"2.0"' in (target / "pcx_alpha" / "__init__.py").read_bytes()
    assert any("token=ci" in line and ".whl" in line for line in logged)
    no_token_in(logged, token)


@ensureDeferred
async def test_pip_and_uv_with_netrc(guarded, tmp_path, logged):
    served, proxy, token, _ = await guarded()
    for tool in ("pip", "uv"):
        home = tmp_path / f"{tool}-home"
        home.mkdir()
        netrc = home / ".netrc"
        netrc.write_text(f"machine 127.0.0.1\nlogin {tool}-laptop\npassword {token}\n")
        netrc.chmod(0o600)
        env = {"NETRC": str(netrc)}
        dest = tmp_path / tool
        if tool == "pip":
            result = await run_pip(["download", "-d", str(dest), "pcx-beta"], proxy.index_url, home=home, env_extra=env)
            result.check()
            assert sorted(p.name for p in dest.iterdir()) == WANTED
        else:
            args = ["install", "--target", str(dest), "pcx-beta"]
            (await run_uv(args, proxy.index_url, home=home, env_extra=env)).check()
            assert (dest / "pcx_beta" / "__init__.py").exists()
        assert any(f"user={tool}-laptop token=ci" in line for line in logged), tool
    no_token_in(logged, token)


@ensureDeferred
async def test_poetry_with_the_token_in_the_url(guarded, tmp_path, logged):
    served, proxy, token, url = await guarded()
    project = poetry_project(tmp_path / "project", url)
    env = {"POETRY_VIRTUALENVS_USE_POETRY_PYTHON": "true"}
    poetry = tool_bin("poetry")
    (await run_poetry(["lock"], cwd=project, poetry=poetry, home=tmp_path / "h1", env_extra=env)).check()
    (await run_poetry(["install"], cwd=project, poetry=poetry, home=tmp_path / "h2", env_extra=env)).check()
    assert_installed(site_packages(project / ".venv"), dists_of(served, _wanted(served)))
    no_token_in(logged, token)


@ensureDeferred
async def test_pdm_with_the_token_in_the_url(guarded, tmp_path, logged):
    served, proxy, token, url = await guarded()
    project = pdm_project(tmp_path / "project", url)
    pdm = tool_bin("pdm")
    (await run_pdm(["lock"], cwd=project, pdm=pdm, home=tmp_path / "h1")).check()
    (await run_pdm(["install"], cwd=project, pdm=pdm, home=tmp_path / "h2")).check()
    assert_installed(site_packages(project / ".venv"), dists_of(served, _wanted(served)))
    no_token_in(logged, token)


def _wanted(served) -> set[str]:
    """The wheels REQUIREMENTS brings: the newest of pcx-alpha, pcx-beta and pcx-big."""
    assert REQUIREMENTS == ["pcx-beta", "pcx-big"]
    return {"pcx_alpha-2.0-py3-none-any.whl", "pcx_beta-0.1-py3-none-any.whl", "pcx_big-1.0-py3-none-any.whl"}
