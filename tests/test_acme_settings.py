"""The ACME settings and wiring without a CA: parsing, the start-up checks, the placeholder, the challenge path."""

from __future__ import annotations

import stat

import pytest
from pytest_twisted import ensureDeferred
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from pypicached.config import ConfigError, Settings, build_settings
from pypicached.service import make_service
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
