"""
Debian's pebble (Let's Encrypt's test CA) as a child process on loopback, with its own
config, its own TLS certificate and a fresh root; its HTTP-01 checks go to ``http_port``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import time
import urllib.request
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from .certs import make_ca, make_server


def pebble_binary() -> str:
    """Debian's pebble; an AssertionError (the test fails, never skips) when it is not installed."""
    found = shutil.which("pebble") or ("/usr/bin/pebble" if os.access("/usr/bin/pebble", os.X_OK) else None)
    assert found, "Debian's pebble is needed (make test installs it: make pebble)"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Pebble(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.listening: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        # both its listeners said so (the log line comes just before each socket binds: see accepting())
        # ("Pebble <date> <time> Listening on: …" and "… Management interface listening on: …")
        if b" Listening on: " in self.output and b" listening on: " in self.output and not self.listening.called:
            self.listening.callback(None)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError(self.output.decode(errors="replace")))
        self.ended.callback(None)


@attrs.define
class Pebble:
    directory_url: str
    tls_ca: Path  # what pebble's own API is served with
    root: Path  # the root its certificates chain to
    process: Any
    protocol: _Pebble

    async def stop(self) -> None:
        if self.protocol.ended.called:
            return
        self.process.signalProcess("KILL")
        await self.protocol.ended


async def start_pebble(directory: Path, http_port: int) -> Pebble:
    """Pebble listening on 127.0.0.1, validating HTTP-01 on ``http_port``, without its sleeps or bad nonces."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca(directory)
    files = make_server(directory, ca, "pebble")
    port, management = free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(files.cert),
            "privateKey": str(files.key),
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (directory / "pebble.json").write_text(json.dumps(config))
    env = {"PATH": os.environ.get("PATH", "/usr/bin"), "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    protocol = _Pebble()
    process = reactor.spawnProcess(
        protocol, pebble_binary(), [pebble_binary(), "-config", str(directory / "pebble.json")], env, str(directory)
    )
    await protocol.listening
    await threads.deferToThread(accepting, [port, management], protocol)
    root = directory / "root.pem"
    root.write_bytes(await threads.deferToThread(_get, f"https://localhost:{management}/roots/0", files.ca))
    return Pebble(f"https://localhost:{port}/dir", files.ca, root, process, protocol)


def accepting(ports: list[int], protocol: _Pebble, within: float = 30.0) -> None:
    """
    (In a thread.) Wait until every one of ``ports`` accepts a connection: pebble logs each
    listener just before it binds, so a client that connects on the log line alone is sometimes
    refused (seen under load).
    """
    deadline = time.monotonic() + within
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except ConnectionRefusedError:
                if protocol.ended.called or time.monotonic() > deadline:
                    raise AssertionError(f"pebble never accepted on port {port}: {protocol.output!r}") from None
                time.sleep(0.01)  # a condition polled, with a deadline: the socket is there or not


def _get(url: str, ca: Path) -> bytes:
    with urllib.request.urlopen(url, context=ssl.create_default_context(cafile=str(ca)), timeout=30) as response:
        return response.read()
