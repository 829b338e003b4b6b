"""
One certificate order from an ACME CA, through the ``acme`` library (certbot's,
as Debian packages it): synchronous, so the daemon runs ``issue`` in a thread.
HTTP-01 answers are handed to the daemon's plain listener through ``publish``
before the CA is told to look, and withdrawn once it has.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from pathlib import Path

import josepy
from acme import challenges, client, errors, messages
from acme.crypto_util import make_csr
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pypicached.http.acme import private_pem, write_private

#: How long one order may take, from the new order to the certificate.
#: Within systemd's stop timeout (90 s): a stop waits for an order under way.
ORDER_DEADLINE = 45.0
USER_AGENT = "pypicached"


def account_key(path: Path) -> josepy.JWKRSA:
    """The ACME account's key, made and kept (0600) on first use, so renewals reuse the account."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        write_private(path, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ))  # fmt: skip
    return josepy.JWKRSA(key=key)


def _client(directory: str, key: josepy.JWKRSA, email: str | None, verify: bool | str) -> client.ClientV2:
    """A client signed in to the CA, with the account registered now or found again by its key."""
    net = client.ClientNetwork(key, user_agent=USER_AGENT, verify_ssl=verify)  # type: ignore[arg-type]  # a CA file path is passed on to requests
    acme = client.ClientV2(messages.Directory.from_json(net.get(directory).json()), net=net)
    registration = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
    try:
        acme.new_account(registration)
    except errors.ConflictError as e:  # this key already has an account: use it
        found = messages.RegistrationResource(uri=e.location, body=messages.Registration())
        net.account = found
        acme.query_registration(found)
    return acme


def issue(
    *,
    directory: str,
    domains: tuple[str, ...],
    email: str | None,
    account: Path,
    publish: Callable[[str, str], None],
    withdraw: Callable[[str], None],
    verify: bool | str = True,
) -> tuple[bytes, bytes]:
    """A new key and the certificate chain the CA issued for it (PEM), for ``domains``."""
    acme = _client(directory, account_key(account), email, verify)
    key_pem = private_pem(ec.generate_private_key(ec.SECP256R1()))
    order = acme.new_order(make_csr(key_pem, list(domains)))
    tokens = []
    try:
        for authorization in order.authorizations:
            if authorization.body.status == messages.STATUS_VALID:  # proven recently: the CA reuses it
                continue
            challenge = next((c for c in authorization.body.challenges if isinstance(c.chall, challenges.HTTP01)), None)
            if challenge is None:
                raise errors.Error(f"the CA offers no HTTP-01 challenge for {authorization.body.identifier.value}")
            response, validation = challenge.chall.response_and_validation(acme.net.key)
            token = challenge.chall.encode("token")
            publish(token, validation)
            tokens.append(token)
            acme.answer_challenge(challenge, response)
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_DEADLINE)
        done = acme.poll_and_finalize(order, deadline)
    finally:
        for token in tokens:
            withdraw(token)
    return key_pem, done.fullchain_pem.encode()
