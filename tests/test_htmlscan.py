"""
The strict scanner of project pages' HTML (simpleapi/htmlscan.py) against the
general parser it stands in for: every quirk the general one reads, read alike;
anything irregular refused (and then read by the general one); and a corpus of
generated real-shaped pages on which both agree on every field.
"""

from __future__ import annotations

import html
import random

import pytest

from pypicached.simpleapi import htmlscan, simple
from pypicached.simpleapi.htmlpage import parse_html, read_generally

PAGE_URL = "https://download.example.lan/whl/torch/"
HEAD = '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" content="1.1">\n'
HEAD += "    <title>Links for torch</title>\n  </head>\n  <body>\n    <h1>Links for torch</h1>\n"
TAIL = "  </body>\n</html>\n<!--SERIAL 25361211-->"


def page(*anchors: str) -> str:
    return HEAD + "".join(f"    {a}<br/>\n" for a in anchors) + TAIL


def scanned(text: str) -> list[dict]:
    """The page's files as the scanner reads them, checked against the general parser's."""
    assert htmlscan.scan(text) is not None, "the scanner refused a regular page"
    body = text.encode()
    assert parse_html(body) == parse_html(body, scanner=False)
    return simple.parse(body, "text/html", PAGE_URL)["files"]


def test_entities_in_attributes_are_decoded():
    (entry,) = scanned(
        page(
            '<a href="/whl/a-1.0.tar.gz?x=1&amp;y=2#sha256=ab" data-requires-python="&gt;=3.8,&#x3C;4"'
            ' data-yanked="bad &quot;build&quot; &eacute;">a-1.0.tar.gz</a>'
        )
    )
    assert entry["url"] == "https://download.example.lan/whl/a-1.0.tar.gz?x=1&y=2"
    assert entry["hashes"] == {"sha256": "ab"}
    assert entry["requires-python"] == ">=3.8,<4"
    assert entry["yanked"] == 'bad "build" é'


def test_local_versions_spelled_percent_2b():
    (entry,) = scanned(page('<a href="/whl/cu118/torch-2.0.0%2Bcu118-cp311-cp311-linux_x86_64.whl#sha256=01">x</a>'))
    assert entry["filename"] == "torch-2.0.0+cu118-cp311-cp311-linux_x86_64.whl"
    assert entry["url"] == "https://download.example.lan/whl/cu118/torch-2.0.0%2Bcu118-cp311-cp311-linux_x86_64.whl"
    assert entry["hashes"] == {"sha256": "01"}


def test_absolute_links_to_other_hosts_and_relative_ones():
    first, second, third = scanned(
        page(
            '<a href="https://files.example.net/packages/ab/cd/ef/a-1.0.whl#sha256=aa">a</a>',
            '<a href="../../files/a-0.9.whl#md5=bb">b</a>',
            '<a href="a-0.8.tar.gz">c</a>',
        )
    )
    assert first["url"] == "https://files.example.net/packages/ab/cd/ef/a-1.0.whl"
    assert second["url"] == "https://download.example.lan/files/a-0.9.whl" and second["hashes"] == {"md5": "bb"}
    assert third["url"] == "https://download.example.lan/whl/torch/a-0.8.tar.gz" and third["hashes"] == {}


def test_attributes_in_any_order_case_and_quoting():
    spellings = [
        '<a href="/w/a.whl#sha256=aa" data-requires-python="&gt;=3" data-yanked="">a</a>',
        "<a data-yanked='' data-requires-python='&gt;=3' href='/w/a.whl#sha256=aa'>a</a>",
        '<A DATA-REQUIRES-PYTHON="&gt;=3" HREF=/w/a.whl#sha256=aa Data-Yanked>a</A>',
        '<a\n   href = "/w/a.whl#sha256=aa"\n   data-requires-python="&gt;=3"\n   data-yanked = ""\n>a</a >',
    ]
    read = [scanned(page(s)) for s in spellings]
    assert all(r == read[0] for r in read)
    (entry,) = read[0]
    assert entry["requires-python"] == ">=3" and entry["yanked"] is True


def test_the_last_of_a_repeated_attribute_wins_as_in_the_general_parser():
    (entry,) = scanned(page('<a href="/w/a.whl" data-yanked="first" data-yanked="second">a</a>'))
    assert entry["yanked"] == "second"


def test_yanked_with_and_without_reason():
    bare, empty, reason, none = scanned(
        page(
            '<a href="/w/a-1.whl" data-yanked>a</a>',
            '<a href="/w/a-2.whl" data-yanked="">a</a>',
            '<a href="/w/a-3.whl" data-yanked="CVE-2024-1">a</a>',
            '<a href="/w/a-4.whl">a</a>',
        )
    )
    assert bare["yanked"] is True and empty["yanked"] is True
    assert reason["yanked"] == "CVE-2024-1"
    assert "yanked" not in none


@pytest.mark.parametrize(
    "attributes, expected",
    [
        ('data-core-metadata="sha256=cc"', {"sha256": "cc"}),  # PEP 714
        ('data-dist-info-metadata="sha256=cc"', {"sha256": "cc"}),  # PEP 658
        ('data-dist-info-metadata="sha256=cc" data-core-metadata="sha256=cc"', {"sha256": "cc"}),
        ('data-core-metadata="true"', True),
        ("data-core-metadata", True),
        ('data-core-metadata="false"', False),
    ],
)
def test_pep_714_and_pep_658_spellings(attributes, expected):
    (entry,) = scanned(page(f'<a href="/w/a-1.0-py3-none-any.whl#sha256=aa" {attributes}>a</a>'))
    assert simple.core_metadata(entry) == expected


def test_page_wide_meta_tags_and_the_serial_comment():
    text = (
        HEAD.replace(
            "</head>",
            '<meta name="pypi:project-status" content="quarantined"/><meta name="pypi:project-status-reason"'
            ' content="malware &amp; more"></head>',
        )
        + '<a href="/w/a.whl">a</a>'
        + TAIL
    )
    assert htmlscan.scan(text) is not None
    assert parse_html(text.encode()) == parse_html(text.encode(), scanner=False)
    read = simple.parse(text.encode(), "text/html", PAGE_URL)
    assert read["project-status"] == {"status": "quarantined", "reason": "malware & more"}
    assert read["meta"] == {"api-version": "1.1"}


@pytest.mark.parametrize(
    "irregular",
    [
        '<script>var a = "<a href=/w/evil.whl>x</a>";</script><a href="/w/a.whl">a</a>',
        '<style>a { x: "</a>" }</style><a href="/w/a.whl">a</a>',
        '<a href="/w/a.whl">a',  # never closed
        '<a href="/w/a.whl"><a href="/w/b.whl">b</a>',  # nested
        '<a href="/w/a.whl"><b>a</b></a>',  # a tag inside
        '<a href="/w/a.whl"/>',  # self-closed
        '<a href="/w/a.whl"data-yanked="">a</a>',  # no space between attributes
        '<a\u00a0href="/w/a.whl">a</a>',  # a no-break space is not white space to every parser
        '<a\x0bhref="/w/a.whl">a</a>',  # nor is a vertical tab
        '<!-- a -- b --><a href="/w/a.whl">a</a>',
        '<!--><a href="/w/hidden.whl">a</a>-->',
        "<title><a href=/w/a.whl>a</a></title>",
        '<textarea><a href="/w/a.whl">a</a></textarea>',
        '<![CDATA[<a href="/w/a.whl">a</a>]]>',
        '<?php echo 1 ?><a href="/w/a.whl">a</a>',
        'a < b <a href="/w/a.whl">a</a>',
        '<a href="/w/a.whl" data-x=a"b>a</a>',
    ],
)
def test_irregular_pages_are_refused_and_read_by_the_general_parser(irregular):
    text = HEAD + irregular + TAIL
    assert htmlscan.scan(text) is None
    body = text.encode()
    assert parse_html(body) == parse_html(body, scanner=False)


def test_html_that_is_not_utf8_is_still_a_bad_page():
    with pytest.raises(simple.BadPage):
        parse_html(b"<a href='\xff'>x</a>")


# --- the differential test: generated pages of the shapes upstreams write ------------------


def _value(rng: random.Random, text: str) -> tuple[str, str]:
    """An attribute value spelled one of the ways pages do: (spelling, what it means)."""
    escaped = html.escape(text, quote=True)
    choice = rng.random()
    if choice < 0.6 or not text:
        return f'"{escaped}"', text
    if choice < 0.8:
        return f"'{escaped}'", text
    if all(c.isalnum() or c in "-_.:/%#+~!$()*,;@?" for c in text):
        return text, text
    return f'"{escaped.replace("&#x27;", "&#39;")}"', text


def _anchor(rng: random.Random, i: int) -> str:
    version = f"{i // 10}.{i % 10}" + rng.choice(["", "", "+cu118", "+cpu", ".post1"])
    filename = f"pkg-{version}-py3-none-any.whl" if i % 2 else f"pkg-{version}.tar.gz"
    host = rng.choice(["", "https://files.example.net/packages/ab/cd/", "../../files/", "/whl/cu118/"])
    digest = rng.choice(["", "#sha256=" + f"{i:064x}", "#md5=" + f"{i:032x}"])
    attributes = [("href", host + filename.replace("+", rng.choice(["%2B", "%2b", "+"])) + digest)]
    if rng.random() < 0.7:
        attributes.append(("data-requires-python", rng.choice([">=3.8", ">=3.7,<4", "!=3.0.*, >=2.7", "<4 & >2"])))
    if rng.random() < 0.5:
        metadata = rng.choice(["sha256=" + f"{i:064x}", "true", "false", None])
        for name in rng.sample(["data-dist-info-metadata", "data-core-metadata"], rng.randint(1, 2)):
            attributes.append((name, metadata))
    if rng.random() < 0.15:
        attributes.append(("data-yanked", rng.choice([None, "", "broken", 'use "2.0" & later', "é ünïcode"])))
    if rng.random() < 0.1:
        attributes.append(("data-gpg-sig", rng.choice(["true", "false"])))
    if rng.random() < 0.1:
        attributes.append(("data-provenance", f"https://prov.example.net/{filename}.provenance"))
    if rng.random() < 0.05:
        attributes.append(("data-custom", "kept"))
    rng.shuffle(attributes)
    spelled = []
    for name, value in attributes:
        name = name.upper() if rng.random() < 0.05 else name
        space = rng.choice([" ", " ", "\n      ", "\t"])
        if value is None:
            spelled.append(f"{space}{name}")
        else:
            equals = rng.choice(["=", "=", " = "])
            spelled.append(f"{space}{name}{equals}{_value(rng, value)[0]}")
    a = rng.choice(["a", "a", "A"])
    return f"<{a}{''.join(spelled)}{rng.choice(['', ' '])}>{html.escape(filename)}</{a}>"


def _page(rng: random.Random, files: int) -> str:
    rows = [f"    {_anchor(rng, i)}{rng.choice(['<br/>', '<br />', '<br>', ''])}\n" for i in range(files)]
    head = HEAD if rng.random() < 0.8 else "<html><body>\n"
    if rng.random() < 0.2:
        head = head.replace("<head>", '<head>\n<meta name="pypi:project-status" content="archived">')
    tail = TAIL if rng.random() < 0.7 else "</body></html>"
    return head + "".join(rows) + tail


def _mutate(rng: random.Random, text: str) -> str:
    """A page with one irregularity put in somewhere: the scanner refuses it, or reads it alike."""
    spot = rng.randrange(len(text))
    junk = rng.choice(["<", ">", '"', "'", "<!--", "-->", "<br", "</a>", "<a href=x>", "&", "\x0b", "\u00a0", "<p>"])
    return text[:spot] + junk + text[spot:]


def test_scanner_and_general_parser_agree_on_generated_pages():
    rng = random.Random(23)
    for _ in range(200):
        text = _page(rng, rng.randint(1, 40))
        found = htmlscan.scan(text)
        assert found is not None, text
        assert found == read_generally(text)
        body = text.encode()
        assert parse_html(body) == parse_html(body, scanner=False)


def test_on_mutated_pages_the_scanner_refuses_or_agrees():
    rng = random.Random(714)
    refused = 0
    for _ in range(500):
        text = _mutate(rng, _page(rng, rng.randint(1, 10)))
        found = htmlscan.scan(text)
        refused += found is None
        if found is not None:
            assert found == read_generally(text), text
    assert refused > 100  # most mutations are irregular: the test would catch a scanner that reads anything
