"""How each setting's value is read and checked: one parser per kind of value, each saying what it expected."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hyperlink import URL

from pypicached.base.names import globs


class ConfigError(Exception):
    """A setting is wrong; the message names the setting and the fix."""


def listen(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError("expected an endpoint string or a non-empty list of them")
    return tuple(value)


def upstream(value: Any) -> str:
    """The URL of a simple index, ending in a slash."""
    text = url(value)
    parsed = URL.from_text(text)
    if parsed.query or parsed.fragment:
        raise ValueError(f"{value!r} must not carry a query or a fragment")
    return text if text.endswith("/") else text + "/"


def upstreams(value: Any) -> str | tuple[str, ...]:
    """
    One simple index's URL, or an ordered list of mirrors of the same index (the
    first that is up serves); a list of one is that one URL.
    """
    if not isinstance(value, list):
        return upstream(value)
    if not value:
        raise ValueError("expected an index URL or a non-empty list of mirror URLs of the same index")
    urls: list[str] = []
    for number, item in enumerate(value, 1):
        try:
            urls.append(upstream(item))
        except ValueError as e:
            raise ValueError(f"mirror {number} of {len(value)}: {e}") from None
    if len(set(urls)) < len(urls):
        raise ValueError("a mirror is listed twice")
    return tuple(urls) if len(urls) > 1 else urls[0]


def path(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a file or directory path")
    return Path(value)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}


def _with_unit(value: Any, units: dict[str, int], what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected {what}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(digits) :]
        if unit not in units:
            raise ValueError(f"expected {what}, not {value!r}")
        try:
            number = float(digits) * units[unit]
        except ValueError:
            raise ValueError(f"expected {what}, not {value!r}") from None
    else:
        raise ValueError(f"expected {what}")
    if number < 0:
        raise ValueError("must not be negative")
    if not math.isfinite(number):
        raise ValueError(f"must be finite, not {value!r}")
    return number


def seconds(value: Any) -> float:
    return _with_unit(value, _DURATION_UNITS, "a number of seconds (or a string like '90s', '10m', '12h', '180d')")


def positive_seconds(value: Any) -> float:
    value_ = seconds(value)
    if value_ < 1:
        raise ValueError("must be at least 1 second")
    return value_


def seconds_or_forever(value: Any) -> float | None:
    if isinstance(value, str) and value.strip().lower() in ("forever", "unlimited"):
        return None
    return seconds(value)


def size(value: Any) -> int:
    return int(_with_unit(value, _SIZE_UNITS, "a size in bytes (or a string like '50GiB', '500MB')"))


def one_of(*choices: str) -> Callable[[Any], str]:
    """A parser for a setting that is one of a few words."""

    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"expected {' or '.join(repr(c) for c in choices)}, not {value!r}")
        return str(value)

    return parse


log_format = one_of("text", "json")


def token(value: Any) -> str:
    if not isinstance(value, str) or len(value) < 16 or not value.isprintable() or " " in value:
        raise ValueError("expected a token of at least 16 printable characters without spaces")
    return value


def networks(value: Any) -> tuple[str, ...]:
    """CIDR networks (or single addresses), as their canonical text."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a CIDR network (like '192.168.0.0/16' or '127.0.0.1') or a list of them")
    try:
        return tuple(str(ipaddress.ip_network(v.strip(), strict=False)) for v in value)
    except ValueError as e:
        raise ValueError(f"not a network: {e}") from None


def bool_(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def url(value: Any) -> str:
    """An http:// or https:// URL of a document (not an index: no slash is added)."""
    if not isinstance(value, str):
        raise ValueError("expected a URL string")
    try:
        parsed = URL.from_text(value)
    except Exception as e:
        raise ValueError(f"not a URL: {e}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    if parsed.userinfo:
        raise ValueError("credentials in the URL are not supported")
    return parsed.to_text()


_INDEX_NAME = re.compile(r"[a-z0-9-]+")


def index_tables(value: Any) -> tuple[dict[str, Any], ...]:
    """``[[index]]`` tables, checked as far as they can be alone (names, URLs, patterns; overrides later)."""
    if not isinstance(value, list) or not value or not all(isinstance(t, dict) for t in value):
        raise ValueError("expected one or more [[index]] tables")
    names: set[str] = set()
    for number, table in enumerate(value, 1):
        name = table.get("name")
        if not isinstance(name, str) or not _INDEX_NAME.fullmatch(name):
            raise ValueError(f"index {number}: 'name' must be lower-case letters, digits and '-', not {name!r}")
        if name in names:
            raise ValueError(f"index {number}: the name {name!r} is used twice")
        names.add(name)
        if "url" not in table:
            raise ValueError(f"index {name!r}: 'url' is missing")
        try:
            globs(table.get("projects", []))
        except ValueError as e:
            raise ValueError(f"index {name!r}: 'projects' {e}") from None
    return tuple(value)
