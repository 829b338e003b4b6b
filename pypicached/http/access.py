"""
Who may use the proxy once a tokens file is configured: a client in
``open_networks`` as it is, any other with a token, as HTTP Basic credentials (the
user name is free text, the password the token) or ``Authorization: Bearer``.

The token is hashed and compared in constant time with each entry's hash; an
accepted header is remembered (by its value) until the file changes, so the warm
path is one dictionary lookup. Ten failed attempts in a minute from one address
earn that address a minute of 429. Neither a token nor an ``Authorization``
header is ever logged or shown.
"""

from __future__ import annotations

import binascii
import hmac
import ipaddress
import time
from collections.abc import Sequence
from typing import Any

import attrs
from prometheus_client import CollectorRegistry, Counter
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReactorTime

from pypicached.base.tokens import TokenEntry, digest_of
from pypicached.http.limiter import FailureLimit

#: How many accepted headers are remembered (more are checked anew each time).
MEMO_SIZE = 4096
_USER_CHARS = 64


@attrs.frozen
class Grant:
    """What a request's token is: its name, scope, and the user name the client gave."""

    name: str
    scope: str
    user: str = "-"


@attrs.frozen
class Refusal:
    """Why a request is refused: a status and a one-line reason (and headers to send)."""

    status: int
    reason: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


NEED_TOKEN = Refusal(
    401,
    "a token is needed: send it as the password of HTTP Basic credentials (any user name)",
    ((b"WWW-Authenticate", b'Basic realm="pypicached"'),),
)
TOO_MANY = Refusal(429, "too many failed attempts from this address; try again in a minute", ((b"Retry-After", b"60"),))


def credential(header: bytes) -> tuple[str, bytes] | None:
    """The (user name, token) an ``Authorization`` header carries, or None if it is not one."""
    scheme, _, rest = header.strip().partition(b" ")
    scheme, rest = scheme.lower(), rest.strip()
    if scheme == b"bearer":
        return ("-", rest) if rest and b" " not in rest else None
    if scheme != b"basic":
        return None
    try:
        user, colon, token = binascii.a2b_base64(rest, strict_mode=True).partition(b":")
        name = user.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    if not colon or not token:
        return None
    return "".join(c if c.isprintable() and c != " " else "_" for c in name[:_USER_CHARS]) or "-", token


class Access:
    """The token table, the open networks and the failure limit, asked once per request."""

    def __init__(
        self,
        *,
        clock: IReactorTime,
        registry: CollectorRegistry,
        open_networks: Sequence[str] = (),
        admin_token: str | None = None,
    ) -> None:
        self._clock = clock
        self._networks = [ipaddress.ip_network(n) for n in open_networks]
        self._open: dict[str, bool] = {}
        self._admin_token = admin_token
        self._entries: tuple[TokenEntry, ...] = ()
        self._memo: dict[bytes, Grant] = {}
        self.limit = FailureLimit(clock)
        self.usage: dict[str, dict[str, Any]] = {}
        self._requests = Counter("pypicached_token_requests", "Requests per token.", ["token"], registry=registry)
        self._bytes = Counter("pypicached_token_bytes", "Bytes sent per token.", ["token"], registry=registry)
        self.limit.export(registry)

    def load(self, entries: tuple[TokenEntry, ...]) -> None:
        """The tokens file's entries now; what was remembered of the old ones is forgotten."""
        self._entries = entries
        self._memo = {}

    def is_open(self, host: str) -> bool:
        """Whether ``host`` is in ``open_networks`` (remembered per address)."""
        known = self._open.get(host)
        if known is None:
            try:
                ip = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                return False
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            known = any(ip in network for network in self._networks)
            if len(self._open) > MEMO_SIZE:
                self._open.clear()
            self._open[host] = known
        return known

    def check(self, request: Any) -> Refusal | None:
        """
        None if ``request`` may be answered (its ``grant`` set if it carries a token), else why not.
        A valid token is let in even from an address the failure limit blocks: behind a load
        balancer every client shares its address, and one client's stale token must not lock
        out the rest. Only what fails is throttled.
        """
        address = request.getClientAddress()
        host = address.host if isinstance(address, (IPv4Address, IPv6Address)) else ""
        header = request.getHeader(b"authorization")
        if header is not None:
            grant = self._memo.get(header) or self._grant(header)
            if grant is not None:
                request.grant = grant
                return None
        if host and self.is_open(host):
            return None  # an open client's other credentials (for a server behind it) are its own business
        if host and self.limit.blocked(host):
            return TOO_MANY
        if header is not None:
            self.limit.failed(host or "-")
        return NEED_TOKEN

    def _grant(self, header: bytes) -> Grant | None:
        found = credential(header)
        if found is None:
            return None
        user, token = found
        digest = digest_of(token).encode()
        match: TokenEntry | None = None
        for entry in self._entries:  # every entry compared, in constant time
            if hmac.compare_digest(digest, entry.digest.encode()):
                match = entry
        if match is not None:
            grant = Grant(match.name, match.scope, user)
        elif self._admin_token and hmac.compare_digest(token, self._admin_token.encode()):
            grant = Grant("admin_token", "admin", user)
        else:
            return None
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[header] = grant
        return grant

    def served(self, grant: Grant, nbytes: int) -> None:
        """Count a request answered under ``grant``."""
        self._requests.labels(grant.name).inc()
        self._bytes.labels(grant.name).inc(nbytes)
        used = self.usage.setdefault(grant.name, {"requests": 0, "bytes": 0, "last_used": None})
        used["requests"] += 1
        used["bytes"] += nbytes
        used["last_used"] = self._clock.seconds()

    def summary(self) -> dict[str, Any]:
        """For ``/stats``: each token's use since the daemon started (by name), and the failures."""
        return {
            "tokens": {entry.name: entry.scope for entry in self._entries},
            "use_since_start": {
                name: {**used, "last_used": utc(used["last_used"])} for name, used in self.usage.items()
            },
            "failed_attempts": self.limit.failures,
            "addresses_blocked": self.limit.blocks,
        }


def utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
