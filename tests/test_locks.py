"""Prefetching from lock files: each format's reader on real tool output, and the command through a proxy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pytest_twisted import ensureDeferred

from pypicached.admin.locks import Target, format_of, read_lock

from .installers import clean_env, run_process
from .operator_tools import ADMIN

LOCKS = Path(__file__).parent / "locks"
PLACEHOLDER = "http://upstream.invalid"
BIG = "pcx_big-1.0-py3-none-any.whl"
LOCKED = {"pcx_alpha-2.0-py3-none-any.whl", "pcx_beta-0.1-py3-none-any.whl", BIG}


def lock_for(upstream_url: str, name: str, directory: Path, as_name: str | None = None) -> Path:
    """A fixture lock with the fake upstream's address put back."""
    base = upstream_url.split("/simple/")[0]
    path = directory / (as_name or name)
    path.write_text((LOCKS / name).read_text().replace(PLACEHOLDER, base))
    return path


@pytest.mark.parametrize("name, fmt", [("uv.lock", "uv"), ("poetry.lock", "poetry"), ("pdm.lock", "pdm")])
def test_each_tool_s_lock_names_its_files_and_hashes(name, fmt, dists, tmp_path):
    by_name = {d.filename: d for ds in dists.values() for d in ds}
    assert format_of(LOCKS / name) == fmt
    renamed = tmp_path / "locked.toml"  # by content, whatever its name
    renamed.write_text((LOCKS / name).read_text())
    assert format_of(renamed) == fmt
    files = read_lock(LOCKS / name, fmt)
    assert {f.filename for f in files} == LOCKED
    for f in files:
        assert f.digests == {"sha256": by_name[f.filename].sha256}
        assert f.project == by_name[f.filename].project and f.version == by_name[f.filename].version
    assert all(f.url and f.url.startswith(PLACEHOLDER) for f in files) if fmt == "uv" else all(not f.url for f in files)


def test_pylock_from_the_pep_example(tmp_path):
    for name in ("pylock.toml", "pylock.ci.toml"):
        (tmp_path / name).write_text((LOCKS / "pylock.toml").read_text())
        assert format_of(tmp_path / name) == "pylock"
    files = read_lock(LOCKS / "pylock.toml", "pylock")
    assert [f.filename for f in files] == [
        "pcx_alpha-1.0-py3-none-any.whl",
        "pcx_alpha-1.0.tar.gz",  # [packages.sdist]
        "pcx_gamma-1.0-py3-none-any.whl",
        "numpy-2.2.3-cp312-cp312-win_amd64.whl",
    ]
    assert files[2].marker == "sys_platform == 'linux'"
    # narrowing: markers and wheel tags, as pip download's --python-version/--platform
    assert [f.filename for f in files if Target(python="3.12").wants(f)] == [f.filename for f in files[:3]]
    # on 3.11 the marker allows numpy, but its only wheel is for CPython 3.12
    assert [f.filename for f in files if Target(python="3.11").wants(f)] == [f.filename for f in files[:3]]
    assert all(Target().wants(f) for f in files)
    assert Target(platforms=("win_amd64",)).wants(files[3])
    assert not Target(platforms=("manylinux_2_17_x86_64",)).wants(files[3])
    assert Target(platforms=("manylinux_2_17_x86_64",)).wants(files[0])  # py3-none-any


def test_requirements_files_are_told_apart(tmp_path):
    (tmp_path / "requirements.txt").write_text("pcx-alpha==2.0\n")
    assert format_of(tmp_path / "requirements.txt") == "requirements"


async def admin(proxy, upstream_url, *args, tmp_path):
    config = tmp_path / "pypicached.toml"
    config.write_text(f'upstream = "{upstream_url}"\ncache_dir = "{proxy.proxy.settings.cache_dir}"\n')
    argv = [ADMIN, "--config", str(config), "--url", proxy.base_url, *args]
    return await run_process(argv, env=clean_env(tmp_path / "home"), timeout=120)


@pytest.mark.parametrize("name", ["uv.lock", "poetry.lock", "pdm.lock"])
@ensureDeferred
async def test_prefetch_fetches_every_locked_file_once(name, fake_upstream_json, start_proxy, tmp_path):
    upstream = fake_upstream_json
    proxy = await start_proxy(upstream.simple_url)
    lock = lock_for(upstream.simple_url, name, tmp_path)
    result = await admin(proxy, upstream.simple_url, "prefetch", "--json", str(lock), tmp_path=tmp_path)
    summary = json.loads(result.check().out)
    assert {r["file"] for r in summary["fetched"]} == LOCKED and not summary["missing"] and not summary["skipped"]
    assert summary["bytes"] == sum(r["bytes"] for r in summary["fetched"]) > 3_000_000
    fetched = sorted(r.path.rsplit("/", 1)[-1] for r in upstream.file_requests() if r.is_file and not r.is_metadata)
    assert fetched == sorted(LOCKED)
    again = json.loads(
        (await admin(proxy, upstream.simple_url, "prefetch", "--json", str(lock), tmp_path=tmp_path)).check().out
    )
    assert {r["file"] for r in again["cached"]} == LOCKED and not again["fetched"]
    assert len([r for r in upstream.file_requests() if r.is_file and not r.is_metadata]) == 3


@ensureDeferred
async def test_prefetch_pylock_skips_foreign_hosts_and_narrows(fake_upstream_json, start_proxy, tmp_path):
    upstream = fake_upstream_json
    proxy = await start_proxy(upstream.simple_url)
    lock = lock_for(upstream.simple_url, "pylock.toml", tmp_path)
    result = await admin(proxy, upstream.simple_url, "prefetch", "--python", "3.12", str(lock), tmp_path=tmp_path)
    out = result.check().out
    assert "Fetched 3 files" in out and "0 skipped, 0 missing" in out, out
    result = await admin(proxy, upstream.simple_url, "prefetch", str(lock), tmp_path=tmp_path)
    out = result.check().out
    assert "Fetched 0 files" in out and "3 (" in out and "1 skipped" in out, out
    assert "skipped  numpy-2.2.3-cp312-cp312-win_amd64.whl: elsewhere.example is served by no index" in out
    assert not [r for r in upstream.requests() if "numpy" in r.path]


@ensureDeferred
async def test_prefetch_reports_a_digest_that_differs_from_the_lock(fake_upstream_json, dists, start_proxy, tmp_path):
    upstream = fake_upstream_json
    proxy = await start_proxy(upstream.simple_url)
    lock = lock_for(upstream.simple_url, "uv.lock", tmp_path)
    alpha = next(d for d in dists["pcx-alpha"] if d.filename == "pcx_alpha-2.0-py3-none-any.whl")
    lock.write_text(lock.read_text().replace(alpha.sha256, "0" * 64))
    missing = tmp_path / "requirements.txt"
    missing.write_text("no-such-project==1.0\n")
    result = await admin(
        proxy, upstream.simple_url, "prefetch", "--json", str(lock), "-r", str(missing), tmp_path=tmp_path
    )
    assert result.code == 1, result.output
    summary = json.loads(result.out)
    assert [r["file"] for r in summary["mismatched"]] == [alpha.filename]
    assert summary["mismatched"][0]["reason"] == f"sha256 {alpha.sha256} is not the lock's"
    assert [r["file"] for r in summary["conflicts"]] == [alpha.filename]
    assert {r["file"] for r in summary["fetched"]} == LOCKED - {alpha.filename}
    assert [r["file"] for r in summary["missing"]] == ["no-such-project==1.0"]
