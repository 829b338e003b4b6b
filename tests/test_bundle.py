"""Carrying a cache to an air-gapped site: export, import, and an offline daemon serving installs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_twisted import ensureDeferred
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint

from pypicached.config import Settings
from pypicached.service.wiring import Proxy

from .bundle_cache import fill, sha256_of
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


#: Runs argv and writes its peak RSS (KiB, as Linux's getrusage gives it) to the file argv[1] names.
PEAK = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[2:]).returncode; "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); sys.exit(code)"
)


def run_admin(cache_dir: Path, *args: str, home: Path, env: dict[str, str] | None = None) -> tuple[str, int]:
    """``pypicached-admin`` in a fresh wrapper process: its output and its peak RSS in bytes."""
    peak = home / "peak"
    home.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-c", PEAK, str(peak), ADMIN, "--cache-dir", str(cache_dir), "--url", "http://127.0.0.1:9"]
    done = subprocess.run(
        [*argv, *args], env=env or clean_env(home), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout, int(peak.read_text()) * 1024


def test_a_bundle_over_1_gb_streams_both_ways(tmp_path):
    """Export and import of a 1.1 GB bundle each peak well under its size, and the import is byte for byte."""
    if shutil.disk_usage(tmp_path).free < 5 << 30:
        pytest.skip("needs 5 GB of free disk: the cache, its bundle and the imported copy")
    source, bundle, target = tmp_path / "source", tmp_path / "big.tar", tmp_path / "target"
    digests = fill(source, 1100 << 20)
    out, exported = run_admin(source, "export", "--out", str(bundle), "--all", home=tmp_path / "h")
    assert "4 files" in out and bundle.stat().st_size > 10**9, out
    out, imported = run_admin(target, "import", str(bundle), home=tmp_path / "h")
    assert "4 new files" in out and "4 pages" in out, out
    assert {name: sha256_of(target / name) for name in digests} == digests
    assert not list((target / "tmp").iterdir())
    assert exported < 150 << 20 and imported < 150 << 20, (exported, imported)


def hidden_zstandard(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python cannot import ``zstandard``: a module of that name first on its path refuses."""
    shim = tmp_path / "no-zstd" / "zstandard"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    return {**clean_env(tmp_path / "h"), "PYTHONPATH": str(shim.parent)}


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_export_compresses_with_zstd_when_it_can_else_gzip(compression, tmp_path):
    pytest.importorskip("zstandard", reason="the test extra installs it")
    source, bundle, target = tmp_path / "source", tmp_path / "small.tar", tmp_path / "target"
    digests = fill(source, 1 << 20, files=2)
    env = hidden_zstandard(tmp_path) if compression == "gzip" else None
    out, _ = run_admin(source, "export", "--out", str(bundle), "--all", home=tmp_path / "h", env=env)
    assert f"({compression})" in out, out
    assert bundle.read_bytes()[:4] == {"zstd": b"\x28\xb5\x2f\xfd", "gzip": b"\x1f\x8b\x08\x00"}[compression]
    out, _ = run_admin(target, "import", str(bundle), home=tmp_path / "h", env=env)
    assert "2 new files" in out, out
    assert {name: sha256_of(target / name) for name in digests} == digests


def test_a_zstd_bundle_where_zstandard_is_missing_is_refused(tmp_path):
    pytest.importorskip("zstandard", reason="the test extra installs it")
    source, bundle, target = tmp_path / "source", tmp_path / "small.tar.zst", tmp_path / "target"
    fill(source, 1 << 20, files=2)
    run_admin(source, "export", "--out", str(bundle), "--all", home=tmp_path / "h")
    argv = [ADMIN, "--cache-dir", str(target), "--url", "http://127.0.0.1:9", "import", str(bundle)]
    done = subprocess.run(argv, env=hidden_zstandard(tmp_path), capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "zstandard module is not installed" in done.stdout, done.stdout + done.stderr
    assert not (target / "files" / "packages").exists()
