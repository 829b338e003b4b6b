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
    text = url.to_text()
    return text if text.endswith("/") else text + "/"


def _cache_dir(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a directory path")
    return Path(value)


def _number(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number of seconds")
    if value < 0:
        raise ValueError("must not be negative")
    return float(value)


@attrs.frozen
class Setting:
    """How one setting is spelled, parsed and explained."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    #: Turns a flag's text into what TOML would have given; left as text if it cannot.
    from_flag: Callable[[str], Any] = str

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
    Setting("cache_dir", _cache_dir, "Directory of the disk cache. [default: ./cache]"),
    Setting(
        "index_ttl",
        _seconds,
        "Seconds an index page stays fresh before it is revalidated upstream. "
        "[default: 600]",
        from_flag=_number,
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
