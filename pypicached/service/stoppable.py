"""The upstream agent, keeping what it has in flight so that stopping the daemon can break it off."""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocol, IPushProducer, ITransport
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer


@implementer(IAgent)
class StoppableAgent:
    """
    Passes requests on to ``agent``; ``stop`` breaks off those still waiting for their
    answer and the bodies still being read, so that their timers, connections and
    temporary files end with the daemon rather than after it.
    """

    def __init__(self, agent: IAgent) -> None:
        self._agent = agent
        self._waiting: set[Deferred[Any]] = set()
        self._reading: set[_Body] = set()

    def request(self, method: bytes, uri: bytes, headers: Any = None, bodyProducer: Any = None) -> Deferred[Any]:
        d = self._agent.request(method, uri, headers, bodyProducer)
        self._waiting.add(d)

        def answered(response: IResponse) -> IResponse:
            self._waiting.discard(d)
            return _Response(response, self._reading)

        def failed(failure: Failure) -> Failure:
            self._waiting.discard(d)
            return failure

        return d.addCallbacks(answered, failed)

    @property
    def in_flight(self) -> int:
        return len(self._waiting) + len(self._reading)

    def stop(self) -> None:
        """Break off every request waiting for its answer and every body being read."""
        for d in list(self._waiting):
            d.cancel()
        for body in list(self._reading):
            body.stop()


@implementer(IResponse)
class _Response:
    """A response as it came, whose body is watched while it is read."""

    def __init__(self, response: IResponse, reading: set[_Body]) -> None:
        self._response = response
        self._reading = reading

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    def deliverBody(self, protocol: IProtocol) -> None:
        self._response.deliverBody(_Body(protocol, self._reading))


class _Body(Protocol):
    """Passes a body on to its reader, and is known to the agent while the body lasts."""

    def __init__(self, reader: IProtocol, reading: set[_Body]) -> None:
        self._reader = reader
        self._reading = reading

    def makeConnection(self, transport: ITransport) -> None:
        self._reading.add(self)
        super().makeConnection(transport)
        self._reader.makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self._reader.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._reading.discard(self)
        self._reader.connectionLost(reason)

    def stop(self) -> None:
        # the transport ``IResponse.deliverBody`` gives is also the body's producer
        cast(IPushProducer, self.transport).stopProducing()
