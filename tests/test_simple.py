"""Reading upstream pages into one form and writing them back out for clients."""

from __future__ import annotations

import json

import pytest

from pypicached.simpleapi import pypijson, simple
from pypicached.simpleapi.negotiation import Format

PAGE_URL = "http://up.test/simple/foo/"
HTML_PAGE = b"""<!DOCTYPE html><html><head><meta name="pypi:repository-version" content="1.1"></head><body>
<a href="../../files/foo-1.0-py3-none-any.whl#sha256=aa11" data-requires-python="&gt;=3.8"
   data-dist-info-metadata="sha256=bb22" data-core-metadata="sha256=bb22">foo-1.0-py3-none-any.whl</a><br/>
<a href="http://elsewhere.test/x/foo-0.9.tar.gz#sha256=cc33" data-yanked="">foo-0.9.tar.gz</a>
<a href="foo-0.8.tar.gz" data-yanked="broken build" data-custom="kept">foo-0.8.tar.gz</a>
</body></html>"""


def href(url: str, sha256: str, fragment: str) -> str:
    return "PROXY:" + url + ("#" + fragment if fragment else "")


def test_html_is_read_attribute_by_attribute():
    page = simple.parse(HTML_PAGE, "text/html", PAGE_URL)
    first, second, third = page["files"]
    assert first["url"] == "http://up.test/files/foo-1.0-py3-none-any.whl"
    assert first["hashes"] == {"sha256": "aa11"}
    assert first["requires-python"] == ">=3.8"
    assert first["core-metadata"] == {"sha256": "bb22"}
    assert second["yanked"] is True and second["filename"] == "foo-0.9.tar.gz"
    assert third["yanked"] == "broken build"
    assert third["data-custom"] == "kept"
    assert page["meta"]["api-version"] == "1.1"


def test_html_round_trip_keeps_what_installers_read():
    page = simple.parse(HTML_PAGE, "text/html", PAGE_URL)
    out = simple.render_project(page, "foo", Format.HTML, href).decode()
    assert 'href="PROXY:http://up.test/files/foo-1.0-py3-none-any.whl#sha256=aa11"' in out
    assert 'data-requires-python="&gt;=3.8"' in out
    assert 'data-core-metadata="sha256=bb22"' in out and 'data-dist-info-metadata="sha256=bb22"' in out
    assert 'data-yanked=""' in out
    assert 'data-yanked="broken build"' in out
    assert 'data-custom="kept"' in out
    assert '<meta name="pypi:repository-version" content="1.1">' in out


def test_html_to_json():
    page = simple.parse(HTML_PAGE, "text/html", PAGE_URL)
    out = json.loads(simple.render_project(page, "foo", Format.JSON, href))
    assert out["name"] == "foo"
    assert out["meta"]["api-version"] == "1.1"
    first = out["files"][0]
    assert first["url"] == "PROXY:http://up.test/files/foo-1.0-py3-none-any.whl"
    assert first["hashes"] == {"sha256": "aa11"}
    assert first["core-metadata"] == first["data-dist-info-metadata"] == {"sha256": "bb22"}
    assert out["files"][1]["yanked"] is True


def test_json_survives_with_unknown_keys():
    upstream = {
        "meta": {"api-version": "1.1", "_last-serial": 7},
        "name": "foo",
        "versions": ["1.0"],
        "x-extra": {"kept": True},
        "files": [
            {
                "filename": "foo-1.0-py3-none-any.whl",
                "url": "https://files.test/packages/foo-1.0-py3-none-any.whl",
                "hashes": {"sha256": "aa11"},
                "requires-python": ">=3.8",
                "core-metadata": {"sha256": "bb22"},
                "size": 123,
                "upload-time": "2024-01-01T00:00:00.000000Z",
                "yanked": False,
                "x-file": 1,
            }
        ],
    }
    page = simple.parse(json.dumps(upstream).encode(), "application/vnd.pypi.simple.v1+json", PAGE_URL)
    out = json.loads(simple.render_project(page, "foo", Format.JSON, href))
    assert out["x-extra"] == {"kept": True} and out["versions"] == ["1.0"]
    assert out["meta"] == {"api-version": "1.1", "_last-serial": 7}
    f = out["files"][0]
    assert f["url"] == "PROXY:https://files.test/packages/foo-1.0-py3-none-any.whl"
    for key in ("hashes", "requires-python", "size", "upload-time", "yanked", "x-file"):
        assert f[key] == upstream["files"][0][key]
    assert f["core-metadata"] == {"sha256": "bb22"}
    html_out = simple.render_project(page, "foo", Format.HTML, href).decode()
    assert "#sha256=aa11" in html_out and 'data-requires-python="&gt;=3.8"' in html_out
    assert "data-yanked" not in html_out


def test_links_table_includes_metadata_only_when_advertised():
    page = simple.parse(HTML_PAGE, "text/html", PAGE_URL)
    links = simple.file_links(page)
    link, meta = links["foo-1.0-py3-none-any.whl"]
    assert link.hashes == (("sha256", "aa11"),)
    assert meta is not None and meta.url == link.url + ".metadata" and meta.hashes == (("sha256", "bb22"),)
    assert links["foo-0.9.tar.gz"][1] is None


def test_index_page_both_ways(tmp_path):
    from pypicached.cache import projectlist

    source, tmp = tmp_path / "list", tmp_path / "tmp"
    tmp.mkdir()
    source.write_bytes(b'<a href="/simple/foo-bar/">Foo.Bar</a><a href="baz/">baz</a>')
    listing = projectlist.convert(
        source, content_type="text/html", encoding="", directory=tmp_path / "out", tmp=tmp, limit=1 << 20
    )
    out = tmp_path / "out" / listing.version
    page = json.loads((out / "json-1").read_bytes())
    assert [p["name"] for p in page["projects"]] == ["Foo.Bar", "baz"] and listing.count == 2
    assert b'<a href="foo-bar/">Foo.Bar</a>' in (out / "html-1").read_bytes()
    assert page["projects"][0] == {"name": "Foo.Bar"}


def test_bad_pages_are_refused():
    for body, ctype in [
        (b"{", "application/vnd.pypi.simple.v1+json"),
        (b"[]", "application/vnd.pypi.simple.v1+json"),
        (b"x", "image/png"),
    ]:
        with pytest.raises(simple.BadPage):
            simple.parse(body, ctype, PAGE_URL)


def test_pypi_json_urls_rewritten():
    doc = {
        "info": {"name": "foo"},
        "urls": [{"url": "https://f/packages/a.whl"}],
        "releases": {"1.0": [{"url": "https://f/packages/a.whl", "digests": {"sha256": "x"}}]},
    }
    out = json.loads(pypijson.render(pypijson.parse(json.dumps(doc).encode()), href))
    assert out["urls"][0]["url"] == "PROXY:https://f/packages/a.whl"
    assert out["releases"]["1.0"][0]["url"] == "PROXY:https://f/packages/a.whl"
    assert out["releases"]["1.0"][0]["digests"] == {"sha256": "x"}


# --- the newest fields: PEP 700, 740 and 792, and the api-version the proxy claims -------------

STATUS_PAGE_URL = "https://up.test/simple/foo/"
PROVENANCE = "https://up.test/integrity/foo/1.0/foo-1.0-py3-none-any.whl/provenance"
REASON = 'malware: "evil" <script> & more'
ESCAPED_REASON = REASON.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
STATUS_HTML = f"""<!DOCTYPE html><html><head>
<meta name="pypi:repository-version" content="1.4">
<meta name="pypi:project-status" content="quarantined">
<meta name="pypi:project-status-reason" content="{ESCAPED_REASON}">
</head><body>
<a href="../../files/foo-1.0-py3-none-any.whl#sha256=aa11"
   data-provenance="/integrity/foo/1.0/foo-1.0-py3-none-any.whl/provenance">foo-1.0-py3-none-any.whl</a>
</body></html>""".encode()


def status_json() -> dict:
    return {
        "meta": {"_last-serial": 9, "api-version": "1.4", "x-meta": [1]},
        "name": "foo",
        "project-status": {"status": "archived", "reason": REASON},
        "versions": ["0.9", "1.0"],
        "_private": {"kept": "as is"},
        "alternate-locations": [],
        "files": [
            {
                "filename": "foo-1.0-py3-none-any.whl",
                "url": "https://files.test/packages/foo-1.0-py3-none-any.whl",
                "hashes": {"sha256": "aa11"},
                "provenance": PROVENANCE,
                "size": 12345678901,
                "upload-time": "2025-07-08T09:10:11.123456Z",
                "_file-private": True,
                "x-future": {"nested": [None, 1.5]},
            },
            {
                "filename": "foo-0.9.tar.gz",
                "url": "https://files.test/packages/foo-0.9.tar.gz",
                "hashes": {"sha256": "cc33"},
                "provenance": None,
                "size": 0,
                "upload-time": "2020-01-01T00:00:00Z",
            },
        ],
    }


def parse_json(doc: dict) -> simple.Page:
    return simple.parse(json.dumps(doc).encode(), "application/vnd.pypi.simple.v1+json", PAGE_URL)


def head_of(page_html: str) -> str:
    return page_html.split("</head>", 1)[0]


def test_html_status_and_relative_provenance_are_read():
    page = simple.parse(STATUS_HTML, "text/html", STATUS_PAGE_URL)
    assert page["project-status"] == {"status": "quarantined", "reason": REASON}
    assert page["files"][0]["provenance"] == PROVENANCE
    assert simple.project_status(page) == ("quarantined", REASON)


def test_html_status_and_provenance_to_json_client():
    page = simple.parse(STATUS_HTML, "text/html", STATUS_PAGE_URL)
    out = json.loads(simple.render_project(page, "foo", Format.JSON, href))
    assert out["project-status"] == {"status": "quarantined", "reason": REASON}
    assert out["files"][0]["provenance"] == PROVENANCE  # the upstream's URL, not the proxy's
    assert out["files"][0]["url"].startswith("PROXY:")
    assert out["meta"]["api-version"] == "1.4"


def test_html_status_and_provenance_to_html_client_and_back():
    page = simple.parse(STATUS_HTML, "text/html", STATUS_PAGE_URL)
    out = simple.render_project(page, "foo", Format.HTML, href).decode()
    head = head_of(out)
    assert '<meta name="pypi:project-status" content="quarantined">' in head
    assert (
        '<meta name="pypi:project-status-reason" content="malware: &quot;evil&quot; &lt;script&gt; &amp; more">'
    ) in head
    assert '<meta name="pypi:repository-version" content="1.4">' in head
    assert f'data-provenance="{PROVENANCE}"' in out
    again = simple.parse(out.encode(), "text/html", "http://proxy.test/simple/foo/")
    assert again["project-status"] == page["project-status"]
    assert again["files"][0]["provenance"] == PROVENANCE


def test_html_to_json_to_html_keeps_status_and_provenance():
    page = simple.parse(STATUS_HTML, "text/html", STATUS_PAGE_URL)
    as_json = simple.render_project(page, "foo", Format.JSON, href)
    again = simple.parse(as_json, "application/vnd.pypi.simple.v1+json", "http://proxy.test/simple/foo/")
    out = simple.render_project(again, "foo", Format.HTML, href).decode()
    assert '<meta name="pypi:project-status" content="quarantined">' in head_of(out)
    assert "&lt;script&gt; &amp; more" in head_of(out)
    assert f'data-provenance="{PROVENANCE}"' in out


def test_json_page_passes_through_exactly_but_for_urls():
    upstream = status_json()
    out = json.loads(simple.render_project(parse_json(upstream), "foo", Format.JSON, href))
    expected = status_json()
    for entry in expected["files"]:
        entry["url"] = "PROXY:" + entry["url"]
    assert out == expected  # PEP 700 and 740 fields, _-keys and unknown keys at every level, untouched
    assert list(out["meta"]) == ["_last-serial", "api-version", "x-meta"]


def test_json_status_and_provenance_to_html_client_and_back():
    out = simple.render_project(parse_json(status_json()), "foo", Format.HTML, href).decode()
    head = head_of(out)
    assert '<meta name="pypi:project-status" content="archived">' in head
    assert "&quot;evil&quot; &lt;script&gt; &amp; more" in head and "<script>" not in out
    assert f'data-provenance="{PROVENANCE}"' in out
    assert out.count("data-provenance") == 1  # a null provenance is no attribute
    again = simple.parse(out.encode(), "text/html", "http://proxy.test/simple/foo/")
    back = json.loads(simple.render_project(again, "foo", Format.JSON, href))
    assert back["project-status"] == {"status": "archived", "reason": REASON}
    assert back["files"][0]["provenance"] == PROVENANCE


def test_quarantined_files_are_carried_not_filtered():
    doc = status_json()
    doc["project-status"] = {"status": "Quarantined"}
    page = parse_json(doc)
    out = json.loads(simple.render_project(page, "foo", Format.JSON, href))
    assert len(out["files"]) == 2 and out["project-status"] == {"status": "Quarantined"}
    assert simple.project_status(page) == ("quarantined", "")


def test_no_status_means_active_and_no_tags():
    page = simple.parse(HTML_PAGE, "text/html", PAGE_URL)
    assert "project-status" not in page
    assert simple.project_status(page) == ("active", "")
    assert "pypi:project-status" not in simple.render_project(page, "foo", Format.HTML, href).decode()
    assert "project-status" not in json.loads(simple.render_project(page, "foo", Format.JSON, href))
    assert simple.project_status({"project-status": "quarantined"}) == ("active", "")  # not the PEP's shape


def test_status_reason_alone_stays_alone():
    body = STATUS_HTML.replace(b'<meta name="pypi:project-status" content="quarantined">\n', b"")
    page = simple.parse(body, "text/html", STATUS_PAGE_URL)
    assert page["project-status"] == {"reason": REASON}
    assert simple.project_status(page) == ("active", REASON)
    out = simple.render_project(page, "foo", Format.HTML, href).decode()
    assert "pypi:project-status-reason" in out and 'name="pypi:project-status"' not in out


@pytest.mark.parametrize(
    "upstream, sent",
    [
        ("1.0", "1.0"),
        ("1.1", "1.1"),
        ("1.3", "1.3"),
        ("1.4", "1.4"),
        ("0.9", "0.9"),
        ("1.5", "1.4"),
        ("1.10", "1.4"),
        ("2.0", "1.4"),
        ("2.1", "1.4"),
        (" 1.2 ", "1.2"),
        ("01.02", "1.2"),
        ("", "1.0"),
        ("1", "1.0"),
        ("v1.1", "1.0"),
        ("1.1.1", "1.0"),
        ("one", "1.0"),
        (1.1, "1.0"),
        (None, "1.0"),
    ],
)
def test_api_version_is_capped(upstream, sent):
    assert simple.capped_api_version(upstream) == sent
    doc = status_json()
    doc["meta"]["api-version"] = upstream
    page = parse_json(doc)
    assert json.loads(simple.render_project(page, "foo", Format.JSON, href))["meta"]["api-version"] == sent
    out = simple.render_project(page, "foo", Format.HTML, href).decode()
    assert f'<meta name="pypi:repository-version" content="{sent}">' in out


def test_api_version_cap_from_html_upstream_and_missing_meta():
    body = STATUS_HTML.replace(b'content="1.4"', b'content="3.7"')
    page = simple.parse(body, "text/html", STATUS_PAGE_URL)
    assert page["meta"]["api-version"] == "3.7"  # the cache keeps what the upstream said
    assert json.loads(simple.render_project(page, "foo", Format.JSON, href))["meta"]["api-version"] == "1.4"
    doc = status_json()
    del doc["meta"]
    out = json.loads(simple.render_project(parse_json(doc), "foo", Format.JSON, href))
    assert out["meta"] == {"api-version": "1.0"}


@pytest.mark.parametrize("upstream, sent", [("2.3", "1.4"), ("1.1", "1.1"), ("junk", "1.0")])
def test_project_list_api_version_is_capped(tmp_path, upstream, sent):
    from pypicached.cache import projectlist

    source, tmp = tmp_path / "list", tmp_path / "tmp"
    tmp.mkdir()
    body = {"meta": {"_last-serial": 5, "api-version": upstream}, "projects": [{"name": "foo"}]}
    source.write_bytes(json.dumps(body).encode())
    listing = projectlist.convert(
        source,
        content_type="application/vnd.pypi.simple.v1+json",
        encoding="",
        directory=tmp_path / "out",
        tmp=tmp,
        limit=1 << 20,
    )
    out = tmp_path / "out" / listing.version
    assert json.loads((out / "json-1").read_bytes())["meta"] == {"_last-serial": 5, "api-version": sent}
    assert f'<meta name="pypi:repository-version" content="{sent}">'.encode() in (out / "html-1").read_bytes()
    assert listing.meta["api-version"] == sent
