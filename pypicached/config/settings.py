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

from pypicached.config.indexes import index_tables, indexes_of
from pypicached.config.values import (
    ConfigError, bool_, listen, log_format, one_of, path, positive_seconds, seconds, seconds_or_forever, size, token,
    upstream, url,
)
from pypicached.base.names import globs
from pypicached.policy.rules import DenyEntry, allow_list, deny_list

#: The one place the public index is named: the default upstream.
DEFAULT_UPSTREAM = "https://pypi.org/simple/"


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
    min_release_age: float = 0.0
    min_release_age_exempt: tuple[str, ...] = ()
    missing_upload_time: str = "allow"
    deny: tuple[DenyEntry, ...] = ()
    allow: tuple[str, ...] | None = None
    deny_vulnerable: bool = False
    advisories_url: str | None = None
    advisories_refresh: float = 3600.0
    #: The ``[[index]]`` tables as given (empty: one index, ``upstream``, named ``pypi``); see ``indexes_of``.
    index: tuple[dict[str, Any], ...] = ()

    def effective(self) -> dict[str, Any]:
        """Every setting as the config file would spell it, secrets masked, for the start-up log."""
        shown: dict[str, Any] = {}
        for setting in SETTINGS:
            value = getattr(self, setting.name)
            if setting.secret and value is not None:
                value = "***"
            elif setting.name == "deny":
                value = [entry.text for entry in value]
            elif isinstance(value, Path):
                value = os.fspath(value)
            elif isinstance(value, tuple):
                value = list(value)
            shown[setting.name] = value
        return shown


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
    #: Only in the config file (a table), never a command-line flag.
    toml_only: bool = False

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "listen",
        listen,
        "Twisted endpoint to listen on, e.g. tcp:3141, "
        "ssl:443:privateKey=key.pem:certKey=cert.pem, systemd:domain=INET:index=0. "
        "Repeat for several. [default: tcp:3141]",
    ),
    Setting(
        "upstream",
        upstream,
        "URL of the upstream simple index (PEP 503/691). [default: the public index]",
    ),
    Setting("cache_dir", path, "Directory of the disk cache. [default: ./cache]"),
    Setting(
        "index_ttl",
        seconds,
        "Seconds an index page stays fresh before it is revalidated upstream. "
        "[default: 600]",
    ),
    Setting(
        "offline",
        bool_,
        "Never contact the upstream: serve what is cached, answer 503 for anything else.",
        switch=True,
    ),
    Setting(
        "stale_if_error",
        seconds_or_forever,
        "How long past its TTL an index page may still be served when the upstream fails "
        "(seconds, or 'forever'). [default: forever]",
    ),
    Setting(
        "stale_while_revalidate",
        seconds,
        "Serve an expired index page at once for this long past its TTL while one "
        "background request refreshes it; 0 turns it off. [default: 0]",
    ),
    Setting(
        "stale_if_slow",
        seconds,
        "When an expired index page's revalidation has not answered within this many seconds, "
        "serve the cached copy (STALE) and let the revalidation finish in the background; "
        "0 turns it off. [default: 2]",
    ),
    Setting(
        "upstream_retry_max",
        positive_seconds,
        "While the upstream is down, one probe decides when it is back: first after 1s, "
        "the delay doubling up to this. [default: 60]",
    ),
    Setting("connect_timeout", seconds, "Seconds to connect to the upstream. [default: 10]"),
    Setting(
        "response_timeout",
        seconds,
        "Seconds to wait for the upstream's response headers to an index page request; "
        "below pip's own 15s. [default: 10]",
    ),
    Setting(
        "file_response_timeout",
        seconds,
        "Seconds to wait for the upstream's response headers to a package file request "
        "(a big file's first byte can take longer). [default: 30]",
    ),
    Setting(
        "idle_timeout",
        seconds,
        "Seconds an upstream body may stall (no byte at all) before the download is abandoned. [default: 60]",
    ),
    Setting(
        "client_timeout",
        seconds,
        "Seconds a client connection may sit idle, or not read what it is sent, before it is dropped. [default: 60]",
    ),
    Setting("header_timeout", seconds, "Seconds a client has to send its request headers. [default: 30]"),
    Setting(
        "max_size",
        size,
        "Most the cached files may take on disk; least recently used go first. [default: 50GiB]",
    ),
    Setting(
        "min_free",
        size,
        "Free space to keep on the cache's filesystem; files are evicted to keep it. [default: 5GiB]",
    ),
    Setting(
        "inactive",
        seconds,
        "Drop cached files unused for this long. [default: 180d]",
    ),
    Setting(
        "tls_cert",
        path,
        "PEM certificate (optionally followed by its chain) for ssl:PORT listeners that name no files.",
    ),
    Setting("tls_key", path, "PEM private key for tls_cert."),
    Setting("tls_chain", path, "PEM intermediate certificates to send after tls_cert (optional)."),
    Setting("log_format", log_format, "Access log lines as 'text' or 'json' (one object a line). [default: text]"),
    Setting(
        "index",
        index_tables,
        "Several upstream indexes, as [[index]] tables: name, url, projects (names or globs pinned to it) "
        "and any of the per-upstream settings. [default: one index named pypi, at upstream]",
        toml_only=True,
    ),
    Setting(
        "min_release_age",
        seconds,
        "Hide files uploaded more recently than this (their PEP 700 upload-time), e.g. '7d': "
        "a release cooldown for every client; 0 turns it off. [default: 0]",
    ),
    Setting(
        "min_release_age_exempt",
        globs,
        "Normalized project names or globs never held back by min_release_age (a team's own packages, "
        "an urgent fix). [default: none]",
        toml_only=True,
    ),
    Setting(
        "missing_upload_time",
        one_of("allow", "hide"),
        "What min_release_age does with files that have no upload time (HTML-only indexes): "
        "'allow' or 'hide'. [default: allow]",
    ),
    Setting(
        "deny",
        deny_list,
        "Requirement strings never served: 'evil-pkg' (the whole project, 403), 'requests==2.32.0', "
        "'urllib3<1.26.5'. [default: none]",
        toml_only=True,
    ),
    Setting(
        "allow",
        allow_list,
        "When set, only these projects (normalized names or globs) are served; any other gets 403. "
        "[default: every project]",
        toml_only=True,
    ),
    Setting(
        "deny_vulnerable",
        bool_,
        "Also deny versions named by advisories other than malicious-package (MAL-) ones; "
        "without it those are only counted and shown.",
        switch=True,
    ),
    Setting(
        "advisories_url",
        url,
        "URL of an OSV advisory feed for PyPI (a zip of OSV JSON files, as OSV publishes all.zip); "
        "versions named by MAL- advisories are denied. [default: none]",
    ),
    Setting(
        "advisories_refresh",
        positive_seconds,
        "Seconds between fetches of advisories_url; the last good copy is kept on disk. [default: 1h]",
    ),
    Setting(
        "admin_token",
        token,
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
    if "index" in values and "upstream" in values:
        raise ConfigError(
            "upstream and [[index]]: give one or the other (upstream is one index named 'pypi'; "
            "with [[index]] tables, name every index there)"
        )
    settings = Settings(**values)
    indexes_of(settings)  # an [[index]] table's own mistakes stop the start too
    return settings


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
