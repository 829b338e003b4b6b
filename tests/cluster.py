"""Several real pypicached nodes behind Debian's HAProxy, run from the shipped deploy/haproxy.cfg.

Why a rig of real processes: what is under test is the shipped configuration itself (its sample
expressions, its hash ring, its health checks) with the real ``twistd pypicached`` command behind
it, so nothing here may stand in for either.  The test suite runs the file byte for byte, with
two environment variables it reads for this purpose (the frontend's address and the admin
socket).  To run it elsewhere (network namespaces, two nodes for the benchmark) the only change
is :func:`tests.haproxy_config.with_servers`, which points the server lines at other addresses
and keeps their names, ids and options, so the hash ring stays the same.

Nothing sleeps: a node is ready when its log says it listens, and HAProxy's view of the nodes is
read from its admin socket (``show stat``) until it is the one the test waits for.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.task import deferLater

from .daemon import TWISTD, Daemon
from .haproxy_config import BACKEND, Server
from .proxy_rig import _RawClient

_ACCESS = re.compile(r'"(GET|HEAD) (\S+)" (\d+|aborted) \d+ (\S+) ')


class MissingHAProxy(AssertionError):
    """Debian's haproxy is not installed.  An AssertionError, so the test fails (not skips)."""


def haproxy_binary() -> str:
    """The haproxy executable (``make haproxy``, which ``make test`` runs first, installs it)."""
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if found is None:
        raise MissingHAProxy("haproxy is not installed: `make haproxy` (run by `make test`) installs Debian's")
    return found


# --------------------------------------------------------------------------------------------
# Processes


@attrs.frozen
class Access:
    """One line of a node's access log."""

    method: str
    path: str
    status: str
    cache: str

    @property
    def filename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@attrs.define
class Node:
    """``twistd pypicached`` listening at ``host:port`` with its own cache directory."""

    server: Server
    cache: Path
    upstream: str
    prefix: tuple[str, ...] = ()  # e.g. ("ip", "netns", "exec", ns): where it runs
    env: Mapping[str, str] = attrs.field(factory=dict)
    _daemon: Any = None
    _process: Any = None
    _earlier: bytes = b""  # the output of the runs before this one

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def running(self) -> bool:
        return self._process is not None

    async def start(self) -> None:
        """Start it and wait until it listens."""
        assert self._process is None, f"{self.name} runs already"
        self._daemon = Daemon()
        argv = [
            *self.prefix,
            TWISTD, "--nodaemon", "--pidfile=", "pypicached",
            "--listen", f"tcp:{self.server.port}:interface={self.server.host}",
            "--cache-dir", str(self.cache),
            "--upstream", self.upstream,
        ]  # fmt: skip
        self._process = reactor.spawnProcess(
            self._daemon, argv[0], argv, env=dict(self.env), path=str(self.cache.parent)
        )
        try:
            await self._daemon.port
        except Exception as e:
            self._process = None
            raise AssertionError(f"{self.name} did not start: {e}") from None

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal it (``SIGKILL``: killed, nothing cleaned up) and wait until it is gone."""
        if self._process is None:
            return
        try:
            self._process.signalProcess(sig)
        except Exception:  # already gone
            pass
        await self._daemon.ended
        self._earlier += self._daemon.output
        self._process = None

    @property
    def output(self) -> bytes:
        """Everything it logged, over every run."""
        return self._earlier + (self._daemon.output if self._process is not None else b"")

    def mark(self) -> int:
        return len(self.output)

    def answered(self, since: int = 0) -> list[Access]:
        """The client requests it answered (health checks left out), from its access log."""
        text = self.output[since:].decode("utf-8", "replace")
        found = [Access(*m.groups()) for m in _ACCESS.finditer(text)]
        return [a for a in found if a.path != "/health"]

    def cached_files(self) -> set[str]:
        """The names of the package files (and .metadata files) in its cache."""
        root = self.cache / "files"
        return {p.name for p in root.rglob("*") if p.is_file()} if root.exists() else set()


@attrs.define
class LoadBalancer:
    """HAProxy in the foreground with a given configuration file."""

    config: Path
    socket: Path
    env: Mapping[str, str]
    prefix: tuple[str, ...] = ()
    _daemon: Any = None
    _process: Any = None

    async def start(self) -> None:
        """Start it and wait until its admin socket answers."""
        self._daemon = Daemon()
        self._daemon.port.addErrback(lambda _: None)  # haproxy never logs a ProxySite line
        argv = [*self.prefix, haproxy_binary(), "-db", "-f", str(self.config)]
        env = {**self.env, "PYPICACHED_HAPROXY_SOCKET": str(self.socket)}
        self._process = reactor.spawnProcess(self._daemon, argv[0], argv, env=env, path=str(self.socket.parent))
        await self.wait(lambda states: bool(states), "its admin socket to answer")

    async def stop(self) -> None:
        if self._process is None:
            return
        try:
            self._process.signalProcess(signal.SIGTERM)
        except Exception:
            pass
        await self._daemon.ended
        self._process = None

    @property
    def output(self) -> str:
        return self._daemon.output.decode("utf-8", "replace") if self._daemon else ""

    async def command(self, line: str) -> str:
        """One command on the admin socket, and its answer."""
        client = _RawClient(line.encode() + b"\n")
        await connectProtocol(UNIXClientEndpoint(reactor, str(self.socket)), client)
        return (await client.done).decode("utf-8", "replace")

    async def states(self) -> dict[str, str]:
        """Each node's status as HAProxy sees it: ``UP``, ``DOWN``, ``UP 1/3`` (going down)..."""
        try:
            text = await self.command("show stat")
        except Exception:  # not listening yet
            return {}
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        return {
            row["svname"]: row["status"]
            for row in rows
            if row.get("pxname") == BACKEND and row.get("svname") not in ("BACKEND", "FRONTEND")
        }

    async def wait(self, predicate: Any, what: str, seconds: float = 60.0, every: float = 0.1) -> dict[str, str]:
        """Read the nodes' states until ``predicate(states)`` holds (or fail after ``seconds``)."""
        states: dict[str, str] = {}
        for _ in range(int(seconds / every)):
            if self._process is None or self._daemon.ended.called:
                raise AssertionError(f"haproxy exited while waiting for {what}:\n{self.output}")
            states = await self.states()
            if predicate(states):
                return states
            await deferLater(reactor, every, lambda: None)
        raise AssertionError(f"waited {seconds}s for {what}; HAProxy sees {states}\n{self.output}")

    async def wait_status(self, wanted: Mapping[str, str]) -> None:
        """Until every node named in ``wanted`` has exactly that status (``UP`` or ``DOWN``)."""
        await self.wait(
            lambda states: all(states.get(name) == status for name, status in wanted.items()),
            f"nodes {dict(wanted)}",
        )


# --------------------------------------------------------------------------------------------
# Network namespaces


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def netns_unavailable() -> str | None:
    """Why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2)"
    probe = f"pcxq{os.getpid() % 100000}"  # interface names: 15 characters at most
    try:
        _run("ip", "netns", "add", probe)
        _run("ip", "link", "add", f"{probe}b", "type", "bridge")
        _run("ip", "link", "del", f"{probe}b")
    except (subprocess.CalledProcessError, OSError) as e:
        return f"`ip netns add` / bridges do not work here: {getattr(e, 'stderr', '') or e}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _free_subnet() -> str:
    """A 10.x.y.0/24 prefix (without the last octet) that no route of this machine uses."""
    routes = _run("ip", "-4", "route", "show", "table", "all")
    for n in range(os.getpid() % 200, os.getpid() % 200 + 200):
        prefix = f"10.{200 + n // 256 % 50}.{n % 256}"
        if f"{prefix}." not in routes:
            return prefix
    raise AssertionError("no free 10.x.y.0/24 for the namespaces")


@attrs.define
class Namespaces:
    """
    Network namespaces on one private bridge: the test (this process, on the bridge's first
    address) and one namespace per name, each on its own address.  Nothing is routed off the
    bridge, so no packet leaves the machine.  :meth:`remove` always undoes all of it.
    """

    names: Sequence[str]
    tag: str = attrs.field(factory=lambda: f"pcx{os.getpid() % 100000}")
    prefix: str = ""
    made: list[str] = attrs.field(factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.tag}br"

    @property
    def host_address(self) -> str:
        """The address this process (the fake upstream, the installers) has on the bridge."""
        return f"{self.prefix}.1"

    def address(self, name: str) -> str:
        return f"{self.prefix}.{10 + list(self.names).index(name)}"

    def namespace(self, name: str) -> str:
        return f"{self.tag}{name}"

    def exec_prefix(self, name: str) -> tuple[str, ...]:
        return (shutil.which("ip") or "/usr/sbin/ip", "netns", "exec", self.namespace(name))

    def create(self) -> None:
        self.prefix = _free_subnet()
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        self.made.append("bridge")
        _run("ip", "addr", "add", f"{self.host_address}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for i, name in enumerate(self.names):
            ns, outside, inside = self.namespace(name), f"{self.tag}v{i}", f"{self.tag}p{i}"
            _run("ip", "netns", "add", ns)
            self.made.append(ns)
            _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", ns)
            _run("ip", "link", "set", outside, "master", self.bridge, "up")
            _run("ip", "-n", ns, "addr", "add", f"{self.address(name)}/24", "dev", inside)
            _run("ip", "-n", ns, "link", "set", inside, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")

    def remove(self) -> None:
        for made in reversed(self.made):
            if made == "bridge":
                subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
            else:  # deleting a namespace deletes its end of the veth pair, and so the pair
                subprocess.run(["ip", "netns", "del", made], capture_output=True)
        self.made.clear()


def group(items: Iterable[Any], key: Any) -> dict[Any, set[Any]]:
    """``{key(item): {items with that key}}``."""
    out: dict[Any, set[Any]] = {}
    for item in items:
        out.setdefault(key(item), set()).add(item)
    return out
