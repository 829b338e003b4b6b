"""
``json.loads`` and ``json.dumps`` for big pages, in pieces: the same values and
the same bytes, but a page's long lists are read and written one item at a time.

Why: ``json`` does its work in C, holding the GIL throughout. Done in a disk
thread on a 20 MB page that is 100-200 ms in which the event loop cannot run
at all, so every other client waits. Item by item, the loop gets the GIL back
every few milliseconds (the interpreter's switch interval), at little cost.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["dumps", "loads"]

#: Bodies smaller than this are decoded in one piece.
PIECE = 64 * 1024
#: How deep objects are taken apart: a record's page, its ``files`` (or the JSON API's ``releases``), their lists.
DEPTH = 3
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def dumps(value: Any, ensure_ascii: bool = True) -> str:
    """``json.dumps(value, ensure_ascii=…, separators=(",", ":"))``, a big page's long lists an item at a time."""
    encode = json.JSONEncoder(ensure_ascii=ensure_ascii, separators=(",", ":")).encode
    return _value(value, encode, 0)


def _value(value: Any, encode: Callable[[Any], str], depth: int) -> str:
    """Objects down to ``DEPTH`` key by key, long lists item by item (each at once); anything else at once."""
    if isinstance(value, dict) and depth < DEPTH and all(isinstance(k, str) for k in value):
        return "{" + ",".join(f"{encode(k)}:{_value(v, encode, depth + 1)}" for k, v in value.items()) + "}"
    if isinstance(value, list) and len(value) > 64:
        return "[" + ",".join([encode(item) for item in value]) + "]"
    return encode(value)


def loads(body: bytes | str) -> Any:
    """
    ``json.loads(body)``: a top-level object's values one by one, a long list's items
    one by one; anything irregular is left to ``json.loads``, which says what is wrong.
    """
    if len(body) < PIECE:
        return json.loads(body)
    text = body.decode(json.detect_encoding(body), "surrogatepass") if isinstance(body, bytes) else body
    try:
        return _object(text, _WHITESPACE.match(text, 0).end(), 0)[0]  # type: ignore[union-attr]
    except (ValueError, IndexError):
        return json.loads(text)  # raises the error json itself gives (or reads what the pieces could not)


def _object(text: str, pos: int, depth: int) -> tuple[dict[str, Any], int]:
    """The object at ``pos`` (its ``{``) and where it ends; ValueError for anything but a plain object."""
    skip, decode = _WHITESPACE.match, _DECODER.raw_decode
    if text[pos] != "{":
        raise ValueError("not an object")
    out: dict[str, Any] = {}
    pos = skip(text, pos + 1).end()  # type: ignore[union-attr]
    while text[pos] != "}":
        if text[pos] != '"':
            raise ValueError("not a key")
        key, pos = decode(text, pos)
        pos = skip(text, pos).end()  # type: ignore[union-attr]
        if text[pos] != ":":
            raise ValueError("no colon")
        pos = skip(text, pos + 1).end()  # type: ignore[union-attr]
        if text[pos] == "[":
            out[key], pos = _list(text, pos)
        elif text[pos] == "{" and depth + 1 < DEPTH:
            out[key], pos = _object(text, pos, depth + 1)
        else:
            out[key], pos = decode(text, pos)
        pos = skip(text, pos).end()  # type: ignore[union-attr]
        if text[pos] == ",":
            pos = skip(text, pos + 1).end()  # type: ignore[union-attr]
            if text[pos] == "}":
                raise ValueError("trailing comma")
        elif text[pos] != "}":
            raise ValueError("no comma")
    pos += 1
    if depth == 0 and skip(text, pos).end() != len(text):  # type: ignore[union-attr]
        raise ValueError("extra data")
    return out, pos


def _list(text: str, pos: int) -> tuple[list[Any], int]:
    skip, decode = _WHITESPACE.match, _DECODER.raw_decode
    out: list[Any] = []
    pos = skip(text, pos + 1).end()  # type: ignore[union-attr]
    while text[pos] != "]":
        item, pos = decode(text, pos)
        out.append(item)
        pos = skip(text, pos).end()  # type: ignore[union-attr]
        if text[pos] == ",":
            pos = skip(text, pos + 1).end()  # type: ignore[union-attr]
            if text[pos] == "]":
                raise ValueError("trailing comma")
        elif text[pos] != "]":
            raise ValueError("no comma")
    return out, pos + 1
