"""
What the daemon keeps for its ACME certificate: the HTTP-01 answers the CA is
about to fetch, and the files under ``<cache_dir>/acme/`` (mode 0600), with a
self-signed placeholder so that an ``ssl:`` listener can bind before the first
certificate is issued.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID

from pypicached.http.tls import TLSFiles

#: How long a placeholder is valid: always inside the renewal window, so it is replaced at once.
PLACEHOLDER_DAYS = 1


class Challenges:
    """The key authorizations of the HTTP-01 challenges under way, by token (reactor thread only)."""

    def __init__(self) -> None:
        self._pending: dict[str, str] = {}

    def put(self, token: str, validation: str) -> None:
        self._pending[token] = validation

    def drop(self, token: str) -> None:
        self._pending.pop(token, None)

    def answer(self, token: str) -> str | None:
        return self._pending.get(token)


@attrs.frozen
class Facts:
    """What the daemon needs to know of the certificate it serves."""

    not_after: float
    domains: tuple[str, ...]
    self_signed: bool
    not_before: float = 0.0

    def renews_at(self, before: float) -> float:
        """When to renew: ``before`` its expiry, or a third of its lifetime before for a short-lived one."""
        return self.not_after - min(before, (self.not_after - self.not_before) / 3)


@attrs.frozen
class AcmeFiles:
    """The ACME state directory: the account key, the certificate's key and its full chain."""

    directory: Path

    @property
    def account_key(self) -> Path:
        return self.directory / "account.key"

    @property
    def tls(self) -> TLSFiles:
        return TLSFiles(self.directory / "cert.pem", self.directory / "key.pem")

    def write(self, key_pem: bytes, chain_pem: bytes) -> None:
        """Key first, then certificate, each whole or not at all (a reload checks that they match)."""
        write_private(self.tls.key, key_pem)
        write_private(self.tls.certificate, chain_pem)

    def facts(self) -> Facts | None:
        """The served certificate's expiry and names; None if there is none (or it cannot be read)."""
        try:
            cert = x509.load_pem_x509_certificate(self.tls.certificate.read_bytes())
        except (OSError, ValueError):
            return None
        try:
            names = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
            domains = tuple(names.get_values_for_type(x509.DNSName))  # type: ignore[attr-defined]
        except x509.ExtensionNotFound:
            domains = ()
        after = getattr(cert, "not_valid_after_utc", None) or cert.not_valid_after.replace(tzinfo=datetime.UTC)
        before = getattr(cert, "not_valid_before_utc", None) or cert.not_valid_before.replace(tzinfo=datetime.UTC)
        return Facts(after.timestamp(), domains, cert.issuer == cert.subject, before.timestamp())

    def _paired(self) -> bool:
        """Whether the key and certificate on disk belong together (a crash between their writes can part them)."""
        try:
            cert = x509.load_pem_x509_certificate(self.tls.certificate.read_bytes())
            key = serialization.load_pem_private_key(self.tls.key.read_bytes(), password=None)
        except (OSError, ValueError, TypeError):
            return False
        public = serialization.PublicFormat.SubjectPublicKeyInfo
        encoding = serialization.Encoding.DER
        return cert.public_key().public_bytes(encoding, public) == key.public_key().public_bytes(encoding, public)

    def ensure_placeholder(self, domains: tuple[str, ...]) -> bool:
        """Write a self-signed certificate for ``domains`` if there is no certificate yet; whether one was written."""
        if self.tls.certificate.exists() and self.tls.key.exists() and self._paired():
            return False
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=PLACEHOLDER_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
            .sign(key, hashes.SHA256())
        )
        self.write(private_pem(key), cert.public_bytes(serialization.Encoding.PEM))
        return True


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by the daemon's user only, replacing ``path`` in one rename."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover from an earlier run may have had wider bits
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
