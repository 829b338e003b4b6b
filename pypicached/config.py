"""The daemon's settings: one frozen value, from a TOML file and the command line.

Every setting is declared once in ``SETTINGS``; the TOML reader, the command-line
overrides and the validation all work from that table, so a new setting is one
entry here and one attribute on ``Settings``.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path
from typing import Any, Callable, Mapping

import attrs
from hyperlink import URL

#: The one place the public index is named: the default upstream.
DEFAULT_UPSTREAM = "https://pypi.org/simple/"


class ConfigError(Exception):
    """A setting is wrong; the message names the setting and the fix."""


@attrs.frozen
class Settings:
    """Everything the daemon needs to know to start, already validated."""

    listen: tuple[str, ...] = ("tcp:3141",)
    upstream: str = DEFAULT_UPSTREAM
    cache_dir: Path = Path("cache")
    index_ttl: float = 600.0
    offline: bool = False
    stale_if_error: float | None = None
    stale_while_revalidate: float = 0.0
    stale_if_slow: float = 2.0
    upstream_retry_max: float = 60.0
    connect_timeout: float = 10.0
    response_timeout: float = 10.0
    file_response_timeout: float = 30.0
    idle_timeout: float = 60.0
    client_timeout: float = 60.0
    header_timeout: float = 30.0
    max_size: int = 50 * 1024**3
    min_free: int = 5 * 1024**3
    inactive: float = 180 * 86400.0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_chain: Path | None = None
    log_format: str = "text"
    admin_token: str | None = attrs.field(default=None, repr=False)

    def effective(self) -> dict[str, Any]:
        """Every setting as the config file would spell it, secrets masked, for the start-up log."""
        shown: dict[str, Any] = {}
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if setting.secret and value is not None:
                value = "***"
            elif isinstance(value, Path):
                value = os.fspath(value)
            elif isinstance(value, tuple):
                value = list(value)
            shown[setting.name] = value
        return shown


def _listen(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(
        isinstance(v, str) and v for v in value
    ):
        raise ValueError("expected an endpoint string or a non-empty list of them")
    return tuple(value)


def _upstream(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a URL string")
    try:
        url = URL.from_text(value)
    except Exception as e:
        raise ValueError(f"not a URL: {e}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"{value!r} is not an http:// or https:// URL of a simple index"
        )
    if url.query or url.fragment:
        raise ValueError(f"{value!r} must not carry a query or a fragment")
    if url.userinfo:
        raise ValueError("credentials in the upstream URL are not supported")
    text = url.to_text()
    return text if text.endswith("/") else text + "/"


def _path(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a file or directory path")
    return Path(value)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}


def _with_unit(value: Any, units: dict[str, int], what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected {what}")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(digits):]
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
    return number


def _seconds(value: Any) -> float:
    return _with_unit(value, _DURATION_UNITS, "a number of seconds (or a string like '90s', '10m', '12h', '180d')")


def _positive_seconds(value: Any) -> float:
    seconds = _seconds(value)
    if seconds < 1:
        raise ValueError("must be at least 1 second")
    return seconds


def _seconds_or_forever(value: Any) -> float | None:
    if isinstance(value, str) and value.strip().lower() in ("forever", "unlimited"):
        return None
    return _seconds(value)


def _size(value: Any) -> int:
    return int(_with_unit(value, _SIZE_UNITS, "a size in bytes (or a string like '50GiB', '500MB')"))


def _log_format(value: Any) -> str:
    if value not in ("text", "json"):
        raise ValueError(f"expected 'text' or 'json', not {value!r}")
    return str(value)


def _token(value: Any) -> str:
    if not isinstance(value, str) or len(value) < 16 or not value.isprintable() or " " in value:
        raise ValueError("expected a token of at least 16 printable characters without spaces")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


@attrs.frozen
class Setting:
    """How one setting is spelled, parsed and explained."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    #: A switch (``--offline``) rather than a flag with a value.
    switch: bool = False
    #: Masked wherever settings are shown.
    secret: bool = False

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "listen",
        _listen,
        "Twisted endpoint to listen on, e.g. tcp:3141, "
        "ssl:443:privateKey=key.pem:certKey=cert.pem, systemd:domain=INET:index=0. "
        "Repeat for several. [default: tcp:3141]",
    ),
    Setting(
        "upstream",
        _upstream,
        "URL of the upstream simple index (PEP 503/691). [default: the public index]",
    ),
    Setting("cache_dir", _path, "Directory of the disk cache. [default: ./cache]"),
    Setting(
        "index_ttl",
        _seconds,
        "Seconds an index page stays fresh before it is revalidated upstream. "
        "[default: 600]",
    ),
    Setting(
        "offline",
        _bool,
        "Never contact the upstream: serve what is cached, answer 503 for anything else.",
        switch=True,
    ),
    Setting(
        "stale_if_error",
        _seconds_or_forever,
        "How long past its TTL an index page may still be served when the upstream fails "
        "(seconds, or 'forever'). [default: forever]",
    ),
    Setting(
        "stale_while_revalidate",
        _seconds,
        "Serve an expired index page at once for this long past its TTL while one "
        "background request refreshes it; 0 turns it off. [default: 0]",
    ),
    Setting(
        "stale_if_slow",
        _seconds,
        "When an expired index page's revalidation has not answered within this many seconds, "
        "serve the cached copy (STALE) and let the revalidation finish in the background; "
        "0 turns it off. [default: 2]",
    ),
    Setting(
        "upstream_retry_max",
        _positive_seconds,
        "While the upstream is down, one probe decides when it is back: first after 1s, "
        "the delay doubling up to this. [default: 60]",
    ),
    Setting("connect_timeout", _seconds, "Seconds to connect to the upstream. [default: 10]"),
    Setting(
        "response_timeout",
        _seconds,
        "Seconds to wait for the upstream's response headers to an index page request; "
        "below pip's own 15s. [default: 10]",
    ),
    Setting(
        "file_response_timeout",
        _seconds,
        "Seconds to wait for the upstream's response headers to a package file request "
        "(a big file's first byte can take longer). [default: 30]",
    ),
    Setting(
        "idle_timeout",
        _seconds,
        "Seconds an upstream body may stall (no byte at all) before the download is abandoned. [default: 60]",
    ),
    Setting(
        "client_timeout",
        _seconds,
        "Seconds a client connection may sit idle, or not read what it is sent, before it is dropped. [default: 60]",
    ),
    Setting("header_timeout", _seconds, "Seconds a client has to send its request headers. [default: 30]"),
    Setting(
        "max_size",
        _size,
        "Most the cached files may take on disk; least recently used go first. [default: 50GiB]",
    ),
    Setting(
        "min_free",
        _size,
        "Free space to keep on the cache's filesystem; files are evicted to keep it. [default: 5GiB]",
    ),
    Setting(
        "inactive",
        _seconds,
        "Drop cached files unused for this long. [default: 180d]",
    ),
    Setting(
        "tls_cert",
        _path,
        "PEM certificate (optionally followed by its chain) for ssl:PORT listeners that name no files.",
    ),
    Setting("tls_key", _path, "PEM private key for tls_cert."),
    Setting("tls_chain", _path, "PEM intermediate certificates to send after tls_cert (optional)."),
    Setting("log_format", _log_format, "Access log lines as 'text' or 'json' (one object a line). [default: text]"),
    Setting(
        "admin_token",
        _token,
        "Bearer token that lets a non-loopback client use the admin endpoints (purge). "
        "[default: none: loopback clients only]",
        secret=True,
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}


def read_toml(path: str) -> dict[str, Any]:
    """The raw settings table of a TOML file, or a ConfigError saying why not."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {path} is not valid TOML: {e}") from None


def build_settings(
    file_values: Mapping[str, Any], overrides: Mapping[str, Any], source: str = "config"
) -> Settings:
    """
    Merge the config file's values with command-line overrides (which win) and
    check each one, naming the setting in any error.
    """
    values: dict[str, Any] = {}
    for origin, table in ((source, file_values), ("command line", overrides)):
        for key, raw in table.items():
            setting = _BY_NAME.get(key)
            if setting is None:
                known = ", ".join(sorted(_BY_NAME))
                raise ConfigError(
                    f"{origin}: unknown setting {key!r}; known settings: {known}"
                )
            try:
                values[key] = setting.parse(raw)
            except ValueError as e:
                raise ConfigError(f"{key} ({origin}): {e}") from None
    if (values.get("tls_cert") is None) != (values.get("tls_key") is None):
        raise ConfigError("tls_cert and tls_key: give both or neither")
    return Settings(**values)


def check_cache_dir(path: Path) -> None:
    """Create the cache directory if needed and prove it is writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError(
            f"cache_dir: {os.fspath(path)!r} is not a writable directory ({reason}); "
            "create it or give the daemon's user write access"
        ) from None
