"""
The shipped deploy/haproxy.cfg as text: its server lines, and the same file pointed elsewhere.

Only the standard library, so that the benchmark (bench/cluster.py) can use it without the test
dependencies.  :func:`with_servers` is the one documented way the tests and the benchmark run the
shipped file with other node addresses: it changes the addresses of the server lines (and drops
the extra ones), nothing else, so each node keeps its name, its id and with it its place on
HAProxy's hash ring.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import attrs

SHIPPED = Path(__file__).resolve().parent.parent / "deploy" / "haproxy.cfg"
#: The backend the shipped file defines.
BACKEND = "pypicached"

_SERVER = re.compile(r"^(\s*server\s+(\S+)\s+)(\S+):(\d+)(\s+id\s+(\d+)[^\n]*)(\n?)", re.MULTILINE)


@attrs.frozen
class Server:
    """One ``server`` line of the configuration."""

    name: str
    host: str
    port: int
    id: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def servers(config: str) -> list[Server]:
    """The server lines of a configuration, in order."""
    return [Server(m.group(2), m.group(3), int(m.group(4)), int(m.group(6))) for m in _SERVER.finditer(config)]


def with_servers(config: str, addresses: Sequence[str]) -> str:
    """
    The configuration with its first ``len(addresses)`` server lines pointed at ``addresses``
    (``host:port``), in order, and the other server lines left out.  Names, ids and options stay,
    and with them each node's place on the hash ring.
    """
    count = len(servers(config))
    if len(addresses) > count:
        raise ValueError(f"the configuration has {count} server lines, not {len(addresses)}")
    remaining = iter(addresses)

    def point(m: re.Match[str]) -> str:
        address = next(remaining, None)
        return "" if address is None else f"{m.group(1)}{address}{m.group(5)}{m.group(7)}"

    return _SERVER.sub(point, config)
