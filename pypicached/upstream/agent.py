"""
The agent under the daemon's treq client: pooled connections, redirects followed
as browsers and installers do, and treq made a transparent pipe.

treq's ``HTTPClient`` always wraps its agent in a ``ContentDecoderAgent`` (which
adds ``Accept-Encoding: gzip`` to every request, decodes gzip answers and leaves
the compressed ``Content-Length`` behind) and a ``CookieAgent``, and reads the URL
with hyperlink (which refuses hosts like ``devpi_server`` or ``[::1]``). The proxy
needs the bytes exactly as served: a package file's digest is of them, a
``.tar.gz`` is often labelled ``Content-Encoding: gzip``, pages are gunzipped by
the cache with a bomb limit, and the bytes counted as fetched are those that
crossed the link. So the client hides the caller's ``Accept-Encoding`` from treq
(``as_sent``), ``AsServed``, under treq, puts it back in place of treq's and hides
the answer's ``Content-Encoding`` from the decoder, and the client puts that back
(``as_served``). Redirects are followed here, under treq, so that each hop is
requested exactly as it was given.
"""

from __future__ import annotations

from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, cast

import attrs
from hyperlink import EncodedURL
from treq.client import HTTPClient
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, BrowserLikeRedirectAgent, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

#: Seconds between connection attempts at a host's addresses (happy eyeballs).
ATTEMPT_DELAY = 0.05
#: Where the caller's ``Accept-Encoding`` and the answer's ``Content-Encoding`` wait while in treq.
HIDDEN_ACCEPT = b"X-Pypicached-Accept-Encoding"
HIDDEN_ENCODING = b"X-Pypicached-Content-Encoding"
ACCEPT = b"Accept-Encoding"
ENCODING = b"Content-Encoding"


def pooled_agent(reactor: Any, connect_timeout: float) -> tuple[IAgent, HTTPConnectionPool]:
    """
    The daemon's agent: persistent connections (owned by the caller, who closes
    the pool at stop) and redirects followed, as browsers and installers do.
    """
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 8
    agent = Agent.usingEndpointFactory(reactor, _Endpoints(reactor, connect_timeout or None), pool=pool)
    return BrowserLikeRedirectAgent(agent), pool


def upstream_http(agent: IAgent) -> HTTPClient:
    """The treq client the daemon fetches through: ``agent`` under ``AsServed``, and no cookies kept."""
    jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
    return HTTPClient(AsServed(agent), cookiejar=jar)  # type: ignore[arg-type, unused-ignore]  # takes any jar; 22.2 untyped


@implementer(IAgent)
@attrs.frozen
class AsServed:
    """
    Under treq's decoder: sends the caller's ``Accept-Encoding`` (or none) rather
    than treq's, and hides the answer's ``Content-Encoding`` so that treq leaves
    the body as served.
    """

    agent: IAgent

    def request(
        self,
        method: bytes,
        uri: bytes,
        headers: Headers | None = None,
        bodyProducer: IBodyProducer | None = None,
    ) -> Deferred[IResponse]:
        sent = Headers() if headers is None else headers.copy()
        _move(sent, HIDDEN_ACCEPT, ACCEPT)
        return self.agent.request(method, uri, sent, bodyProducer).addCallback(_hide_encoding)


def _hide_encoding(response: IResponse) -> IResponse:
    _move(response.headers, ENCODING, HIDDEN_ENCODING)
    return response


def as_sent(headers: Headers) -> Headers:
    """The caller's request headers as given to treq: its ``Accept-Encoding`` hidden from the decoder."""
    _move(headers, ACCEPT, HIDDEN_ACCEPT)
    return headers


def as_served(response: IResponse) -> IResponse:
    """The answer's ``Content-Encoding`` as the upstream sent it (treq's decoder sets an empty one)."""
    _move(response.headers, HIDDEN_ENCODING, ENCODING)
    return response


def _move(headers: Headers, source: bytes, target: bytes) -> None:
    """``target`` gets ``source``'s values (or goes if there are none), and ``source`` goes."""
    values = headers.getRawHeaders(source)
    headers.removeHeader(source)
    if values:
        headers.setRawHeaders(target, values)
    else:
        headers.removeHeader(target)


class ExactURL(EncodedURL):
    """
    A URL that treq sends exactly as given: treq re-encodes what it is handed with
    ``to_uri()``, which lower-cases hosts and refuses ``devpi_server`` or ``[::1]``.
    """

    exact = ""

    @classmethod
    def of(cls, uri: bytes) -> ExactURL:
        # hyperlink types from_text as returning a URL, though it builds a ``cls``
        url = cast(ExactURL, cls.from_text(uri.decode("ascii")))
        url.exact = uri.decode("ascii")
        return url

    def to_uri(self) -> ExactURL:
        return self

    def to_text(self, with_password: bool = False) -> str:
        return self.exact


@attrs.frozen
class _Endpoints:
    """
    Agent's usual endpoints (TCP, TLS with the browser-like policy), but with a short
    delay between attempts at a host's addresses: with the default 0.3 s, a refused
    connection to a host of one address is reported only that much later.
    """

    reactor: Any
    timeout: float | None
    policy: Any = attrs.field(factory=BrowserLikePolicyForHTTPS)

    def endpointForURI(self, uri: Any) -> Any:
        host = uri.host.decode("ascii")
        endpoint = HostnameEndpoint(
            self.reactor, host, uri.port, timeout=self.timeout or 30, attemptDelay=ATTEMPT_DELAY
        )
        if uri.scheme == b"https":
            return wrapClientTLS(self.policy.creatorForNetloc(uri.host, uri.port), endpoint)
        if uri.scheme != b"http":
            raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
        return endpoint
