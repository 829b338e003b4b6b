"""
A strict single-pass reader of the regular HTML a simple-API project page is:
anchors with their attributes and text, ``<meta>`` tags, other plain tags, a
doctype and plain comments (the public index's ``<!--SERIAL n-->``). It reads
what ``htmlpage``'s general parser reads, some ten times faster, or refuses
the page (``None``) at the first thing it was not written for: a script, a
style, a title holding tags, an anchor left open or nested, an attribute
spelled loosely, a comment with ``--`` inside. A refused page goes to the
general parser, so being strict costs only time, never a link.
"""

from __future__ import annotations

import html
import re

__all__ = ["Anchors", "scan"]

#: The anchors' attributes, in the page's order, and the ``<meta>`` tags' contents by name.
Anchors = tuple[list[dict[str, str | None]], dict[str, str]]

#: Only ASCII's own white space, where any HTML parser agrees (a vertical tab or a no-break space may not).
_S = r"[ \t\n\r\f]"
_NAME = r"[a-zA-Z_:][-a-zA-Z0-9_:.]*"
_BARE = r"[-A-Za-z0-9_.:/%#+~!$&()*,;@?=]+"
_ATTRIBUTE = rf"{_S}+{_NAME}(?:{_S}*={_S}*(?:\"[^\"]*\"|'[^']*'|{_BARE}))?"
#: Elements whose content a parser may read as text rather than tags (and anchors, read apart): never scanned.
_RAW = "script|style|textarea|title|xmp|iframe|noembed|noframes|noscript|plaintext|template|svg|math|a"
_TOKEN = re.compile(
    rf"""
    <a((?:{_S}+[a-z_:][-a-z0-9_:.]*="[^"<>]*")*){_S}*>[^<]*</a{_S}*>  # an anchor as nearly all are spelled
    | <[aA]((?:{_ATTRIBUTE})*){_S}*>[^<]*</[aA]{_S}*>     # any anchor, closed before any other tag
    | <(?!(?i:{_RAW})[ \t\n\r\f/>])([a-zA-Z][a-zA-Z0-9]*)((?:{_ATTRIBUTE})*){_S}*/?>   # any other start tag
    | </(?!(?i:{_RAW})[ \t\n\r\f>])[a-zA-Z][a-zA-Z0-9]*{_S}*>                           # its end tag
    | <[tT][iI][tT][lL][eE]{_S}*>[^<]*</[tT][iI][tT][lL][eE]{_S}*>                         # a title of text only
    | <!--(?!-?>)[^<>-]*(?:-[^<>-]+)*-->            # a comment without -- or <> in it
    | <![dD][oO][cC][tT][yY][pP][eE][^<>]*>         # the doctype
    """,
    re.VERBOSE,
)
_TEXT = re.compile(r"[^<]*")
_PLAIN = re.compile(rf'{_S}+([a-z_:][-a-z0-9_:.]*)="([^"]*)"')
_PAIR = re.compile(rf"{_S}+({_NAME})({_S}*={_S}*(?:\"([^\"]*)\"|'([^']*)'|({_BARE})))?")


def scan(text: str) -> Anchors | None:
    """The anchors and ``<meta>`` tags of a page, or None if it is not plain enough to scan."""
    anchors: list[dict[str, str | None]] = []
    metas: dict[str, str] = {}
    token, skip = _TOKEN.match, _TEXT.match
    pos = skip(text, 0).end()  # type: ignore[union-attr]  # [^<]* always matches
    end = len(text)
    while pos < end:
        found = token(text, pos)
        if found is None:
            return None
        plain, anchor, tag = found.group(1, 2, 3)
        if plain is not None:  # lower-case names, double quotes: as they are, but for entities
            pairs = _PLAIN.findall(plain)
            anchors.append({k: html.unescape(v) if "&" in v else v for k, v in pairs} if "&" in plain else dict(pairs))
        elif anchor is not None:
            anchors.append(_attributes(anchor))
        elif tag is not None and tag.lower() == "meta":
            attributes = _attributes(found[4])
            name, content = attributes.get("name"), attributes.get("content")
            if name and content:
                metas.setdefault(name, content)
        pos = skip(text, found.end()).end()  # type: ignore[union-attr]
    return anchors, metas


def _attributes(spelled: str) -> dict[str, str | None]:
    """A tag's attributes as a general parser gives them: names in lower case, entities decoded, the last one wins."""
    found: dict[str, str | None] = {}
    for name, assigned, double, single, bare in _PAIR.findall(spelled):
        value = double or single or bare
        found[name.lower()] = (html.unescape(value) if "&" in value else value) if assigned else None
    return found
