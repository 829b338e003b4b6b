"""
``pypicached-admin``'s command line: its flags and commands, and the daemon's
settings and address read from the same config file the daemon reads.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, TextIO

from pypicached.config import Settings, build_settings, read_toml
from pypicached.http.tls import split_endpoint

#: Where the Debian package puts the daemon's settings.
SYSTEM_CONFIG = "/etc/pypicached/pypicached.toml"


def daemon_url(settings: Settings) -> str | None:
    """The daemon's base URL over loopback, from its first plain ``tcp:`` listener."""
    for description in settings.listen:
        kind, args, kwargs = split_endpoint(description)
        if kind == "tcp" and args and args[0].isdigit():
            interface = kwargs.get("interface", "")
            host = interface if interface and interface not in ("0.0.0.0", "::") else "127.0.0.1"
            return f"http://{'[' + host + ']' if ':' in host else host}:{args[0]}"
    return None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pypicached-admin", description="Manage a pypicached cache.")
    p.add_argument("--config", help=f"the daemon's TOML config [default: {SYSTEM_CONFIG} if it exists]")
    p.add_argument("--cache-dir", help="the cache directory [default: the config's cache_dir]")
    p.add_argument("--url", help="the daemon's base URL [default: from the config's first tcp: listener]")
    p.add_argument(
        "--token",
        help="bearer token for a daemon on another host "
        "[default: $PYPICACHED_ADMIN_TOKEN, else the config's admin_token]",
    )
    p.add_argument("--tokens-file", help="the tokens file for 'token' [default: the config's tokens_file]")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("stats", help="hit ratio, bandwidth saved, cache size, upstream health")
    s.add_argument("--json", action="store_true", help="the /stats JSON")
    s = sub.add_parser("purge", help="forget a project's index pages so the next request refreshes them")
    s.add_argument("project")
    s = sub.add_parser("purge-file", help="delete a cached file (by its URL or file name)")
    s.add_argument("url_or_name")
    s = sub.add_parser("policy", help="the supply-chain policy: 'policy check NAME[==VERSION]' explains what it does")
    s.add_argument("action", choices=["check"])
    s.add_argument("requirement", metavar="NAME[==VERSION]")
    s = sub.add_parser("verify", help="re-hash every cached file against its recorded digest; delete bad ones")
    s.add_argument("--keep", action="store_true", help="report bad files but do not delete them")
    _bundles(sub)
    _token_commands(sub)
    return p


def _bundles(sub: argparse._SubParsersAction) -> None:
    """The commands that fill a cache ahead of time and carry it elsewhere: prefetch, export, import."""
    s = sub.add_parser("prefetch", help="fill the cache with the files of lock files or requirements files")
    s.add_argument("files", nargs="*", type=Path, metavar="FILE", help="pylock.toml, uv.lock, poetry.lock, pdm.lock")
    s.add_argument("-r", "--requirement", action="append", type=Path, help="a (pinned) requirements file")
    s.add_argument("--platform", action="append", help="only wheels for this platform tag (repeatable), and sdists")
    s.add_argument("--python", metavar="X.Y", help="only files this Python version could install")
    s.add_argument("--json", action="store_true", help="the summary as JSON")
    s.add_argument(
        "--all-files",
        action="store_true",
        help="every file of each chosen version, not only those this machine could install",
    )
    s.add_argument("--jobs", type=int, default=4, help="downloads at once [default: 4]")
    s = sub.add_parser("export", help="write a bundle of the cache's files and pages for these locks (or --all)")
    s.add_argument("files", nargs="*", type=Path, metavar="FILE", help="lock files or requirements files")
    s.add_argument("--out", required=True, type=Path, metavar="BUNDLE", help="the bundle to write")
    s.add_argument("--all", action="store_true", help="the whole cache")
    s = sub.add_parser("import", help="check a bundle from export, then add it to the cache")
    s.add_argument("bundle", type=Path, metavar="BUNDLE")


def _token_commands(sub: Any) -> None:
    """``token add NAME [--scope read|admin]``, ``token list``, ``token revoke NAME``."""
    s = sub.add_parser(
        "token", help="access tokens: 'token add NAME [--scope read|admin]', 'token list', 'token revoke NAME'"
    )
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("add", help="make a token, print it once, keep its hash in the tokens file")
    a.add_argument("name")
    a.add_argument("--scope", choices=["read", "admin"], default="read", help="[default: read]")
    a = actions.add_parser("revoke", help="remove a token from the tokens file")
    a.add_argument("name")
    actions.add_parser("list", help="names, scopes, creation times and last use (never the tokens)")


def load(args: argparse.Namespace, err: TextIO) -> Settings:
    config = args.config or (SYSTEM_CONFIG if os.path.exists(SYSTEM_CONFIG) else None)
    if config and not args.config and not os.access(config, os.R_OK):
        # e.g. made root-only for its admin_token: --url, --cache-dir and the token's variable suffice
        err.write(f"pypicached-admin: cannot read {config}; using the defaults and the flags given\n")
        config = None
    values = read_toml(config) if config else {}
    overrides = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    return build_settings(values, overrides, source=config or "config")
