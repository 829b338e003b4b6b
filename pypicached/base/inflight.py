"""At most one operation per key: callers that come while it runs share its outcome."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Inflight(Generic[K, V]):
    """
    Coalesces concurrent work by key.

    Each caller gets a Deferred of its own, so one caller cancelling or going
    away never cancels the shared operation for the others.
    """

    def __init__(self) -> None:
        self._waiting: dict[K, list[Deferred[V]]] = {}

    def waiting(self, key: K) -> int:
        """How many callers share the operation running for ``key`` (0 if none runs)."""
        return len(self._waiting.get(key, ()))

    def run(self, key: K, start: Callable[[], Deferred[V]]) -> Deferred[V]:
        mine: Deferred[V] = Deferred()
        if key in self._waiting:
            self._waiting[key].append(mine)
            return mine
        self._waiting[key] = [mine]

        def done(result: V | Failure) -> None:
            for waiter in self._waiting.pop(key):
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)

        maybeDeferred(start).addBoth(done)
        return mine
