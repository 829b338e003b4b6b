"""The systemd units as shipped, and the journal log format the service uses."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from pytest_twisted import ensureDeferred
from twisted.logger import Logger, LogLevel

from pypicached.ops.journal import format_line, observer

from .installers import clean_env, run_process

UNITS = Path(__file__).resolve().parent.parent / "systemd"


def test_journal_lines_carry_priority_and_no_timestamp():
    out = io.StringIO()
    log = Logger(namespace="pypicached.test", observer=observer(out))
    log.warn("disk {what}", what="full")
    log.info("a\nb")
    assert out.getvalue() == "<4>[pypicached.test] disk full\n<6>[pypicached.test] a\n<6>[pypicached.test] b\n"
    assert format_line({"log_format": "x", "log_level": LogLevel.error, "log_namespace": "n"}) == "<3>[n] x\n"


@pytest.mark.parametrize("unit", ["pypicached.service", "pypicached@1.service"])
@ensureDeferred
async def test_service_unit_is_hardened(tmp_path, unit):
    # pypicached@1.service: instance 1 of the template pypicached@.service, for a node of a cluster
    result = await run_process(
        ["systemd-analyze", "security", "--offline=yes", str(UNITS / unit)],
        env=clean_env(tmp_path),
        timeout=60,
    )
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", result.output)
    assert match, result.output
    assert float(match.group(1)) <= 2.0, result.output


@ensureDeferred
async def test_units_verify(tmp_path):
    socket_unit = await run_process(
        ["systemd-analyze", "verify", str(UNITS / "pypicached.socket")], env=clean_env(tmp_path), timeout=60
    )
    assert socket_unit.code == 0 and socket_unit.output.strip() == "", socket_unit.output
    service = await run_process(
        ["systemd-analyze", "verify", str(UNITS / "pypicached.service")], env=clean_env(tmp_path), timeout=60
    )
    assert complaints(service.output) == [], service.output


def complaints(output: str) -> list[str]:
    """
    What systemd-analyze verify says, but for an absent Debian twistd3: everything else must
    verify here; `make deb-test` verifies the installed units again with twistd3 in place.
    """
    return [line for line in output.splitlines() if line.strip() and "/usr/bin/twistd3 is not executable" not in line]


@ensureDeferred
async def test_node_template_unit_verifies_and_keeps_one_cache_per_instance(tmp_path):
    instance = await run_process(
        ["systemd-analyze", "verify", str(UNITS / "pypicached@2.service")], env=clean_env(tmp_path), timeout=60
    )
    assert complaints(instance.output) == [], instance.output
    unit = (UNITS / "pypicached@.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    # its own config, and its own cache whatever that config says (flags win over the file)
    assert exec_start.endswith(" pypicached --config /etc/pypicached/%i.toml --cache-dir /var/cache/pypicached/%i")
    assert "\nCacheDirectory=pypicached/%i\n" in unit and "\nWorkingDirectory=/var/cache/pypicached/%i\n" in unit


@ensureDeferred
async def test_the_journal_leaves_out_a_line_per_upstream_connection():
    # the daemon's agent, over a real connection: Twisted logs its private client factory
    # starting and stopping for each one, which the journal's observer drops
    from twisted.internet import reactor
    from twisted.logger import globalLogPublisher
    from twisted.web.client import readBody
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class Leaf(Resource):
        isLeaf = True

        def render_GET(self, request):  # type: ignore[no-untyped-def]
            return b"ok"

    from pypicached.upstream.agent import pooled_agent

    site = Site(Leaf())
    site.noisy = False
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    out, seen = io.StringIO(), []
    journal = observer(out)
    globalLogPublisher.addObserver(journal)
    globalLogPublisher.addObserver(seen.append)
    agent, pool = pooled_agent(reactor, 5)
    try:
        response = await agent.request(b"GET", f"http://127.0.0.1:{port.getHost().port}/".encode())
        assert await readBody(response) == b"ok"
        await pool.closeCachedConnections()
    finally:
        globalLogPublisher.removeObserver(journal)
        globalLogPublisher.removeObserver(seen.append)
        await port.stopListening()
    assert "Starting factory {factory!r}" in {e.get("log_format") for e in seen}
    assert "factory" not in out.getvalue()
