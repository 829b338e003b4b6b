"""
The tokens file's format and the tokens themselves: one line per token, its
name, scope, creation time and the SHA-256 of the token (never the token), so a
copy of the file lets no one in.
"""

from __future__ import annotations

import hashlib
import re
import secrets

import attrs

SCOPES = ("read", "admin")
#: Tokens start with this, so a leaked one is easy to recognise (in a repository, a paste).
PREFIX = "ppc_"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


class BadTokenLine(ValueError):
    """A line of the tokens file that is not ``NAME SCOPE CREATED sha256:HEX``."""


@attrs.frozen
class TokenEntry:
    """One token as the file keeps it."""

    name: str
    scope: str
    #: ISO 8601, UTC (``2025-01-31T12:00:00Z``).
    created: str
    #: ``sha256:`` and the hex digest of the token.
    digest: str

    def line(self) -> str:
        return f"{self.name} {self.scope} {self.created} {self.digest}\n"


def new_token() -> str:
    """A fresh token: the prefix and 43 characters (256 bits) from ``secrets``."""
    return PREFIX + secrets.token_urlsafe(32)


def digest_of(token: bytes) -> str:
    """What the file keeps of ``token``."""
    return "sha256:" + hashlib.sha256(token).hexdigest()


def is_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def parse_line(line: str) -> TokenEntry | None:
    """One line's entry, None for a blank line or a comment, BadTokenLine for anything else."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    fields = text.split()
    if len(fields) != 4:
        raise BadTokenLine("expected NAME SCOPE CREATED sha256:HEX")
    name, scope, created, digest = fields
    if not is_name(name):
        raise BadTokenLine("the name must be letters, digits and . _ @ - (at most 64)")
    if scope not in SCOPES:
        raise BadTokenLine(f"the scope must be {' or '.join(SCOPES)}")
    if not _DIGEST.fullmatch(digest):
        raise BadTokenLine("the hash must be sha256: and 64 hex digits")
    return TokenEntry(name, scope, created, digest)


def parse(text: str) -> tuple[tuple[TokenEntry, ...], list[tuple[int, str]]]:
    """Every entry of a file, and the (line number, reason) of every line that is not one."""
    entries: list[TokenEntry] = []
    bad: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            entry = parse_line(line)
        except BadTokenLine as e:
            bad.append((number, str(e)))
            continue
        if entry is not None:
            entries.append(entry)
    return tuple(entries), bad


def render(entries: tuple[TokenEntry, ...]) -> bytes:
    header = "# pypicached tokens: NAME SCOPE CREATED SHA256; edit with pypicached-admin token add|revoke\n"
    return (header + "".join(entry.line() for entry in entries)).encode()
