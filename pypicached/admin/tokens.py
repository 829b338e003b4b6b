"""
``pypicached-admin token add|list|revoke``: the tokens file named by the config
(or ``--tokens-file``), edited atomically; a new token is printed once and only
its hash is kept. ``list`` shows each token's last use as the running daemon
counts it (since it started), when it answers.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from pypicached.base.disk import atomic_write
from pypicached.base.tokens import TokenEntry, digest_of, is_name, new_token, parse, render

#: Seconds to wait for the daemon's figures (``list`` works without them).
ASK_TIMEOUT = 5


class TokenError(Exception):
    """Something the operator must fix: printed without a traceback."""


def read(path: Path) -> tuple[TokenEntry, ...]:
    """The file's entries; a missing file has none, a bad line stops the edit (it would be lost)."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return ()
    except (OSError, UnicodeDecodeError) as e:
        raise TokenError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    entries, bad = parse(text)
    if bad:
        number, reason = bad[0]
        raise TokenError(f"{path}, line {number}: {reason}; fix or remove that line first")
    return entries


def write(path: Path, entries: tuple[TokenEntry, ...]) -> None:
    """Replace the file whole, keeping its mode and owner (the daemon's user must still read it)."""
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, render(entries), path.parent)
    os.chmod(path, old.st_mode & 0o7777 if old else 0o644)  # hashes only: no secret in it
    if old is not None and os.geteuid() == 0:
        os.chown(path, old.st_uid, old.st_gid)


def add(path: Path, name: str, scope: str, out: TextIO) -> int:
    if not is_name(name):
        raise TokenError(f"not a token name: {name!r} (letters, digits and . _ @ -, at most 64)")
    entries = read(path)
    if any(entry.name == name for entry in entries):
        raise TokenError(f"{path} already has a token named {name!r}; revoke it first")
    token = new_token()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write(path, (*entries, TokenEntry(name, scope, created, digest_of(token.encode()))))
    out.write(f"{token}\n")  # alone on stdout, for TOKEN=$(pypicached-admin token add NAME)
    sys.stderr.write(
        f"# the {scope} token {name!r}, added to {path}; it is shown only now. Use it as the password of\n"
        f"# the index URL (http://{name}:TOKEN@HOST/simple/), in ~/.netrc, or as 'Authorization: Bearer TOKEN'.\n"
    )
    return 0


def revoke(path: Path, name: str, out: TextIO) -> int:
    entries = read(path)
    kept = tuple(entry for entry in entries if entry.name != name)
    if len(kept) == len(entries):
        raise TokenError(f"{path} has no token named {name!r}")
    write(path, kept)
    out.write(f"Revoked {name!r}; the daemon stops accepting it within seconds.\n")
    return 0


async def listing(path: Path, admin: Any, out: TextIO) -> int:
    entries = read(path)
    use = await _use(admin)
    out.write(f"{'NAME':<24} {'SCOPE':<6} {'CREATED':<21} LAST USE\n")
    for entry in entries:
        last = "(no daemon answered)" if use is None else (use.get(entry.name, {}).get("last_used") or "-")
        out.write(f"{entry.name:<24} {entry.scope:<6} {entry.created:<21} {last}\n")
    if use is not None:
        out.write("(last use since the daemon started)\n")
    return 0


async def _use(admin: Any) -> dict[str, Any] | None:
    """Each token's use as the running daemon counts it, or None if it does not tell."""
    if admin.url is None:
        return None
    try:
        response = await admin.http.request("GET", admin.url + "/stats", headers=admin._headers(), timeout=ASK_TIMEOUT)
        body = await response.content()
        if response.code != 200:
            return None
        used: dict[str, Any] = json.loads(body)["access"]["use_since_start"]
        return used
    except Exception:
        return None


async def command(admin: Any, args: Any, out: TextIO) -> int:
    """``token ACTION``, on the file ``--tokens-file`` or the config names."""
    path = Path(args.tokens_file) if args.tokens_file else admin.settings.tokens_file
    if path is None:
        raise TokenError("no tokens file: set tokens_file in the config, or give --tokens-file")
    if args.action == "add":
        return add(path, args.name, args.scope, out)
    if args.action == "revoke":
        return revoke(path, args.name, out)
    return await listing(path, admin, out)
