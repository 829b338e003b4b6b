"""``twistd pypicached``: the command line, read into ``Settings``."""

from __future__ import annotations

import gc
import sys
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from pypicached.config import SETTINGS, ConfigError, Settings, build_settings, check_cache_dir, read_toml
from pypicached.service import endpoint_for, make_service

#: Settings that are lists, given by repeating a flag: setting -> flag.
LISTS = {"listen": "listen", "open_networks": "open-network"}


class Options(usage.Options):
    """Flags mirror the config file's keys; a flag given wins over the file."""

    synopsis = (
        "[--config FILE] [--listen ENDPOINT]... [--upstream INDEX_URL] [--cache-dir DIR] "
        "[--index-ttl SECONDS] [--offline] [...]"
    )
    optParameters = [
        ["config", None, None, "TOML file with any of the settings below (flags win)."],
        *[[s.flag, None, None, s.help] for s in SETTINGS if s.name not in LISTS and not s.switch and not s.toml_only],
    ]
    optFlags = [[s.flag, None, s.help] for s in SETTINGS if s.switch]

    def __init__(self) -> None:
        super().__init__()
        for flag in LISTS.values():
            self[flag] = []

    def opt_listen(self, endpoint: str) -> None:
        self["listen"].append(endpoint)

    def opt_open_network(self, network: str) -> None:
        self["open-network"].append(network)

    opt_listen.__doc__ = next(s.help for s in SETTINGS if s.name == "listen")
    opt_open_network.__doc__ = next(s.help for s in SETTINGS if s.name == "open_networks")

    def overrides(self) -> dict[str, Any]:
        """The settings given on the command line, as the config file would spell them."""
        given: dict[str, Any] = {}
        for s in SETTINGS:
            if s.toml_only:
                continue
            value = self.get(LISTS.get(s.name, s.flag))
            if s.name in LISTS:
                if value:
                    given[s.name] = list(value)
            elif s.switch:
                if value:
                    given[s.name] = True
            elif value is not None:
                given[s.name] = _number(value)
        return given


def _number(text: str) -> Any:
    """A flag's text as TOML would have typed it: numbers as numbers."""
    try:
        return float(text)
    except ValueError:
        return text


def load_settings(options: Options, reactor: Any) -> Settings:
    """Settings from the config file and flags, every one checked before anything starts."""
    file_values = read_toml(options["config"]) if options["config"] else {}
    settings = build_settings(file_values, options.overrides(), source=options["config"] or "config")
    for description in settings.listen:
        try:
            endpoint_for(reactor, description, settings)
        except Exception as e:
            raise ConfigError(f"listen: cannot use endpoint {description!r}: {e}") from None
    check_cache_dir(settings.cache_dir)
    return settings


#: Python runs a full collection after 10 younger ones (and 25% more survivors): it walks every
#: tracked object, a big page's hundreds of thousands of entries included, holding the GIL and so
#: the event loop 50-150 ms each time (issue #23). Ten times rarer here.
FULL_COLLECTION_AFTER = 100


def quiet_collector() -> None:
    """Fewer full collections, and none of them walking what was loaded at startup (modules, classes)."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_AFTER)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    try:
        settings = load_settings(options, reactor)
    except ConfigError as e:
        sys.stderr.write(f"pypicached: {e}\n")
        raise SystemExit(2) from None
    service = make_service(settings, reactor)
    quiet_collector()
    return service
