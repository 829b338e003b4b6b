"""The ACME settings and wiring without a CA: parsing, the start-up checks, the placeholder, the challenge path."""

from __future__ import annotations

import datetime
import stat
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pytest_twisted import ensureDeferred
from twisted.internet.defer import maybeDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from pypicached.config import ConfigError, Settings, build_settings
from pypicached.http.acme import AcmeFiles, private_pem
from pypicached.service import certificates, make_service
from pypicached.service.certificates import CertificateKeeper

CA = "https://acme.example.lan/directory"


def test_acme_settings_are_read_and_checked():
    settings = build_settings(
        {"acme_directory": CA, "acme_domains": ["Pip.Example.Lan.", "pip.example.lan", "b.example.lan"]},
        {"acme_email": "ops@example.lan"},
    )
    assert settings.acme_domains == ("pip.example.lan", "b.example.lan")
    assert settings.acme_email == "ops@example.lan" and settings.acme_directory == CA
    for bad in ({"acme_directory": CA}, {"acme_domains": ["a.example.lan"]}):
        with pytest.raises(ConfigError, match="give both or neither"):
            build_settings(bad, {})
    with pytest.raises(ConfigError, match="one or the other"):
        build_settings({"acme_directory": CA, "acme_domains": ["a.lan"], "tls_cert": "c", "tls_key": "k"}, {})
    for domains in (["*.example.lan"], ["127.0.0.1:80"], [], ["-a.lan"]):
        with pytest.raises(ConfigError, match="acme_domains"):
            build_settings({"acme_directory": CA, "acme_domains": domains}, {})
    with pytest.raises(ConfigError, match="acme_email"):
        build_settings({"acme_email": "not an address"}, {})


def test_an_ssl_listener_starts_on_a_placeholder_that_the_keeper_replaces(tmp_path):
    settings = Settings.of(
        cache_dir=tmp_path / "cache", listen=("tcp:0", "ssl:0"), acme_directory=CA, acme_domains=("pip.example.lan",)
    )
    top = make_service(settings, MemoryReactorClock())
    keeper = next(service for service in top if isinstance(service, CertificateKeeper))
    assert [service.name for service in top][:2] == ["cache", "acme certificate"]
    assert len(keeper.contexts) == 1 and keeper.contexts[0].files == keeper.files.tls
    facts = keeper.files.facts()
    assert facts.self_signed and facts.domains == ("pip.example.lan",) and keeper.due(facts)
    for path in (keeper.files.tls.key, keeper.files.tls.certificate):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keeper.files.directory.stat().st_mode) == 0o700
    assert keeper.state()["placeholder"] is True
    # a second start keeps what is there
    assert not keeper.files.ensure_placeholder(keeper.domains)


@ensureDeferred
async def test_the_challenge_path_answers_pending_tokens_only(fake_upstream_json, tmp_path, start_proxy):
    # on a clock of its own, the keeper never orders anything here (no test reaches a real CA)
    clock = Clock()
    proxy = await start_proxy(
        fake_upstream_json.simple_url, clock=clock, acme_directory=CA, acme_domains=("localhost",)
    )
    challenges = proxy.proxy.certificates.challenges
    assert (await proxy.get("/.well-known/acme-challenge/tok")).code == 404
    challenges.put("tok", "tok.thumbprint")
    reply = await proxy.get("/.well-known/acme-challenge/tok")
    assert reply.code == 200 and await reply.text() == "tok.thumbprint"
    challenges.drop("tok")
    assert (await proxy.get("/.well-known/acme-challenge/tok")).code == 404
    assert (await proxy.get("/.well-known/acme-challenge/tok", method="POST")).code == 405


def _short_lived(clock: Clock, hours: float) -> tuple[bytes, bytes]:
    """A key and a certificate for h.lan valid ``hours`` from the clock's now, from a made-up CA."""
    ca, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.fromtimestamp(clock.seconds(), datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h.lan")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "step-ca")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(hours=hours))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("h.lan")]), critical=False)
        .sign(ca, hashes.SHA256())
    )
    return private_pem(key), cert.public_bytes(serialization.Encoding.PEM)


def test_a_short_lived_certificate_is_renewed_a_third_of_its_life_early_never_in_a_loop(tmp_path, monkeypatch):
    """A CA of 24-hour certificates (step-ca's default): renewed after 16 h, not ordered back to back."""
    clock = Clock()
    clock.advance(time.time())
    orders: list[float] = []

    def issue(**_: object) -> tuple[bytes, bytes]:
        orders.append(clock.seconds())
        return _short_lived(clock, 24)

    monkeypatch.setattr(certificates, "issue", issue)
    keeper = certificates.CertificateKeeper(
        reactor=None, clock=clock, run_in_thread=lambda f, *a, **kw: maybeDeferred(f, *a, **kw),
        files=AcmeFiles(tmp_path / "acme"), directory="https://ca.example.lan/dir", domains=("h.lan",), email=None,
    )  # fmt: skip
    keeper.startService()
    for _ in range(20):
        clock.advance(0)
    assert len(orders) == 1  # the first order, then nothing due for a while
    clock.advance(16 * 3600 - 60)
    assert len(orders) == 1
    clock.advance(120)
    assert len(orders) == 2 and orders[1] - orders[0] >= 16 * 3600 - 60
    keeper.stopService()
    assert not clock.getDelayedCalls()


def test_a_key_and_certificate_that_do_not_belong_together_get_a_placeholder(tmp_path):
    """A crash between the key's and the certificate's writes: the listener still starts, on a placeholder."""
    files = AcmeFiles(tmp_path / "acme")
    assert files.ensure_placeholder(("h.lan",))
    first_key = files.tls.key.read_bytes()
    assert not files.ensure_placeholder(("h.lan",))  # a matching pair is kept
    other = AcmeFiles(tmp_path / "other")
    other.ensure_placeholder(("h.lan",))
    files.tls.key.write_bytes(other.tls.key.read_bytes())  # the new key, the old certificate
    assert files.ensure_placeholder(("h.lan",))
    assert files.tls.key.read_bytes() != first_key and files._paired()
