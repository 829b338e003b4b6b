"""Carrying a cache to an air-gapped site: export, import, and an offline daemon serving installs."""

from __future__ import annotations

import os
from pathlib import Path

from pytest_twisted import ensureDeferred
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint

from pypicached.config import Settings
from pypicached.service.wiring import Proxy

from .installers import clean_env, run_pip, run_process, run_uv_project
from .operator_tools import ADMIN
from .projects import site_packages, uv_project
from .proxy_rig import RunningProxy
from .test_matrix import check, tools  # noqa: F401  (a fixture)

LOCKED = ["pcx_alpha-2.0-py3-none-any.whl", "pcx_beta-0.1-py3-none-any.whl", "pcx_big-1.0-py3-none-any.whl"]


async def listen(upstream_url: str, cache_dir: Path, port: int = 0, **settings) -> RunningProxy:
    """A proxy on a given loopback port (the air-gapped one takes the connected one's address)."""
    proxy = Proxy(Settings.of(upstream=upstream_url, cache_dir=cache_dir, **settings), reactor)
    proxy.start()
    listening = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(proxy.site)
    return RunningProxy(proxy, listening, f"http://127.0.0.1:{listening.getHost().port}")


async def admin(cache_dir: Path, *args: str, home: Path, url: str = "http://127.0.0.1:9"):
    argv = [ADMIN, "--cache-dir", str(cache_dir), "--url", url, *args]
    return await run_process(argv, env=clean_env(home), timeout=120)


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path below ``root`` with its size and mtime: what "untouched" compares."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@ensureDeferred
async def test_lock_prefetch_export_import_then_install_offline(serve_upstream, tools, tmp_path):  # noqa: F811
    served = serve_upstream("json")
    connected = await listen(served.simple_url, tmp_path / "connected")
    try:
        await _connected_then_airgapped(served, connected, tools, tmp_path)
    finally:
        if connected.port.connected:
            await connected.stop()


async def _connected_then_airgapped(served, connected, tools, tmp_path):  # noqa: F811
    project = uv_project(tmp_path / "project", connected.index_url)
    check(
        await run_uv_project(
            ["lock", "--python", tools["uv-python"]], cwd=project, uv=tools["uv"], home=tmp_path / "h-lock"
        )
    )
    lock = project / "uv.lock"
    home = tmp_path / "h-admin"
    result = await admin(tmp_path / "connected", "prefetch", str(lock), home=home, url=connected.base_url)
    assert "0 skipped, 0 missing" in result.check().out, result.out
    bundle = tmp_path / "site.tar.gz"
    result = (await admin(tmp_path / "connected", "export", "--out", str(bundle), str(lock), home=home)).check()
    assert "Wrote" in result.out and "6 files" in result.out, result.out
    port = connected.port_number
    await connected.stop()
    await served.stop()  # the air gap: no upstream from here on

    airgapped = tmp_path / "airgapped"
    result = (await admin(airgapped, "import", str(bundle), home=home)).check()
    assert "6 new files" in result.out, result.out
    assert not list((airgapped / "tmp").iterdir())
    requirements = tmp_path / "requirements.txt"
    exported = check(
        await run_uv_project(
            ["export", "--frozen", "--format", "requirements-txt", "--no-emit-project", "-o", str(requirements)],
            cwd=project,
            uv=tools["uv"],
            home=tmp_path / "h-export",
        )
    )
    assert exported.code == 0 and "--hash=sha256:" in requirements.read_text()
    for attempt in ("first", "after a restart"):
        offline = await listen(served.simple_url, airgapped, port, offline=True, index_ttl=0)
        try:
            venv = project / ".venv"
            sync = await run_uv_project(
                ["sync", "--frozen", "--python", tools["uv-python"]],
                cwd=project,
                uv=tools["uv"],
                home=tmp_path / f"h-sync-{attempt}",
            )
            check(sync)
            assert (site_packages(venv) / "pcx_big").is_dir(), attempt
            target = tmp_path / f"pip-{attempt}"
            pip = await run_pip(
                ["install", "--target", str(target), "--require-hashes", "-r", str(requirements)],
                offline.index_url,
                home=tmp_path / f"h-pip-{attempt}",
            )
            check(pip)
            assert sorted(p.name for p in target.glob("*.dist-info")) == [
                "pcx_alpha-2.0.dist-info",
                "pcx_beta-0.1.dist-info",
                "pcx_big-1.0.dist-info",
            ]
            reply = await offline.get("/simple/pcx-gamma/")
            body = await reply.content()
            assert reply.code == 503 and b"offline mode" in body and body.count(b"\n") <= 1, body
            page = await offline.get("/simple/pcx-alpha/")
            await page.content()
            assert page.header("x-pypi-cache") == "STALE"
        finally:
            await offline.stop()
        os.utime(airgapped)  # nothing else: the restart reads the same directory
