"""
File links: where a package file really lives upstream, the path the proxy
serves it under, and the digests it must match before it is stored.

The proxy only ever fetches a file it has seen linked from an index page, so
the page is the authority for every link and a crafted path cannot turn the
proxy into an open one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import quote, unquote, urldefrag, urljoin, urlsplit

import attrs

from pypicached.base.paths import is_plain_segment

#: The public index's content-addressed layout: /packages/b2[0:2]/b2[2:4]/b2[4:]/name
#: (a ``.metadata`` file beside it shares the path but not the digest).
_PYPI_LAYOUT = re.compile(r"^/packages/([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{60})/[^/]+(?<!\.metadata)$")
_SAFE = "!$&'()*+,;=:@-._~"
#: Segments made only of these come out of ``quote(s, safe=_SAFE)`` as they went in.
_NOTHING_TO_QUOTE = re.compile(r"[A-Za-z0-9!$&'()*+,;=:@._~/-]*")

#: Hash names installers accept in links, strongest first.
KNOWN_HASHES = ("sha512", "sha384", "sha256", "sha224", "blake2b", "md5")


@attrs.frozen
class FileLink:
    """One downloadable file as an index page described it."""

    url: str
    filename: str
    hashes: tuple[tuple[str, str], ...] = ()

    def expected_digests(self) -> dict[str, str]:
        """
        Every digest the bytes must match: the ones the page published and, for
        the public index's layout, the blake2b-256 the path spells.
        """
        digests = {name: value.lower() for name, value in self.hashes if name in KNOWN_HASHES}
        match = _PYPI_LAYOUT.match(urlsplit(self.url).path)
        if match:
            digests["blake2b_256"] = "".join(match.groups())
        return digests


class Hasher(Protocol):
    """What a digest takes of a hashlib object: ``hashlib.new``'s and ``blake2b``'s are of different classes."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def new_hasher(name: str) -> Hasher:
    """A hashlib object for a digest name used by ``expected_digests``."""
    if name == "blake2b_256":
        return hashlib.blake2b(digest_size=32)
    return hashlib.new(name)


def hashes_of(mapping: object) -> tuple[tuple[str, str], ...]:
    """The ``hashes`` of a PEP 691 file entry as a sorted tuple, dropping junk."""
    if not isinstance(mapping, Mapping):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in mapping.items() if isinstance(v, str)))


#: A URL that ``urllib`` takes apart and puts back as it was: an http(s) origin or none, then a
#: path without dot segments, empty segments, parameters or a query; only its fragment may follow.
_PLAIN_URL = re.compile(
    r"(?:https?://[-A-Za-z0-9.:@]+(?=/))?(?!//)(?!.*//)(?!.*/\.\.?(?:/|#|$))[-A-Za-z0-9._~!$&'()*+,=@/%]*(?:#.*)?",
    re.DOTALL,
)


def is_plain_url(url: str) -> bool:
    """Whether ``url`` is spelled so plainly that string operations give what ``urllib`` would."""
    return _PLAIN_URL.fullmatch(url) is not None and "\\" not in url and not any(c in url for c in "\t\r\n")


def origin_of(base: str) -> str | None:
    """An http(s) URL's scheme and host, as ``join`` takes them; None for any other."""
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def join(base: str, origin: str | None, url: str) -> str:
    """``urljoin(base, url)``; ``origin`` is ``origin_of(base)``, for the fast path of a plain ``url``."""
    if is_plain_url(url):
        if url.startswith(("https://", "http://")):
            return url
        if url.startswith("/") and origin is not None:
            return origin + url
    return urljoin(base, url)


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """An absolute link without its fragment, and the ``name=digest`` the fragment held."""
    bare, fragment = url.partition("#")[::2] if is_plain_url(url) else urldefrag(url)
    name, sep, value = fragment.partition("=")
    return bare, ({name: value} if sep and name and value else {})


def proxy_path(url: str, sha256: str = "") -> tuple[str, ...]:
    """
    The path segments the proxy serves an upstream file under.

    Files whose path starts with ``/packages/`` (the public index, and another
    pypicached) keep that path, so links and logs look the same at every tier.
    Anything else goes to ``/packages/+f/<key>/<filename>``, the key a digest of
    the URL and the published sha256: stable across restarts, collision-free,
    new when an index that allows it replaces a file under the same URL, and
    still ending in the real filename, which is where installers read it from.
    """
    path = urlsplit(url).path
    pieces = path.split("/")[1:]
    segments = tuple(unquote(s) for s in pieces) if "%" in path else tuple(pieces)
    if (
        len(segments) >= 2
        and segments[0] == "packages"
        and segments[1] != "+f"
        and all(is_plain_segment(s) for s in segments)
    ):
        return segments
    filename = segments[-1] if segments and is_plain_segment(segments[-1]) else "file"
    key = hashlib.blake2b(f"{url}#{sha256.lower()}".encode(), digest_size=16).hexdigest()
    return ("packages", "+f", key, filename)


def relative_href(depth: int, segments: tuple[str, ...], fragment: str = "") -> str:
    """A link to ``segments`` from a page ``depth`` directories below the root."""
    joined = "/".join(segments)
    if _NOTHING_TO_QUOTE.fullmatch(joined) is None:  # nearly never: one regex instead of a quote() a segment
        joined = "/".join(quote(s, safe=_SAFE) for s in segments)
    href = "../" * depth + joined
    return href + ("#" + fragment if fragment else "")
