"""The daemon's settings: one frozen value, from a TOML file and the command line."""

from pypicached.config.indexes import IndexSettings
from pypicached.config.settings import DEFAULT_UPSTREAM, Settings, build_settings, check_cache_dir, read_toml
from pypicached.config.table import SETTINGS, Setting
from pypicached.config.values import ConfigError

__all__ = [
    "DEFAULT_UPSTREAM",
    "SETTINGS",
    "ConfigError",
    "IndexSettings",
    "Setting",
    "Settings",
    "build_settings",
    "check_cache_dir",
    "read_toml",
]
