"""
The daemon's settings: one frozen value, from a TOML file and the command line.

Each setting is declared once, in ``config.table.SETTINGS``; here the values are read
once into typed ones: the daemon's own, one ``Policy`` and the ``IndexSettings`` of
every index, which the daemon and the admin command both use as they are.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from pypicached.config.indexes import IndexSettings, indexes_from
from pypicached.config.table import BY_NAME, PER_INDEX, POLICY, SETTINGS
from pypicached.config.values import ConfigError
from pypicached.policy.rules import Policy

#: The one place the public index is named: the default upstream.
DEFAULT_UPSTREAM = "https://pypi.org/simple/"


@attrs.frozen
class Settings:
    """Everything the daemon needs to know to start, already validated."""

    listen: tuple[str, ...] = ("tcp:3141",)
    #: One URL, or the mirrors of the one index, in order of preference.
    upstream: str | tuple[str, ...] = DEFAULT_UPSTREAM
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
    tokens_file: Path | None = None
    open_networks: tuple[str, ...] = ()
    advisories_url: str | None = None
    advisories_refresh: float = 3600.0
    acme_directory: str | None = None
    acme_email: str | None = None
    acme_domains: tuple[str, ...] = ()
    #: The policy's global settings (the ``"policy"`` group); each index's own is in ``indexes``.
    policy: Policy = Policy()
    #: Every index, in file order, with its own settings; without ``[[index]]`` tables, ``upstream`` named ``pypi``.
    indexes: tuple[IndexSettings, ...] = attrs.field(
        default=attrs.Factory(lambda self: self.implied_indexes(), takes_self=True)
    )

    @classmethod
    def of(cls, index: Sequence[Mapping[str, Any]] = (), **values: Any) -> Settings:
        """
        Settings from flat values already read (the daemon's and the policy's settings by
        name, as ``build_settings`` or a test has them) and ``[[index]]`` tables as written.
        """
        policy = Policy(**{key: values.pop(key) for key in POLICY if key in values})
        plain = cls(**values, policy=policy)
        if not index:
            return plain
        return attrs.evolve(plain, indexes=indexes_from(tuple(index), plain.upstream, plain.index_defaults(), policy))

    def index_defaults(self) -> dict[str, Any]:
        """The global values of the settings each index may override (PER_INDEX)."""
        return {key: getattr(self, key) for key in PER_INDEX}

    def implied_indexes(self) -> tuple[IndexSettings, ...]:
        """The one index a plain ``upstream`` setting stands for."""
        return indexes_from((), self.upstream, self.index_defaults(), self.policy)

    def value_of(self, name: str) -> Any:
        """A setting's global value by its name in the config file (``index`` aside)."""
        return getattr(self.policy if BY_NAME[name].group == "policy" else self, name)

    def effective(self) -> dict[str, Any]:
        """Every setting as the config file would spell it, secrets masked, for the start-up log."""
        tables = (
            []
            if self.indexes == self.implied_indexes()
            else [index.overrides(self.index_defaults(), self.policy) for index in self.indexes]
        )
        return {s.name: tables if s.name == "index" else s.shown(self.value_of(s.name)) for s in SETTINGS}


def read_toml(path: str) -> dict[str, Any]:
    """The raw settings table of a TOML file, or a ConfigError saying why not."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"config: cannot read {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {path} is not valid TOML: {e}") from None


def build_settings(file_values: Mapping[str, Any], overrides: Mapping[str, Any], source: str = "config") -> Settings:
    """
    Merge the config file's values with command-line overrides (which win) and
    check each one, naming the setting in any error.
    """
    values: dict[str, Any] = {}
    for origin, table in ((source, file_values), ("command line", overrides)):
        for key, raw in table.items():
            setting = BY_NAME.get(key)
            if setting is None:
                known = ", ".join(sorted(BY_NAME))
                raise ConfigError(f"{origin}: unknown setting {key!r}; known settings: {known}")
            try:
                values[key] = setting.parse(raw)
            except ValueError as e:
                raise ConfigError(f"{key} ({origin}): {e}") from None
    if (values.get("tls_cert") is None) != (values.get("tls_key") is None):
        raise ConfigError("tls_cert and tls_key: give both or neither")
    _check_acme(values)
    if "index" in values and "upstream" in values:
        raise ConfigError(
            "upstream and [[index]]: give one or the other (upstream is one index named 'pypi'; "
            "with [[index]] tables, name every index there)"
        )
    return Settings.of(**values)  # an [[index]] table's own mistakes stop the start too


def _check_acme(values: Mapping[str, Any]) -> None:
    """ACME needs its CA and its names together, and takes the place of tls_cert."""
    if (values.get("acme_directory") is None) != (not values.get("acme_domains")):
        raise ConfigError("acme_directory and acme_domains: give both or neither")
    if values.get("acme_directory") is not None and values.get("tls_cert") is not None:
        raise ConfigError("acme_directory and tls_cert: give one or the other (ACME provides the certificate)")


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
