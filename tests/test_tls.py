"""TLS listeners: installers over https with a local CA, TLS 1.2 or newer only, ALPN, reload."""

from __future__ import annotations

import shutil
import socket
import ssl

import pytest
from pytest_twisted import ensureDeferred
from twisted.internet import reactor, threads

from pypicached.config import Settings
from pypicached.service import endpoint_for

from .certs import make_ca, make_server
from .fake_upstream import upstream_file_counts
from .installers import run_pip, run_uv
from .projects import WANTED


@pytest.fixture
def tls_proxy(fake_upstream_json, tmp_path, start_proxy):
    """A proxy with a TLS listener on 127.0.0.1 and the files behind it."""
    ca = make_ca(tmp_path)
    files = make_server(tmp_path, ca)

    async def start():
        proxy = await start_proxy(fake_upstream_json.simple_url)
        endpoint, context = endpoint_for(
            reactor, f"ssl:0:privateKey={files.key}:certKey={files.cert}:interface=127.0.0.1", Settings()
        )
        port = await endpoint.listen(proxy.proxy.site)
        return proxy, port, context

    return start, files, ca


def handshake(port: int, ca_file, **options) -> tuple[int, str | None, str]:
    """Connect with Python's ssl module; (certificate serial, ALPN protocol, TLS version)."""
    context = ssl.create_default_context(cafile=str(ca_file))
    for name, value in options.items():
        setattr(context, name, value)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            cert = tls.getpeercert()
            return int(cert["serialNumber"], 16), tls.selected_alpn_protocol(), tls.version()


@ensureDeferred
async def test_pip_and_uv_install_over_https_with_a_local_ca(tls_proxy, fake_upstream_json, tmp_path):
    start, files, _ = tls_proxy
    _, port, _ = await start()
    index = f"https://localhost:{port.getHost().port}/simple/"
    # pip >= 24.2 verifies through the system trust store (truststore), which reads
    # SSL_CERT_FILE; --cert alone is not consulted there
    result = await run_pip(
        ["download", "-d", str(tmp_path / "pip"), "pcx-beta"],
        index,
        home=tmp_path / "h1",
        env_extra={"SSL_CERT_FILE": str(files.ca)},
    )
    result.check()
    assert sorted(p.name for p in (tmp_path / "pip").iterdir()) == WANTED
    result = await run_uv(
        ["install", "--target", str(tmp_path / "uv"), "pcx-beta"],
        index,
        home=tmp_path / "h2",
        env_extra={"SSL_CERT_FILE": str(files.ca)},
    )
    result.check()
    assert (tmp_path / "uv" / "pcx_beta" / "__init__.py").exists()
    assert all(count == 1 for count in upstream_file_counts(fake_upstream_json).values())


@ensureDeferred
async def test_tls_12_or_newer_only_and_alpn_http11(tls_proxy):
    start, files, _ = tls_proxy
    _, port, _ = await start()
    number = port.getHost().port
    serial, alpn, version = await threads.deferToThread(handshake, number, files.ca)
    assert serial == files.serial and alpn == "http/1.1" and version in ("TLSv1.2", "TLSv1.3")
    old_client = {"minimum_version": ssl.TLSVersion.TLSv1_1, "maximum_version": ssl.TLSVersion.TLSv1_1}
    with pytest.raises(ssl.SSLError):
        await threads.deferToThread(_handshake_lenient, number, files.ca, old_client)
    # the same lenient client does get through when it may use TLS 1.2: the refusal is the proxy's
    modern = {"minimum_version": ssl.TLSVersion.TLSv1_1, "maximum_version": ssl.TLSVersion.TLSv1_2}
    assert (await threads.deferToThread(_handshake_lenient, number, files.ca, modern))[2] == "TLSv1.2"


def _handshake_lenient(port, ca_file, options):
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    for name, value in options.items():
        setattr(context, name, value)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            return None, tls.selected_alpn_protocol(), tls.version()


@ensureDeferred
async def test_reload_takes_a_new_certificate_and_keeps_the_old_on_a_broken_one(tls_proxy, tmp_path):
    start, files, ca = tls_proxy
    _, port, context = await start()
    number = port.getHost().port
    # a connection open across the reload stays usable
    held = ssl.create_default_context(cafile=str(files.ca)).wrap_socket(
        socket.create_connection(("127.0.0.1", number)), server_hostname="localhost", do_handshake_on_connect=False
    )
    await threads.deferToThread(held.do_handshake)

    (tmp_path / "new").mkdir()
    renewed = make_server(tmp_path / "new", ca)
    shutil.copy(renewed.cert, files.cert)
    shutil.copy(renewed.key, files.key)
    assert context.reload()
    assert (await threads.deferToThread(handshake, number, files.ca))[0] == renewed.serial

    files.key.write_text("not a key\n")
    assert not context.reload()
    assert (await threads.deferToThread(handshake, number, files.ca))[0] == renewed.serial

    def use_held():
        held.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return held.recv(100)

    assert (await threads.deferToThread(use_held)).startswith(b"HTTP/1.1 200")
    held.close()


@ensureDeferred
async def test_sighup_reloads_the_daemons_certificate(fake_upstream_json, tmp_path):
    import signal

    from .daemon import Daemon, twistd_args
    from .installers import clean_env
    from .proxy_rig import until

    ca = make_ca(tmp_path)
    files = make_server(tmp_path, ca)
    daemon = Daemon()
    argv = twistd_args(
        "--upstream",
        fake_upstream_json.simple_url,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--listen",
        f"ssl:0:privateKey={files.key}:certKey={files.cert}:interface=127.0.0.1",
    )
    process = reactor.spawnProcess(daemon, argv[0], argv, env=clean_env(tmp_path), path=str(tmp_path))
    try:
        port = await daemon.port
        assert (await threads.deferToThread(handshake, port, files.ca))[0] == files.serial
        (tmp_path / "new").mkdir()
        renewed = make_server(tmp_path / "new", ca)
        shutil.copy(renewed.cert, files.cert)
        shutil.copy(renewed.key, files.key)
        process.signalProcess("HUP")
        await until(lambda: b"TLS certificate reloaded" in daemon.output, turns=200000)
        assert (await threads.deferToThread(handshake, port, files.ca))[0] == renewed.serial
    finally:
        process.signalProcess(signal.SIGTERM)
        await daemon.ended


def test_listen_ssl_takes_its_files_from_the_settings_when_it_names_none(tmp_path):
    from pypicached.http.tls import TLSError

    files = make_server(tmp_path, make_ca(tmp_path))
    settings = Settings(tls_cert=files.cert, tls_key=files.key)
    endpoint, context = endpoint_for(reactor, "ssl:0:interface=127.0.0.1", settings)
    assert context.files.certificate == files.cert and context.files.key == files.key
    assert endpoint_for(reactor, "tcp:0", settings)[1] is None
    with pytest.raises(TLSError, match="names no key"):
        endpoint_for(reactor, "ssl:0", Settings())
    with pytest.raises(TLSError, match="cannot read key"):
        endpoint_for(reactor, f"ssl:0:privateKey={tmp_path / 'missing.key'}:certKey={files.cert}", Settings())
    (tmp_path / "other").mkdir()
    other = make_server(tmp_path / "other", make_ca(tmp_path / "other"))
    with pytest.raises(TLSError, match="does not match"):
        endpoint_for(reactor, f"ssl:0:privateKey={other.key}:certKey={files.cert}", Settings())
