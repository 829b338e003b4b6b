"""
Certificates from an ACME CA, against Debian's pebble on loopback: the first issuance
(replacing the self-signed placeholder), renewal when the injected clock reaches 30 days
before expiry, the CA down at renewal time (the old certificate still served, the failure
on /stats and retried with backoff), and pip over https through the issued certificate.
"""

from __future__ import annotations

import json
import socket
import ssl
import stat
import time

import pytest
import pytest_twisted
from pytest_twisted import ensureDeferred
from twisted.internet import defer, reactor, task, threads
from twisted.internet.endpoints import TCP4ServerEndpoint

from pypicached.service import endpoint_for
from pypicached.service.certificates import RENEW_BEFORE, RETRY_FIRST

from .installers import run_pip
from .pebble import Pebble, free_port, start_pebble
from .projects import WANTED


def serial_served(port: int, root) -> int:  # type: ignore[no-untyped-def]
    """The serial of the certificate a client that trusts only ``root`` verifies for localhost."""
    context = ssl.create_default_context(cafile=str(root))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return int(tls.getpeercert()["serialNumber"], 16)


@pytest.fixture
def acme_proxy(fake_upstream_json, tmp_path, start_proxy, monkeypatch):
    """A proxy for localhost with an ACME CA (pebble, validating on the proxy's plain port) and a TLS listener."""
    running = []

    async def start():
        clock = task.Clock()
        clock.advance(time.time())
        http_port = free_port()
        pebble = await start_pebble(tmp_path / "pebble", http_port)
        running.append(pebble)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(pebble.tls_ca))  # how an operator trusts a private CA
        proxy = await start_proxy(
            fake_upstream_json.simple_url, clock=clock, acme_directory=pebble.directory_url,
            acme_domains=("localhost",), acme_email="ops@example.lan",
        )  # fmt: skip
        plain = await TCP4ServerEndpoint(reactor, http_port, interface="127.0.0.1").listen(proxy.proxy.site)
        keeper = proxy.proxy.certificates
        assert keeper.files.ensure_placeholder(keeper.domains)
        endpoint, context = endpoint_for(reactor, "ssl:0:interface=127.0.0.1", proxy.proxy.settings)
        keeper.contexts.append(context)
        port = await endpoint.listen(proxy.proxy.site)
        running.extend([plain, port])
        return proxy, pebble, keeper, clock, port.getHost().port

    yield start
    for thing in reversed(running):
        stopped = thing.stop() if isinstance(thing, Pebble) else thing.stopListening()
        pytest_twisted.blockon(defer.ensureDeferred(stopped) if not isinstance(stopped, defer.Deferred) else stopped)


async def issued(keeper, clock) -> None:  # type: ignore[no-untyped-def]
    """Let the keeper's scheduled check run and wait for its order to end."""
    clock.advance(0)
    await keeper.check()


@ensureDeferred
async def test_first_issuance_replaces_the_placeholder_and_pip_installs_over_it(acme_proxy, tmp_path):
    proxy, pebble, keeper, clock, port = await acme_proxy()
    # before the first issuance the listener serves the self-signed placeholder, which pebble's root does not vouch for
    with pytest.raises(ssl.SSLCertVerificationError):
        await threads.deferToThread(serial_served, port, pebble.root)
    assert json.loads(await (await proxy.get("/stats")).text())["certificate"]["placeholder"] is True
    await issued(keeper, clock)
    assert keeper.last_error is None, keeper.last_error
    serial = await threads.deferToThread(serial_served, port, pebble.root)
    assert serial
    for path in (keeper.files.tls.key, keeper.files.tls.certificate, keeper.files.account_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    certificate = json.loads(await (await proxy.get("/stats")).text())["certificate"]
    assert certificate["placeholder"] is False and certificate["domains"] == ["localhost"]
    assert certificate["renews_at"] < certificate["not_after"] and certificate["last_error"] is None
    assert keeper.challenges._pending == {}  # answered, then withdrawn
    result = await run_pip(
        ["download", "-d", str(tmp_path / "pip"), "pcx-beta"],
        f"https://localhost:{port}/simple/",
        home=tmp_path / "home",
        env_extra={"SSL_CERT_FILE": str(pebble.root)},
    )
    result.check()
    assert sorted(p.name for p in (tmp_path / "pip").iterdir()) == WANTED


@ensureDeferred
async def test_renewal_30_days_before_expiry_on_the_clock(acme_proxy):
    proxy, pebble, keeper, clock, port = await acme_proxy()
    await issued(keeper, clock)
    first = await threads.deferToThread(serial_served, port, pebble.root)
    not_after = keeper.files.facts().not_after
    # a day before the renewal window nothing is ordered; the daily check after it renews
    clock.advance(not_after - RENEW_BEFORE - clock.seconds() - 86400 - 1)
    assert keeper._under_way is None and keeper.renewed_at is not None
    renewed_at = keeper.renewed_at
    assert await threads.deferToThread(serial_served, port, pebble.root) == first
    clock.advance(86400 + 2)
    await keeper.check()
    assert keeper.renewed_at != renewed_at and keeper.last_error is None, keeper.last_error
    assert await threads.deferToThread(serial_served, port, pebble.root) != first
    assert keeper.files.facts().not_after >= not_after  # pebble dates it by the wall clock, not ours


@ensureDeferred
async def test_ca_down_at_renewal_keeps_the_certificate_and_retries_with_backoff(acme_proxy):
    proxy, pebble, keeper, clock, port = await acme_proxy()
    await issued(keeper, clock)
    serial = await threads.deferToThread(serial_served, port, pebble.root)
    await pebble.stop()
    clock.advance(keeper.files.facts().not_after - RENEW_BEFORE - clock.seconds() + 1)
    await keeper.check()
    assert keeper.failures == 1 and keeper.last_error
    assert await threads.deferToThread(serial_served, port, pebble.root) == serial
    certificate = json.loads(await (await proxy.get("/stats")).text())["certificate"]
    assert certificate["failures"] == 1 and "Connection refused" in certificate["last_error"]
    page = await (await proxy.get("/")).text()
    assert "last renewal failed (1x)" in page
    assert keeper._next.getTime() - clock.seconds() == RETRY_FIRST
    clock.advance(RETRY_FIRST)
    await keeper.check()
    assert keeper.failures == 2 and keeper._next.getTime() - clock.seconds() == 2 * RETRY_FIRST
    assert await threads.deferToThread(serial_served, port, pebble.root) == serial
