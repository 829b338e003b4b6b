"""Bad bundles are refused whole, the cache left as it was; repeats, newer pages, budgets and live daemons."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from pytest_twisted import ensureDeferred
from twisted.internet import defer

from pypicached.admin.import_ import opened

from .test_bundle import admin, listen, tree


async def filled(fake_upstream_json, tmp_path) -> tuple[Path, Path]:
    """A cache with pcx-alpha 2.0 prefetched, and its bundle."""
    source = tmp_path / "source"
    proxy = await listen(fake_upstream_json.simple_url, source)
    try:
        lock = tmp_path / "requirements.txt"
        lock.write_text("pcx-alpha==2.0\n")
        (await admin(source, "prefetch", "-r", str(lock), home=tmp_path / "h", url=proxy.base_url)).check()
    finally:
        await proxy.stop()
    bundle = tmp_path / "b.tar.gz"
    (await admin(source, "export", "--out", str(bundle), str(lock), home=tmp_path / "h")).check()
    return source, bundle


def members(bundle: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    """Every member of a bundle, zstd or gzip (rewrite() writes gzip, which import reads either way)."""
    with opened(bundle) as tar:
        return [(i, tar.extractfile(i).read() if i.isreg() else b"") for i in tar]


def rewrite(bundle: Path, items: list[tuple[tarfile.TarInfo, bytes]], out: Path) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in items:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    out.write_bytes(gzip.compress(raw.getvalue()))
    return out


def evil(kind: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(
        {"dotdot": "files/packages/../../escaped", "absolute": "/tmp/escaped"}.get(kind, "files/packages/x")
    )
    info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "device": tarfile.CHRTYPE}.get(
        kind, tarfile.REGTYPE
    )
    info.linkname = "/etc/passwd"
    return info


def tamper(kind: str, items: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
    manifest = json.loads(items[0][1])
    wheel = next(i for i, (info, _) in enumerate(items) if info.name.endswith(".whl"))
    if kind == "byte":  # one byte changed, the manifest not
        items[wheel] = (items[wheel][0], b"X" + items[wheel][1][1:])
    elif kind == "consistent":  # the manifest changed to match: the page's digest still catches it
        data = b"X" + items[wheel][1][1:]
        for m in manifest["members"]:
            if m["name"] == items[wheel][0].name:
                m["sha256"] = hashlib.sha256(data).hexdigest()
        items[wheel] = (items[wheel][0], data)
        items[0] = (items[0][0], json.dumps(manifest).encode())
    elif kind == "unknown":
        extra = tarfile.TarInfo("files/packages/aa/bb/extra.whl")
        items.append((extra, b"x"))
    elif kind == "missing":
        del items[wheel]
    else:
        items.append((evil(kind), b"x"))
        manifest["members"].append({"name": items[-1][0].name, "sha256": "0" * 64, "size": 1})
        items[0] = (items[0][0], json.dumps(manifest).encode())
    return items


@pytest.mark.parametrize(
    "kind",
    ["byte", "consistent", "unknown", "missing", "dotdot", "absolute", "symlink", "hardlink", "device", "truncated"],
)
@ensureDeferred
async def test_a_bad_bundle_is_refused_whole(kind, fake_upstream_json, tmp_path):
    _, bundle = await filled(fake_upstream_json, tmp_path)
    target = tmp_path / "target"
    (target / "files").mkdir(parents=True)
    (target / "files" / "keep").write_text("mine")
    before = tree(target)
    if kind == "truncated":
        bad = tmp_path / "bad.tar.gz"
        bad.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    else:
        bad = rewrite(bundle, tamper(kind, members(bundle)), tmp_path / "bad.tar.gz")
    result = await admin(target, "import", str(bad), home=tmp_path / "h")
    assert result.code == 2 and "Refused" in result.out and "The cache is as it was" in result.out, result.output
    assert tree(target) == before
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists()


@ensureDeferred
async def test_importing_twice_is_a_no_op_and_a_newer_page_wins(fake_upstream_json, tmp_path):
    source, bundle = await filled(fake_upstream_json, tmp_path)
    target = tmp_path / "target"
    assert "new files" in (await admin(target, "import", str(bundle), home=tmp_path / "h")).check().out
    first = tree(target)
    again = (await admin(target, "import", str(bundle), home=tmp_path / "h")).check()
    assert "0 new files" in again.out and "2 files were already cached" in again.out, again.out
    assert tree(target) == first
    # an older page version does not replace a newer one; a newer one does
    items = members(bundle)
    record = next(i for i, (info, _) in enumerate(items) if info.name.endswith("/simple/pcx-alpha.json"))
    name = items[record][0].name
    for shift, kept in ((-1000, True), (+1000, False)):
        page = json.loads(items[record][1])
        page["fetched"] = json.loads((target / name).read_bytes())["fetched"] + shift
        changed = list(items)
        changed[record] = (items[record][0], json.dumps(page).encode())
        manifest = json.loads(items[0][1])
        for m in manifest["members"]:
            if m["name"] == name:
                m["sha256"], m["size"] = hashlib.sha256(changed[record][1]).hexdigest(), len(changed[record][1])
        changed[0] = (items[0][0], json.dumps(manifest).encode())
        result = (
            await admin(target, "import", str(rewrite(bundle, changed, tmp_path / "v.tar.gz")), home=tmp_path / "h")
        ).check()
        stored = json.loads((target / name).read_bytes())["fetched"]
        assert (stored != page["fetched"]) == kept, result.out


@ensureDeferred
async def test_an_import_that_would_not_fit_says_so_first(fake_upstream_json, tmp_path):
    _, bundle = await filled(fake_upstream_json, tmp_path)
    target = tmp_path / "target"
    config = tmp_path / "small.toml"
    config.write_text(f'cache_dir = "{target}"\nmax_size = "1KB"\n')
    result = await admin(target, "--config", str(config), "import", str(bundle), home=tmp_path / "h")
    assert result.code == 2 and "would not fit" in result.out, result.output
    assert not (target / "files" / "packages").exists()


@ensureDeferred
async def test_import_into_a_running_daemon(fake_upstream_json, tmp_path):
    _, bundle = await filled(fake_upstream_json, tmp_path)
    target = tmp_path / "target"
    live = await listen(fake_upstream_json.simple_url, target)
    try:
        served = []
        importing = defer.ensureDeferred(admin(target, "import", str(bundle), home=tmp_path / "h"))
        done = []
        importing.addCallback(done.append)
        while not done:  # live traffic all through the import
            reply = await live.get("/simple/pcx-beta/")
            await reply.content()
            served.append(reply.code)
        assert set(served) == {200} and "new files" in done[0].check().out
        reply = await live.get("/simple/pcx-alpha/")
        body = await reply.content()
        assert reply.code == 200 and b"pcx_alpha-2.0" in body
        before = len(
            [r for r in fake_upstream_json.file_requests() if r.path.endswith("pcx_alpha-2.0-py3-none-any.whl")]
        )
        wheel = await live.get(
            "/packages/"
            + next(p for p in (target / "files" / "packages").rglob("pcx_alpha-2.0-py3-none-any.whl"))
            .relative_to(target / "files" / "packages")
            .as_posix()
        )
        await wheel.content()
        assert wheel.code == 200 and wheel.header("x-pypi-cache") == "HIT"
        after = len(
            [r for r in fake_upstream_json.file_requests() if r.path.endswith("pcx_alpha-2.0-py3-none-any.whl")]
        )
        assert after == before
    finally:
        await live.stop()
