"""The systemd units as shipped, and the journal log format the service uses."""

from __future__ import annotations

import io
import re
from pathlib import Path

from pytest_twisted import ensureDeferred
from twisted.logger import LogLevel, Logger

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


@ensureDeferred
async def test_service_unit_is_hardened(tmp_path):
    result = await run_process(
        ["systemd-analyze", "security", "--offline=yes", str(UNITS / "pypicached.service")],
        env=clean_env(tmp_path), timeout=60,
    )
    match = re.search(r"Overall exposure level for pypicached.service: (\d+\.\d+)", result.output)
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
    # Everything but an absent Debian twistd3 must verify here; `make deb-test` verifies
    # the installed units again with Debian's twistd3 in place, complaints and all.
    complaints = [
        line for line in service.output.splitlines()
        if line.strip() and "/usr/bin/twistd3 is not executable" not in line
    ]
    assert complaints == [], service.output
