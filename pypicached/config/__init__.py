"""The daemon's settings: one frozen value, from a TOML file and the command line."""

from pypicached.config.indexes import IndexSettings, indexes_of
from pypicached.config.settings import (
    DEFAULT_UPSTREAM, SETTINGS, Settings, build_settings, check_cache_dir, read_toml,
)
from pypicached.config.values import ConfigError

__all__ = [
    "DEFAULT_UPSTREAM", "SETTINGS", "ConfigError", "IndexSettings", "Settings", "build_settings", "check_cache_dir",
    "indexes_of", "read_toml",
]
