"""
The operator's endpoints: the status page, ``/stats``, ``/metrics``, ``/health``,
and the admin actions that change the cache (``POST /admin/...``), which answer
only a loopback client or one with the configured bearer token.

A loopback connection that carries a forwarding header is not trusted as local:
that is a reverse proxy on this host passing on someone else's request. Nor is one
with an ``Origin`` header: that is a web page in a browser on this host (which
would otherwise let any site purge the cache with a cross-site POST). Once an
``admin_token`` is configured, every client must send it, loopback included,
since a reverse proxy need not add any forwarding header.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Callable
from typing import Any, Protocol

import attrs
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IReactorTime
from twisted.web.server import Request

from pypicached.base.names import is_valid_name, normalize
from pypicached.cache.files import FileCache
from pypicached.cache.housekeeping import Housekeeper
from pypicached.cache.router import Router
from pypicached.ops.health import Health
from pypicached.ops.metrics import Metrics
from pypicached.ops.statuspage import base_url, render
from pypicached.ops.summary import summary
from pypicached.policy.explain import explain
from pypicached.policy.gate import Gate

FORWARDING_HEADERS = (
    b"forwarded",
    b"x-forwarded-for",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"x-real-ip",
    b"x-client-ip",
    b"true-client-ip",
    b"via",
)
#: Sent by browsers with every POST: a web page, never the admin command.
BROWSER_HEADERS = (b"origin",)


class ChallengeAnswers(Protocol):
    """The ACME challenges under way (``http.acme.Challenges``): what the CA's check of a token gets."""

    def answer(self, token: str) -> str | None: ...


@attrs.frozen
class Answer:
    """A complete response for ``ProxyResource`` to send."""

    code: int
    body: bytes
    content_type: str
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _json(code: int, value: Any, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Answer:
    return Answer(code, json.dumps(value, indent=1).encode() + b"\n", "application/json", headers)


def is_local(request: Request) -> bool:
    """A client on this host (loopback, or a UNIX socket) that is neither relaying for another nor a browser."""
    if any(request.getHeader(name) is not None for name in FORWARDING_HEADERS + BROWSER_HEADERS):
        return False
    address = request.getClientAddress()
    if isinstance(address, UNIXAddress):
        return True
    if isinstance(address, (IPv4Address, IPv6Address)):
        try:
            ip = ipaddress.ip_address(address.host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_loopback
    return False


class Control:
    """Answers the operator's paths from the live proxy's parts."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        health: Health,
        indexes: Router,
        gate: Gate,
        files: FileCache,
        housekeeper: Housekeeper,
        clock: IReactorTime,
        upstream_url: str,
        admin_token: str | None = None,
        access_summary: Callable[[], dict[str, Any]] | None = None,
        challenges: ChallengeAnswers | None = None,
        certificate: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self._metrics = metrics
        self._health = health
        self._indexes = indexes
        self._gate = gate
        self._files = files
        self._housekeeper = housekeeper
        self._clock = clock
        self._upstream_url = upstream_url
        self._token = admin_token
        self._access_summary = access_summary
        self._challenges = challenges
        self._certificate = certificate

    def summary(self) -> dict[str, Any]:
        """The ``/stats`` figures now."""
        m = self._metrics
        figures = summary(
            m.ledger,
            self._housekeeper.usage(),
            now=self._clock.seconds(),
            upstream_url=self._upstream_url,
            upstreams=m.upstreams,
            started=m.started,
            downloads_in_flight=self._files.in_flight(),
            evictions=self._housekeeper.evictions,
            digest_mismatches=self._files.digest_mismatches,
            stale_pages_served=int(m.registry.get_sample_value("pypicached_stale_pages_served_total") or 0),
            policy=self._gate.summary(),
            throughput=m.throughput,
        )
        if self._access_summary is not None:  # token names and their use; never a token
            figures["access"] = self._access_summary()
        if self._certificate is not None:
            figures["certificate"] = self._certificate()
        return figures

    async def policy(self, request: Request, project: str, version: str | None = None) -> Answer:
        """What the policy does to ``project`` (or one version of it), and why."""
        if not is_valid_name(project):
            return _json(404, {"error": f"not a project name: {project!r}"})
        return _json(200, await explain(self._gate, self._indexes, normalize(project), version, self._clock.seconds()))

    def status_page(self, request: Request) -> Answer:
        base = base_url(request.getHeader(b"host"), request.isSecure())
        return Answer(200, render(self.summary(), base), "text/html; charset=utf-8")

    def stats(self, request: Request) -> Answer:
        return _json(200, self.summary())

    def metrics(self, request: Request) -> Answer:
        return Answer(200, generate_latest(self._metrics.registry), CONTENT_TYPE_LATEST)

    async def health(self, request: Request) -> Answer:
        ok, body = await self._health.check()
        return _json(200 if ok else 503, body)

    def acme_challenge(self, request: Request, token: str) -> Answer:
        """The key authorization an ACME CA fetches to check that this host answers for its name (HTTP-01)."""
        answer = self._challenges.answer(token) if self._challenges else None
        if answer is None:
            return Answer(404, b"no such challenge\n", "text/plain; charset=utf-8")
        return Answer(200, answer.encode("ascii"), "application/octet-stream")

    def refusal(self, request: Request) -> Answer | None:
        """Why ``request`` may not use an admin endpoint, or None if it may (an ``admin`` token may)."""
        grant = getattr(request, "grant", None)
        if grant is not None and grant.scope == "admin":
            return None
        if self._token:
            scheme, _, token = (request.getHeader(b"authorization") or b"").decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self._token.encode()):
                return None
            return _json(
                401,
                {"error": "admin endpoints need the bearer token (admin_token)"},
                ((b"WWW-Authenticate", b'Bearer realm="pypicached"'),),
            )
        if is_local(request):
            return None
        return _json(
            403,
            {
                "error": "admin endpoints answer local clients only (no admin_token is configured); "
                "a browser or a relayed request is not local"
            },
        )

    async def purge(self, request: Request, project: str) -> Answer:
        """Forget every page of ``project``, so the next request fetches it anew."""
        refused = self.refusal(request)
        if refused is not None:
            return refused
        if not is_valid_name(project):
            return _json(400, {"error": f"not a project name: {project!r}"})
        project = normalize(project)
        removed = await self._indexes.purge(project)
        return _json(200, {"project": project, "removed_pages": removed})

    async def purge_file(self, request: Request, filename: str) -> Answer:
        """Delete every cached copy of ``filename`` (and its ``.metadata``)."""
        refused = self.refusal(request)
        if refused is not None:
            return refused
        removed = await self._files.purge(filename)
        for _, size in removed:
            self._housekeeper.removed(size)
        return _json(
            200,
            {
                "filename": filename,
                "removed": [str(path) for path, _ in removed],
                "removed_bytes": sum(size for _, size in removed),
            },
        )

    def no_such_action(self, request: Request) -> Answer:
        return self.refusal(request) or _json(
            404,
            {"error": "no such admin action; there are POST /admin/purge/PROJECT and POST /admin/purge-file/FILENAME"},
        )
