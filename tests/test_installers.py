"""Real pip and uv, as child processes, installing through the proxy from a fake upstream."""

from __future__ import annotations

import pytest
from pytest_twisted import ensureDeferred

from .fake_upstream import upstream_file_counts
from .installers import run_pip, run_uv
from .projects import WANTED


@pytest.mark.parametrize("flavour", ["html", "json"])
@ensureDeferred
async def test_pip_download_then_install_fetches_each_file_once(request, flavour, tmp_path, start_proxy):
    upstream = request.getfixturevalue(f"fake_upstream_{flavour}")
    proxy = await start_proxy(upstream.simple_url)

    dest = tmp_path / "dl"
    result = await run_pip(["download", "-d", str(dest), "pcx-beta"], proxy.index_url, home=tmp_path / "h1")
    result.check()
    assert sorted(p.name for p in dest.iterdir()) == WANTED
    first = upstream_file_counts(upstream)
    assert all(first.get(name) == 1 for name in WANTED), first
    assert all(count == 1 for count in first.values()), first

    target = tmp_path / "target"
    result = await run_pip(["install", "--target", str(target), "pcx-beta"], proxy.index_url, home=tmp_path / "h2")
    result.check()
    assert (target / "pcx_beta" / "__init__.py").exists()
    assert b'"2.0"' in (target / "pcx_alpha" / "__init__.py").read_bytes()
    # the second install was served from the cache: not one more file request upstream
    assert upstream_file_counts(upstream) == first
    # ... and it went through the proxy, not around it
    assert all(
        not r.path.startswith("/simple/pcx") or r.path in ("/simple/pcx-alpha/", "/simple/pcx-beta/")
        for r in upstream.log
    )


@pytest.mark.parametrize("flavour", ["html", "json"])
@ensureDeferred
async def test_uv_installs_through_the_proxy(request, flavour, tmp_path, start_proxy):
    upstream = request.getfixturevalue(f"fake_upstream_{flavour}")
    proxy = await start_proxy(upstream.simple_url)
    for attempt in ("cold", "warm"):
        target = tmp_path / attempt
        result = await run_uv(
            ["install", "--target", str(target), "pcx-beta"], proxy.index_url, home=tmp_path / attempt
        )
        result.check()
        assert b'"2.0"' in (target / "pcx_alpha" / "__init__.py").read_bytes()
        counts = upstream_file_counts(upstream)
        # each wheel crossed the upstream link once, whatever uv asked for (HEAD, ranges, metadata)
        wheel_gets = [r for r in upstream.file_requests() if r.path.endswith(".whl") and r.method == "GET"]
        assert sorted(r.path.rsplit("/", 1)[-1] for r in wheel_gets) == WANTED, counts
        assert all(not r.range for r in wheel_gets)


@ensureDeferred
async def test_pip_through_two_chained_proxies(fake_upstream_json, tmp_path, start_proxy):
    central = await start_proxy(fake_upstream_json.simple_url)
    site = await start_proxy(central.index_url)
    dest = tmp_path / "dl"
    result = await run_pip(["download", "-d", str(dest), "pcx-beta"], site.index_url, home=tmp_path / "h")
    result.check()
    assert sorted(p.name for p in dest.iterdir()) == WANTED
    counts = upstream_file_counts(fake_upstream_json)
    assert counts and all(c == 1 for c in counts.values()), counts
