"""The ACME settings' own values: the names a certificate is for, and the account's contact address."""

from __future__ import annotations

import re
from typing import Any

#: A DNS name of letters, digits and hyphens (no wildcard: HTTP-01 cannot prove one).
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


def domains(value: Any) -> tuple[str, ...]:
    """Host names for one certificate, lower-cased, in order, without repeats."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError('expected a list of host names, e.g. ["pypi.example.lan"]')
    found: list[str] = []
    for item in value:
        name = item.lower().rstrip(".") if isinstance(item, str) else ""
        if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
            raise ValueError(f"{item!r} is not a host name (HTTP-01 takes no wildcards or addresses)")
        if name not in found:
            found.append(name)
    return tuple(found)


def email(value: Any) -> str:
    """A contact address for the ACME account (the CA's expiry warnings go there)."""
    if not isinstance(value, str) or not re.fullmatch(r"[^@\s:]+@[^@\s:]+\.[^@\s:]+", value):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value
