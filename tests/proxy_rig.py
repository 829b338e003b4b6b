"""A real pypicached listening on 127.0.0.1, wired as the daemon wires it, and a plain client for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from pypicached.config import Settings
from pypicached.service import Proxy

_PENDING = object()


class ResponseView:
    """What a test reads of a response's status line and headers (``self.response`` is the response)."""

    response: IResponse

    @property
    def code(self) -> int:
        return self.response.code

    @property
    def headers(self) -> Headers:
        return self.response.headers

    @property
    def length(self) -> int:
        """The ``Content-Length`` the proxy sent (``UNKNOWN_LENGTH`` if none)."""
        return self.response.length

    def header(self, name: str) -> str | None:
        values = self.response.headers.getRawHeaders(name)
        return values[0] if values else None


@attrs.define
class Reply(ResponseView):
    """A response as the proxy sent it: no content decoding, no redirect following."""

    response: IResponse
    _body: Deferred[bytes] | None = None
    _waiters: list[Deferred[bytes]] = attrs.field(factory=list)
    _result: Any = _PENDING

    def content(self) -> Deferred[bytes]:
        """The body (read once, however often asked); fails if it was cut short."""
        if self._body is None:
            self._body = readBody(self.response)
            self._body.addBoth(self._keep)
        mine: Deferred[bytes] = Deferred()
        if self._result is not _PENDING:
            _fire(mine, self._result)
        else:
            self._waiters.append(mine)
        return mine

    def _keep(self, result: Any) -> None:
        self._result = result
        for waiter in self._waiters:
            _fire(waiter, result)

    async def text(self) -> str:
        return (await self.content()).decode("utf-8", "replace")


def _fire(d: Deferred, result: Any) -> None:
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)


class _RawClient(Protocol):
    def __init__(self, request: bytes) -> None:
        self._request = request
        self._chunks: list[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self._request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self._chunks.append(data)

    def connectionLost(self, reason: Any) -> None:
        self.done.callback(b"".join(self._chunks))


@attrs.define
class RunningProxy:
    proxy: Proxy
    port: Any
    base_url: str
    pool: HTTPConnectionPool = attrs.field(factory=lambda: HTTPConnectionPool(reactor, persistent=False))

    @property
    def index_url(self) -> str:
        return self.base_url + "/simple/"

    @property
    def port_number(self) -> int:
        return self.port.getHost().port

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> Deferred[Reply]:
        """The response to ``method path`` (``path`` may also be a full URL), body unread."""
        url = path if "://" in path else self.base_url + path
        sent = Headers({k: [v] for k, v in (headers or {}).items()})
        return Agent(reactor, pool=self.pool).request(method.encode(), url.encode(), sent).addCallback(Reply)

    async def raw(self, request: bytes) -> bytes:
        """Send bytes as they are and read until the proxy closes the connection."""
        client = _RawClient(request)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port_number), client)
        return await client.done

    @inlineCallbacks
    def stop(self) -> Any:
        yield self.port.stopListening()
        yield ensureDeferred(self.proxy.stop())


async def until(predicate: Any, turns: int = 10000) -> None:
    """Let the reactor run until ``predicate()`` holds: waits on events, never on the wall clock."""
    for _ in range(turns):
        if predicate():
            return
        await deferLater(reactor, 0, lambda: None)
    raise AssertionError("condition never held")


async def settled(running: RunningProxy, path: str) -> None:
    """
    Wait for the proxy's download of ``path``, if one is in flight, to end, and for
    every disk write started meanwhile (page records pass through ``tmp/``) to land.
    """
    growing = running.proxy.files.downloading(tuple(path.strip("/").split("/")))
    if growing is not None:
        await growing.finished()
    await running.proxy.disk_work.idle()


async def read_until_closed(sock: Any) -> tuple[bytes, bool]:
    """What a non-blocking socket receives, and whether the peer closed or reset it."""
    data = b""
    for _ in range(10000):
        try:
            chunk = sock.recv(65536)
        except BlockingIOError:
            await deferLater(reactor, 0, lambda: None)
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


@inlineCallbacks
def start_proxy(upstream_url: str, cache_dir: Path, *, clock: Any = None, **settings: Any) -> Any:
    """
    Start a proxy on a random loopback port; returns a ``RunningProxy``. With a
    ``Clock``, every timer (TTLs, timeouts) waits for the test to advance it.
    """
    proxy = Proxy(Settings.of(upstream=upstream_url, cache_dir=cache_dir, **settings), reactor, clock=clock)
    proxy.start()
    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(proxy.site)
    return RunningProxy(proxy, port, f"http://127.0.0.1:{port.getHost().port}")
