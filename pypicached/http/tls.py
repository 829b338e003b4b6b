"""
TLS listeners with local certificate files: TLS 1.2 or newer, HTTP/1.1 by
ALPN, and a certificate that SIGHUP replaces without dropping a connection
(each new connection takes the context current at its handshake).

``ssl:`` listen strings are built here rather than by Twisted's own parser,
whose defaults still accept TLS 1.0 and cannot reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import OpenSSL
from OpenSSL import SSL, crypto
from packaging.version import Version
from twisted.internet import ssl
from twisted.internet.endpoints import SSL4ServerEndpoint
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()

_BEGIN = b"-----BEGIN CERTIFICATE-----"
_END = b"-----END CERTIFICATE-----"
# pyOpenSSL 24.3 (Debian trixie ships 25.0) takes cryptography's certificates and keys and
# deprecates its own X509 and PKey there; 23.0 (Debian bookworm) takes only its own.
_CRYPTOGRAPHY_OBJECTS = Version(OpenSSL.__version__) >= Version("24.3")


class TLSError(ValueError):
    """A certificate, key or chain that cannot be used; says which file and why."""


@attrs.frozen
class TLSFiles:
    certificate: Path
    key: Path
    chain: Path | None = None

    def load(self) -> ssl.CertificateOptions:
        """Server options for these files, checked to belong together."""
        try:
            key = ssl.KeyPair.load(self.key.read_bytes(), crypto.FILETYPE_PEM)
        except OSError as e:
            raise TLSError(f"cannot read key {self.key}: {e.strerror}") from None
        except Exception as e:
            raise TLSError(f"{self.key} is not a PEM private key ({e})") from None
        certificates = _certificates(self.certificate)
        chain = _certificates(self.chain) if self.chain else certificates[1:]
        try:
            options = ssl.CertificateOptions(
                privateKey=_native(key.original),
                certificate=_native(certificates[0].original),
                extraCertChain=[_native(c.original) for c in chain],
                raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
                acceptableProtocols=[b"http/1.1"],
            )
            options.getContext().check_privatekey()
        except Exception as e:
            raise TLSError(f"{self.key} does not match {self.certificate} ({e})") from None
        return options


def _native(item: Any) -> Any:
    """A pyOpenSSL X509 or PKey in the form this pyOpenSSL wants it."""
    if not _CRYPTOGRAPHY_OBJECTS:
        return item
    return item.to_cryptography() if isinstance(item, crypto.X509) else item.to_cryptography_key()


def _certificates(path: Path) -> list[ssl.Certificate]:
    try:
        text = path.read_bytes()
    except OSError as e:
        raise TLSError(f"cannot read certificate {path}: {e.strerror}") from None
    blocks = [b[b.index(_BEGIN) :] + _END for b in text.split(_END) if _BEGIN in b]
    try:
        found = [ssl.Certificate.loadPEM(b) for b in blocks]
    except Exception as e:
        raise TLSError(f"{path} holds a certificate that cannot be read ({e})") from None
    if not found:
        raise TLSError(f"{path} holds no PEM certificate")
    return found


@implementer(IOpenSSLContextFactory)
class ReloadableContext:
    """The context for new TLS connections, replaced whole by ``reload``."""

    def __init__(self, files: TLSFiles) -> None:
        self.files = files
        self._options = files.load()

    def getContext(self) -> SSL.Context:
        return self._options.getContext()

    def reload(self) -> bool:
        """Read the files again; on any error keep serving the old ones and say why."""
        try:
            options = self.files.load()
        except TLSError as e:
            log.error("TLS reload failed, keeping the current certificate: {e}", e=str(e))
            return False
        self._options = options
        log.info("TLS certificate reloaded from {cert}", cert=str(self.files.certificate))
        return True


def split_endpoint(description: str) -> tuple[str, list[str], dict[str, str]]:
    """An endpoint string's type, positional and keyword arguments (``\\:`` escapes a colon)."""
    parts, current, escaped = [], "", False
    for char in description:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    args, kwargs = [], {}
    for part in parts[1:]:
        name, sep, value = part.partition("=")
        if sep:
            kwargs[name] = value
        else:
            args.append(part)
    return parts[0], args, kwargs


def tls_endpoint(
    reactor: Any, description: str, default_files: TLSFiles | None
) -> tuple[SSL4ServerEndpoint, ReloadableContext] | None:
    """
    Our TLS endpoint for an ``ssl:`` listen string, its files named in the string
    (``privateKey=…:certKey=…[:extraCertChain=…]``) or else by the ``tls_*``
    settings; ``None`` for any other kind of endpoint.
    """
    kind, args, kwargs = split_endpoint(description)
    if kind != "ssl":
        return None
    unknown = set(kwargs) - {"certKey", "privateKey", "extraCertChain", "interface", "backlog"}
    if len(args) != 1 or not args[0].isdigit() or unknown:
        raise TLSError(
            f"{description!r}: expected ssl:PORT[:privateKey=KEY:certKey=CERT][:extraCertChain=CHAIN][:interface=ADDR]"
        )
    if "privateKey" in kwargs:
        certificate = kwargs.get("certKey", kwargs["privateKey"])
        chain = kwargs.get("extraCertChain")
        files = TLSFiles(Path(certificate), Path(kwargs["privateKey"]), Path(chain) if chain else None)
    elif default_files is not None:
        files = default_files
    else:
        raise TLSError(f"{description!r} names no key: add privateKey=…:certKey=…, or set tls_cert and tls_key")
    context = ReloadableContext(files)
    endpoint = SSL4ServerEndpoint(
        reactor,
        int(args[0]),
        context,
        backlog=int(kwargs.get("backlog", "50")),
        interface=kwargs.get("interface", ""),
    )
    return endpoint, context
