"""
One index at several addresses: an ordered list of mirrors of the same index.

Each mirror has its own client and its own health (breaker and probe). A request
goes to the first mirror that is up; a failure that marks that mirror down moves
the same request on to the next one that is up, at once. When a mirror's probe
succeeds it is up again and, being earlier in the list, gets the traffic back.
The index as a whole is down only while every mirror is.

Where a request goes: a URL below a mirror's simple URL, or below its root (the
simple URL's parent directory, where the JSON API and a pypicached node's files
live), keeps its path below that prefix on whichever mirror serves it. Page URLs
are written for the first mirror (the cache keeps the index's pages under its
URL) and so go to the first mirror that is up. A file link goes where its page
said; only when that mirror is down and the link lies below its simple URL or
root is the same path asked of the next mirror that is up. A link anywhere else
(another host, such as the public index's file host) is fetched as given. A
file's digests are checked before it is stored whichever mirror sent it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.components import proxyForInterface
from twisted.web.iweb import IResponse

from pypicached.upstream.body import discard_body
from pypicached.upstream.breaker import UpstreamDown, UpstreamHealth, iso
from pypicached.upstream.client import UpstreamClient
from pypicached.upstream.errors import UpstreamError


def root_of(simple_url: str) -> str:
    """The directory above a simple URL: ``https://host/simple/`` -> ``https://host/``."""
    parts = urlsplit(simple_url)
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path[: path.rfind("/") + 1] or "/", "", ""))


class Served(proxyForInterface(IResponse)):  # type: ignore[misc]  # the response, and the URL that answered
    """A response, and the URL of the mirror that sent it (a page's relative links are resolved against it)."""

    def __init__(self, original: IResponse, url: str) -> None:
        super().__init__(original)
        self.url = url


def served_url(response: IResponse, asked: str) -> str:
    """The URL that answered: the mirror's, if a mirror other than the one asked did."""
    return response.url if isinstance(response, Served) else asked


@attrs.define(eq=False)
class MirrorsHealth:
    """One index's health over its mirrors': down only while every mirror is; otherwise the one in use decides."""

    mirrors: tuple[UpstreamHealth, ...]

    @property
    def url(self) -> str:
        return self.mirrors[0].url

    @property
    def name(self) -> str:
        return self.mirrors[0].name

    def current(self) -> UpstreamHealth:
        """The mirror requests go to now: the first that is up (the first, while all are down)."""
        return next((m for m in self.mirrors if not m.is_down), self.mirrors[0])

    @property
    def is_down(self) -> bool:
        return all(m.is_down for m in self.mirrors)

    @property
    def is_slow(self) -> bool:
        return self.current().is_slow

    @property
    def spared(self) -> int:
        return sum(m.spared for m in self.mirrors)

    @spared.setter
    def spared(self, value: int) -> None:
        """Counted on the mirror in use (``health.spared += 1`` as for one upstream)."""
        self.current().spared += value - self.spared

    def slow(self) -> None:
        self.current().slow()

    def not_slow(self) -> None:
        for mirror in self.mirrors:
            mirror.not_slow()

    def note(self, reason: str) -> float:
        return self.current().note(reason)

    def outage(self) -> UpstreamDown:
        """The refusal while every mirror is down, naming each."""
        self.mirrors[0].spared += 1
        each = "; ".join(f"{m.url} since {iso(m.down_since)} ({m.reason})" for m in self.mirrors)
        probes = [m.next_probe for m in self.mirrors if m.next_probe is not None]
        retry = f"next try at {iso(min(probes))}" if probes else "a try is under way"
        return UpstreamDown(f"every mirror of index {self.name} is down: {each}; {retry}")

    def state(self) -> dict[str, Any]:
        """The index's state as one upstream's (each mirror's own is shown apart)."""
        state = self.current().state()
        state.update(url=self.url, state="down" if self.is_down else state["state"])
        return state

    def stop(self) -> None:
        for mirror in self.mirrors:
            mirror.stop()


class MirrorClient:
    """
    An ``UpstreamClient`` over an index's mirrors (each an ``UpstreamClient`` reporting to
    its own health): every request to the first mirror up, the next at once if it fails.
    """

    def __init__(self, mirrors: Sequence[tuple[str, UpstreamClient]]) -> None:
        #: (simple URL, client) of each mirror, in order of preference.
        self.mirrors = tuple(mirrors)
        first = self.mirrors[0][1]
        self.clock, self.report = first.clock, first.report
        self.response_timeout, self.file_timeout, self.idle_timeout = (
            first.response_timeout,
            first.file_timeout,
            first.idle_timeout,
        )
        self.health = MirrorsHealth(tuple(client.health for _, client in self.mirrors))
        # longest first: a URL belongs to the most specific prefix it lies below
        prefixes = [(url, n, "simple") for n, (url, _) in enumerate(self.mirrors)]
        prefixes += [(root_of(url), n, "root") for n, (url, _) in enumerate(self.mirrors)]
        self._prefixes = sorted(prefixes, key=lambda p: -len(p[0]))

    def _locate(self, url: str) -> tuple[int, str, str] | None:
        """Which mirror a URL lies below, below which of its prefixes, and the rest of the path."""
        for prefix, number, kind in self._prefixes:
            if url.startswith(prefix):
                return number, kind, url[len(prefix) :]
        return None

    def _on(self, number: int, kind: str, rest: str) -> str:
        simple_url = self.mirrors[number][0]
        return (simple_url if kind == "simple" else root_of(simple_url)) + rest

    def _plan(self, url: str) -> list[tuple[UpstreamClient, str]]:
        """Where to ask for ``url``, in order: its own mirror, then every other (the caller skips those down)."""
        located = self._locate(url)
        if located is None:  # not below any mirror: as given, reported to the mirror in use
            return [(self._client_of(self.health.current()), url)]
        own, kind, rest = located
        order = [own] + [n for n in range(len(self.mirrors)) if n != own]
        return [(self.mirrors[n][1], self._on(n, kind, rest)) for n in order]

    def _client_of(self, health: UpstreamHealth) -> UpstreamClient:
        return next(client for _, client in self.mirrors if client.health is health)

    def moved(self, url: str) -> bool:
        """Whether ``url``'s mirror is down while another is up: a page linking it is better asked anew."""
        located = self._locate(url)
        return located is not None and self.mirrors[located[0]][1].health.is_down and not self.health.is_down

    def get(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
        method: bytes = b"GET",
    ) -> Deferred[IResponse]:
        """As ``UpstreamClient.get``, from the first mirror up; the response says which answered (``served_url``)."""
        return ensureDeferred(self._get(url, headers, timeout, method))

    async def _get(self, url: str, headers: Mapping[str, str] | None, timeout: float | None, method: bytes) -> Any:
        plan = self._plan(url)
        # the mirrors up, in order; while none is, the URL's own (the request stands in for a probe)
        up = [(client, target) for client, target in plan if not client.health.is_down] or plan[:1]
        for number, (client, target) in enumerate(up):
            if number and client.health.is_down:
                continue  # went down meanwhile
            last = all(other.health.is_down for other, _ in up[number + 1 :])
            try:
                response = await client.get(target, headers, timeout=timeout, method=method)
            except UpstreamError:
                if last or not client.health.is_down:
                    raise
                continue  # this mirror is down now: the same request goes to the next
            if response.code >= 500 and client.health.is_down and not last:
                discard_body(client, response)
                continue
            return Served(response, target)
        raise self.health.outage()


#: What the cache holds of an index: its one client, or the client over its mirrors.
IndexClient = UpstreamClient | MirrorClient
#: And its health: its one upstream's, or its mirrors' together.
IndexHealth = UpstreamHealth | MirrorsHealth
