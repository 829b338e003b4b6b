"""
Every setting, declared once: how it is spelled, read, explained and grouped.

The TOML reader, the command-line flags, the ``[[index]]`` overrides and the
start-up log all work from ``SETTINGS``, so a new setting is one entry here and
one attribute where its group keeps it (``Settings``, ``IndexSettings`` or ``Policy``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from pypicached.base.names import globs
from pypicached.config.domains import domains, email
from pypicached.config.values import (
    bool_,
    index_tables,
    listen,
    log_format,
    networks,
    one_of,
    path,
    positive_seconds,
    seconds,
    seconds_or_forever,
    size,
    token,
    upstreams,
    url,
)
from pypicached.policy.rules import allow_list, deny_list


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
    #: ``"index"``: a setting of each upstream, which an ``[[index]]`` table may override;
    #: ``"policy"``: a field of the ``Policy``, which an ``[[index]]`` table may override too;
    #: None: the daemon's own.
    group: str | None = None

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")

    def shown(self, value: Any) -> Any:
        """``value`` as the config file would spell it, secrets masked: for the start-up log."""
        if self.secret and value is not None:
            return "***"
        if self.name == "deny":
            return [entry.text for entry in value]
        if isinstance(value, Path):
            return os.fspath(value)
        if isinstance(value, tuple):
            return list(value)
        return value


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
        upstreams,
        "URL of the upstream simple index (PEP 503/691), or in the config file a list of mirrors of the "
        "same index, first preferred. [default: the public index]",
    ),
    Setting("cache_dir", path, "Directory of the disk cache. [default: ./cache]"),
    Setting(
        "index_ttl",
        seconds,
        "Seconds an index page stays fresh before it is revalidated upstream. [default: 600]",
        group="index",
    ),
    Setting(
        "offline",
        bool_,
        "Never contact the upstream: serve what is cached, answer 503 for anything else.",
        switch=True,
        group="index",
    ),
    Setting(
        "stale_if_error",
        seconds_or_forever,
        "How long past its TTL an index page may still be served when the upstream fails "
        "(seconds, or 'forever'). [default: forever]",
        group="index",
    ),
    Setting(
        "stale_while_revalidate",
        seconds,
        "Serve an expired index page at once for this long past its TTL while one "
        "background request refreshes it; 0 turns it off. [default: 0]",
        group="index",
    ),
    Setting(
        "stale_if_slow",
        seconds,
        "When an expired index page's revalidation has not answered within this many seconds, "
        "serve the cached copy (STALE) and let the revalidation finish in the background; "
        "0 turns it off. [default: 2]",
        group="index",
    ),
    Setting(
        "upstream_retry_max",
        positive_seconds,
        "While the upstream is down, one probe decides when it is back: first after 1s, "
        "the delay doubling up to this. [default: 60]",
        group="index",
    ),
    Setting("connect_timeout", seconds, "Seconds to connect to the upstream. [default: 10]"),
    Setting(
        "response_timeout",
        seconds,
        "Seconds to wait for the upstream's response headers to an index page request; "
        "below pip's own 15s. [default: 10]",
        group="index",
    ),
    Setting(
        "file_response_timeout",
        seconds,
        "Seconds to wait for the upstream's response headers to a package file request "
        "(a big file's first byte can take longer). [default: 30]",
        group="index",
    ),
    Setting(
        "idle_timeout",
        seconds,
        "Seconds an upstream body may stall (no byte at all) before the download is abandoned. [default: 60]",
        group="index",
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
        "Several upstream indexes, as [[index]] tables: name, url (one, or a list of mirrors), "
        "projects (names or globs pinned to it) "
        "and any of the per-upstream settings. [default: one index named pypi, at upstream]",
        toml_only=True,
    ),
    Setting(
        "min_release_age",
        seconds,
        "Hide files uploaded more recently than this (their PEP 700 upload-time), e.g. '7d': "
        "a release cooldown for every client; 0 turns it off. [default: 0]",
        group="policy",
    ),
    Setting(
        "min_release_age_exempt",
        globs,
        "Normalized project names or globs never held back by min_release_age (a team's own packages, "
        "an urgent fix). [default: none]",
        toml_only=True,
        group="policy",
    ),
    Setting(
        "missing_upload_time",
        one_of("allow", "hide"),
        "What min_release_age does with files that have no upload time (HTML-only indexes): "
        "'allow' or 'hide'. [default: allow]",
        group="policy",
    ),
    Setting(
        "deny",
        deny_list,
        "Requirement strings never served: 'evil-pkg' (the whole project, 403), 'requests==2.32.0', "
        "'urllib3<1.26.5'. [default: none]",
        toml_only=True,
        group="policy",
    ),
    Setting(
        "allow",
        allow_list,
        "When set, only these projects (normalized names or globs) are served; any other gets 403. "
        "[default: every project]",
        toml_only=True,
        group="policy",
    ),
    Setting(
        "deny_vulnerable",
        bool_,
        "Also deny versions named by advisories other than malicious-package (MAL-) ones; "
        "without it those are only counted and shown.",
        switch=True,
        group="policy",
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
    Setting(
        "tokens_file",
        path,
        "File of access tokens (made with 'pypicached-admin token add'); when set, every client outside "
        "open_networks must send a token, except for /health. [default: none: open to every client]",
    ),
    Setting(
        "open_networks",
        networks,
        "CIDR networks whose clients need no token when tokens_file is set (e.g. 127.0.0.0/8, 192.168.0.0/16). "
        "Repeat the flag for several. [default: none]",
    ),
    Setting(
        "acme_directory",
        url,
        "Directory URL of an ACME CA: the daemon gets and renews the certificate of its ssl:PORT listeners "
        "that name no files, answering HTTP-01 on a plain listener (see docs/acme.md). [default: none]",
    ),
    Setting("acme_email", email, "Contact address for the ACME account (optional)."),
    Setting(
        "acme_domains",
        domains,
        "Host names the ACME certificate is for; the first is its subject. [default: none]",
        toml_only=True,
    ),
)
BY_NAME = {s.name: s for s in SETTINGS}
#: What an ``[[index]]`` table may override, in the order the table declares them.
PER_INDEX = tuple(s.name for s in SETTINGS if s.group == "index")
POLICY = tuple(s.name for s in SETTINGS if s.group == "policy")
