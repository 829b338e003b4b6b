"""
The laptop recipe end to end (issue #19): a real ``twistd pypicached`` on 127.0.0.1
with a small disk budget and ``upstream = [the LAN proxy, the public index]`` (two
fake upstreams on loopback), and real pip through it. The LAN mirror is killed
mid-session (the laptop leaves the LAN) and later restarted (it comes back):
pip keeps working throughout, the requests go where the mirrors' request logs say,
and with both gone pip still installs what the laptop has cached.
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
from pytest_twisted import ensureDeferred
from twisted.internet import reactor
from twisted.internet.task import deferLater

from .daemon import Daemon, twistd_args
from .fake_upstream import FakeUpstream, Listening
from .installers import clean_env, run_pip, tool_bin
from .proxy_rig import RunningProxy
from .wheels import build_wheel

PROJECTS = ["pcx-lap-a", "pcx-lap-b", "pcx-lap-c"]


def laptop_config(path: Path, cache: Path, lan: str, public: str) -> Path:
    path.write_text(
        f'listen = "tcp:0:interface=127.0.0.1"\n'
        f'cache_dir = "{cache}"\n'
        f'max_size = "200MB"\n'
        f'min_free = "1MB"\n'
        f'upstream = ["{lan}", "{public}"]\n'
        f"upstream_retry_max = 1\n"  # the LAN mirror is probed every second while it is gone
    )
    return path


def relisten(listening: Listening, port: int) -> Listening:
    """The same upstream (and request log) listening again on its old port."""
    return attrs.evolve(listening, port=reactor.listenTCP(port, listening.factory, interface="127.0.0.1"))


async def mirror_states(client: RunningProxy) -> list[str]:
    reply = await client.get("/health")
    return [u["state"] for u in json.loads(await reply.content())["upstreams"]]


@pytest.mark.timeout(240)
@ensureDeferred
async def test_pip_through_a_laptop_whose_lan_mirror_goes_and_comes_back(serve_upstream, tmp_path):
    dists = {p: [build_wheel(p, "1.0")] for p in PROJECTS}
    lan_served = serve_upstream("json", dists)
    public_served = serve_upstream("json", dists)
    lan, public = lan_served.upstream, public_served.upstream
    lan_port = lan_served._listening.port_number
    config = laptop_config(tmp_path / "laptop.toml", tmp_path / "cache", lan.simple_url, public.simple_url)
    daemon = Daemon()
    argv = twistd_args("--config", str(config))
    process = reactor.spawnProcess(daemon, argv[0], argv, env=clean_env(tmp_path), path=str(tmp_path))
    pip = tool_bin("pip", "python")
    try:
        port = await daemon.port
        client = RunningProxy(None, None, f"http://127.0.0.1:{port}")  # type: ignore[arg-type]

        async def install(project: str, phase: str) -> None:
            target = tmp_path / phase
            result = await run_pip(
                ["install", "--target", str(target), project], client.index_url, python=pip, home=tmp_path / phase
            )
            assert result.code == 0, result.output + daemon.output.decode(errors="replace")
            assert [p.name for p in target.iterdir() if p.name.endswith(".dist-info")] == [
                project.replace("-", "_") + "-1.0.dist-info"
            ]

        def asked(upstream: FakeUpstream, project: str) -> list[str]:
            dist = dists[project][0]
            return [r.path for r in upstream.log if r.path in (f"/simple/{project}/", dist.pypi_path)]

        # on the LAN: everything through the LAN cache
        await install("pcx-lap-a", "lan")
        assert asked(lan, "pcx-lap-a") == ["/simple/pcx-lap-a/", dists["pcx-lap-a"][0].pypi_path]
        assert public.log == []

        # off the LAN: the LAN mirror is gone, pip goes on through the public index
        await lan_served.stop()
        await install("pcx-lap-b", "away")
        assert asked(public, "pcx-lap-b") == ["/simple/pcx-lap-b/", dists["pcx-lap-b"][0].pypi_path]
        assert asked(lan, "pcx-lap-b") == []
        assert await mirror_states(client) == ["down", "up"]

        # back on the LAN: the probe finds it, and the traffic returns to it
        lan_served._listening = relisten(lan_served._listening, lan_port)
        await lan.wait_for_requests("/simple/", method="HEAD")
        for _ in range(200):  # the probe's answer reaches the daemon a moment after the LAN logs it
            if await mirror_states(client) == ["up", "up"]:
                break
            await deferLater(reactor, 0.05, lambda: None)
        assert await mirror_states(client) == ["up", "up"]
        public.clear_log()
        await install("pcx-lap-c", "back")
        assert asked(lan, "pcx-lap-c") == ["/simple/pcx-lap-c/", dists["pcx-lap-c"][0].pypi_path]
        assert public.log == []

        # offline: both gone, what the laptop has is still installed
        await lan_served.stop()
        await public_served.stop()
        await install("pcx-lap-a", "offline")
    finally:
        if not daemon.ended.called:
            process.signalProcess("TERM")
        await daemon.ended
