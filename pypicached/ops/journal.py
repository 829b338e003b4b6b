"""
Log lines for the systemd journal (``twistd --logger=pypicached.ops.journal.observer``):
no timestamp, since the journal adds its own, and a ``<N>`` priority prefix so
that ``journalctl -p warning`` finds the warnings.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO, cast

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogLevel,
    PredicateResult,
    formatEvent,
)

_PRIORITY = {
    LogLevel.critical: 2,
    LogLevel.error: 3,
    LogLevel.warn: 4,
    LogLevel.info: 6,
    LogLevel.debug: 7,
}


#: Events whose whole message one field already holds (the access log's): no format string to parse.
_PREFORMATTED = {"{line}": "line", "{json}": "json"}


def format_line(event: dict[str, Any]) -> str:
    field = _PREFORMATTED.get(event.get("log_format", ""))
    text = event[field] if field is not None and isinstance(event.get(field), str) else formatEvent(event)
    if event.get("log_failure") is not None:
        text += "\n" + event["log_failure"].getTraceback()
    priority = _PRIORITY.get(event.get("log_level", LogLevel.info), 6)
    namespace = event.get("log_namespace", "-")
    lines = text.rstrip("\n").split("\n")
    return "".join(f"<{priority}>[{namespace}] {line}\n" for line in lines)


#: What Twisted logs as a factory starts and stops (``Factory.noisy``).
_FACTORY_LINES = frozenset({"Starting factory {factory!r}", "Stopping factory {factory!r}"})


def not_connection_noise(event: dict[str, Any]) -> PredicateResult:
    """
    Drops the two lines Twisted's HTTP client logs for every upstream connection the
    pool opens and closes (its factory is private, so it cannot be made quiet).
    """
    factory = event.get("factory")
    if event.get("log_format") in _FACTORY_LINES and type(factory).__module__ == "twisted.web.client":
        return PredicateResult.no
    return PredicateResult.maybe


def observer(out: TextIO | None = None) -> ILogObserver:
    """The observer factory twistd's ``--logger`` calls."""
    # Twisted calls any callable as a predicate; a function cannot declare that it provides the interface
    predicate = cast(ILogFilterPredicate, not_connection_noise)
    return FilteringLogObserver(FileLogObserver(out or sys.stdout, format_line), [predicate])
