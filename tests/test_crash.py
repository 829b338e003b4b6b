"""Crash safety of the real daemon: ``SIGKILL`` mid-download, restart, and a consistent cache.

The claim under test: killed at any instant, the daemon restarts into a consistent cache. No
partial file sits under a final name, start-up sweeps the temporaries, a damaged page record is
a miss that gets replaced (never a 500), and every cached file matches its digest.

How, without sleeping: the upstream holds the big wheel at a byte offset (a gate). A client of
the daemon counts the body bytes it receives. The daemon serves a download in progress from its
temporary file, so bytes at the client mean bytes in ``tmp/``. Waits on the other process's disk
writes take a bounded number of reactor turns.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from pytest_twisted import ensureDeferred
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.web.client import ResponseDone

from .daemon import Daemon, twistd_args
from .installers import clean_env
from .proxy_rig import RunningProxy

#: Where the upstream holds the big wheel during the first run.
GATE_AT = 1024 * 1024
#: Reactor turns a poll on the daemon's disk may take before the test gives up. It is a
#: bound, not a delay: polls normally end within a few hundred turns.
TURN_LIMIT = 200_000


class BodyCounter(Protocol):
    """Counts a response body as it arrives; ``reached`` fires at ``want`` bytes."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.received = 0
        self.reached: Deferred[int] = Deferred()
        self.lost: Deferred[object] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        if self.received >= self.want and not self.reached.called:
            self.reached.callback(self.received)

    def connectionLost(self, reason) -> None:  # type: ignore[no-untyped-def]
        if not self.reached.called:
            self.reached.errback(AssertionError(f"body ended after {self.received} bytes: {reason.value!r}"))
        self.lost.callback(reason.value)


async def turns_until(predicate: Callable[[], object], what: str) -> None:
    """Give the reactor turns until ``predicate()`` holds, at most ``TURN_LIMIT`` of them."""
    for _ in range(TURN_LIMIT):
        if predicate():
            return
        await deferLater(reactor, 0, lambda: None)
    raise AssertionError(f"gave up after {TURN_LIMIT} reactor turns waiting for {what}")


def valid_record(path: Path | None) -> bool:
    if path is None:
        return False
    try:
        return isinstance(json.loads(path.read_bytes()), dict)
    except (OSError, ValueError):
        return False


def partials(tmp: Path) -> list[Path]:
    return sorted(tmp.glob("dl-*")) if tmp.is_dir() else []


class Run:
    """One life of the daemon on a given cache directory."""

    def __init__(self, tmp_path: Path, cache: Path, upstream_url: str) -> None:
        self.daemon = Daemon()
        argv = twistd_args(
            "--listen", "tcp:0:interface=127.0.0.1", "--upstream", upstream_url, "--cache-dir", str(cache)
        )
        self.process = reactor.spawnProcess(self.daemon, argv[0], argv, env=clean_env(tmp_path), path=str(tmp_path))
        self.client: RunningProxy | None = None

    async def started(self) -> RunningProxy:
        port = await self.daemon.port
        self.client = RunningProxy(None, None, f"http://127.0.0.1:{port}")  # type: ignore[arg-type]
        return self.client

    async def kill(self, sig: str) -> tuple[object, object]:
        if not self.daemon.ended.called:
            self.process.signalProcess(sig)
        return await self.daemon.ended

    @property
    def log(self) -> str:
        return self.daemon.output.decode(errors="replace")


async def fetch(client: RunningProxy, path: str) -> tuple[int, str | None, bytes]:
    reply = await client.get(path)
    return reply.code, reply.header("X-Pypi-Cache"), await reply.content()


@pytest.mark.timeout(60)
@ensureDeferred
async def test_sigkill_mid_download_restarts_into_a_consistent_cache(fake_upstream_json, dists, tmp_path):
    upstream = fake_upstream_json
    big = dists["pcx-big"][0]
    small = next(d for d in dists["pcx-alpha"] if d.filename == "pcx_alpha-2.0-py3-none-any.whl")
    by_filename = {d.filename: d for project in dists.values() for d in project}
    cache = tmp_path / "cache"
    tmp = cache / "tmp"
    files = cache / "files"

    def record(name: str) -> Path | None:
        """pages/<upstream key>/simple/<project>.json, once stored."""
        found = list((cache / "pages").glob(f"*/simple/{name}.json"))
        assert len(found) <= 1, found
        return found[0] if found else None

    upstream.behaviour[big.pypi_path] = f"gate:{GATE_AT}"
    gate = upstream.gate(big.pypi_path)

    # --- first life: pages stored, one small wheel committed, the big wheel held mid-body ----
    first = Run(tmp_path, cache, upstream.simple_url)
    watcher = BodyCounter(GATE_AT - 1)  # the proxy holds back the last byte it has until the file verifies
    try:
        client = await first.started()
        for project in ("pcx-big", "pcx-alpha"):
            code, status, body = await fetch(client, f"/simple/{project}/")
            assert (code, status) == (200, "MISS"), body[:500]
        code, _, body = await fetch(client, small.pypi_path)
        assert code == 200 and hashlib.sha256(body).hexdigest() == small.sha256
        code, _, body = await fetch(client, small.pypi_path + ".metadata")
        assert code == 200 and body == small.metadata
        # The client has the whole body only once the file is committed under its final name.
        assert files.joinpath(small.pypi_path.lstrip("/")).read_bytes() == small.data
        await turns_until(lambda: all(valid_record(record(n)) for n in ("pcx-alpha", "pcx-big")), "the page records")

        reply = await client.get(big.pypi_path)
        assert reply.code == 200 and reply.header("X-Pypi-Cache") == "MISS"
        assert reply.length == big.size
        reply.response.deliverBody(watcher)
        await gate.reached(1)
        # Bytes at the client came out of the temporary file: the partial is on disk now.
        await watcher.reached
        await turns_until(
            lambda: any(p.stat().st_size >= GATE_AT for p in partials(tmp)), f"{GATE_AT} bytes in tmp/dl-*"
        )
        assert watcher.received == GATE_AT - 1  # held at the gate, less the held-back byte
    finally:
        exit_status = await first.kill("KILL")
    assert exit_status == (None, signal.SIGKILL), first.log

    # --- the wreck: a partial download in tmp/, nothing under the final name -----------------
    ended = await watcher.lost
    assert not isinstance(ended, ResponseDone), "the client must not see a complete body"
    assert watcher.received < big.size
    leftovers = [p for p in tmp.iterdir()]
    assert partials(tmp), leftovers
    assert any(p.stat().st_size >= GATE_AT for p in partials(tmp))
    big_final = files.joinpath(big.pypi_path.lstrip("/"))
    assert not big_final.exists()
    assert not list(files.rglob(big.filename))
    # a damaged page record, as a torn write on a filesystem without atomic rename might leave
    damaged = record("pcx-alpha")
    assert damaged is not None
    damaged.write_bytes(damaged.read_bytes()[:37])
    assert not valid_record(damaged)
    alpha_fetches = upstream.count("/simple/pcx-alpha/")
    big_fetches = upstream.count(big.pypi_path)

    # --- second life on the same cache --------------------------------------------------------
    second = Run(tmp_path, cache, upstream.simple_url)
    try:
        client = await second.started()
        # twistd binds the port (privilegedStartService) before the cache service's startService
        # sweeps, so the port line comes first; the "serving" line is logged after the sweep.
        await turns_until(lambda: "pypicached serving" in second.log, "the start-up line after the sweep")
        # every leftover swept (the running daemon's own writes may come and go in tmp/ meanwhile:
        # the stats saver's first save, the health check's probe file)
        assert not [p for p in leftovers if p.exists()] and not partials(tmp), (leftovers, second.log)
        removed = re.search(r"Removed (\d+) unfinished downloads left by the last run", second.log)
        assert removed and int(removed.group(1)) == len(leftovers), second.log

        # the damaged record is a miss: fetched again, served, stored again
        code, status, body = await fetch(client, "/simple/pcx-alpha/")
        assert (code, status) == (200, "MISS"), body[:500]
        assert small.filename.encode() in body
        assert upstream.count("/simple/pcx-alpha/") == alpha_fetches + 1
        await turns_until(lambda: valid_record(damaged), f"{damaged} to be rewritten")
        assert json.loads(damaged.read_bytes())["page"]
        assert "Ignoring damaged page record" in second.log

        # an intact record survived the kill and is still used
        code, status, body = await fetch(client, "/simple/pcx-big/")
        assert (code, status) == (200, "HIT"), body[:500]

        # the committed small wheel survived; the big one downloads afresh and whole
        code, status, body = await fetch(client, small.pypi_path)
        assert (code, status) == (200, "HIT") and body == small.data
        pending = client.get(big.pypi_path)
        await gate.reached(2)
        upstream.release(big.pypi_path)
        reply = await pending
        assert reply.code == 200 and reply.header("X-Pypi-Cache") == "MISS"
        body = await reply.content()
        assert len(body) == big.size and hashlib.sha256(body).hexdigest() == big.sha256
        assert upstream.count(big.pypi_path) == big_fetches + 1
        assert hashlib.sha256(big_final.read_bytes()).hexdigest() == big.sha256
    finally:
        exit_status = await second.kill("TERM")
    assert exit_status in ((0, None), (None, signal.SIGTERM)), second.log
    assert not re.search(r'" 5\d\d ', second.log), second.log  # the access log shows no 5xx

    # --- every cached file against its digest; nothing left half-done -------------------------
    assert list(tmp.iterdir()) == []
    cached = {p.relative_to(files).as_posix(): p for p in files.rglob("*") if p.is_file()}
    expected = {
        small.pypi_path.lstrip("/"),
        small.pypi_path.lstrip("/") + ".metadata",
        big.pypi_path.lstrip("/"),
    }
    assert set(cached) == expected
    for relpath, path in cached.items():
        if path.name.endswith(".metadata"):
            dist = by_filename[path.name[: -len(".metadata")]]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == dist.metadata_sha256, relpath
        else:
            dist = by_filename[path.name]
            assert hashlib.sha256(path.read_bytes()).hexdigest() == dist.sha256, relpath
        assert relpath.startswith(dist.pypi_path.lstrip("/")), relpath
    for name in ("pcx-alpha", "pcx-big"):
        assert valid_record(record(name)), name
