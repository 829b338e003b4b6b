"""Pure logic: names, paths, negotiation, ranges, links, settings."""

from __future__ import annotations

import pytest

from pypicached.base.names import normalize, projects_for_filename
from pypicached.base.paths import BadPath, RequestPath
from pypicached.config import ConfigError, Settings, build_settings
from pypicached.http.conditional import ByteRange, Unsatisfiable, parse_range
from pypicached.simpleapi.links import FileLink, proxy_path, relative_href
from pypicached.simpleapi.negotiation import Format, choose_format

PIP_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"
UV_ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
POETRY_ACCEPT = "application/vnd.pypi.simple.v1+json, */*;q=0.1"


@pytest.mark.parametrize(
    "accept, expected",
    [
        (PIP_ACCEPT, Format.JSON),
        (UV_ACCEPT, Format.JSON),
        (POETRY_ACCEPT, Format.JSON),
        (None, Format.HTML),
        ("", Format.HTML),
        ("*/*", Format.HTML),
        ("text/html", Format.HTML),
        ("application/vnd.pypi.simple.v1+html", Format.HTML_V1),
        ("application/vnd.pypi.simple.v1+json;q=0, text/html", Format.HTML),
        ("application/json", Format.HTML),
        ("image/png", Format.HTML),
    ],
)
def test_negotiation(accept, expected):
    assert choose_format(accept) is expected


def test_format_content_types_are_exact():
    assert Format.JSON.value == "application/vnd.pypi.simple.v1+json"
    assert Format.HTML_V1.value == "application/vnd.pypi.simple.v1+html"
    assert Format.HTML.value.startswith("text/html")


@pytest.mark.parametrize(
    "raw, segments, slash",
    [
        (b"/", (), True),
        (b"/simple/", ("simple",), True),
        (b"/simple/Foo_Bar", ("simple", "Foo_Bar"), False),
        (b"/packages/a%20b/x.whl?q=1", ("packages", "a b", "x.whl"), False),
    ],
)
def test_paths_parse(raw, segments, slash):
    path = RequestPath.parse(raw)
    assert path.segments == segments
    assert path.trailing_slash is slash


@pytest.mark.parametrize(
    "raw",
    [
        b"/simple/../etc/passwd",
        b"/packages/%2e%2e/%2e%2e/etc/passwd",
        b"/packages/a%2fb",
        b"/packages/a%5cb",
        b"/packages/a\\b",
        b"//etc/passwd",
        b"/simple//x/",
        b"/packages/a%00b",
        b"http://evil.example/simple/",
        b"/packages/%ff",
        b"/" + b"a" * 5000,
    ],
)
def test_paths_refuse_hostile(raw):
    with pytest.raises(BadPath):
        RequestPath.parse(raw)


def test_names():
    assert normalize("Foo.Bar__baz") == "foo-bar-baz"
    assert projects_for_filename("Foo_Bar-1.0-py3-none-any.whl") == ["foo-bar"]
    assert projects_for_filename("python-dateutil-2.8.2.tar.gz") == ["python-dateutil"]
    assert projects_for_filename("foo-2-1.0.tar.gz") == ["foo-2", "foo"]
    assert projects_for_filename("foo-1.0-py3-none-any.whl.metadata") == ["foo"]


@pytest.mark.parametrize(
    "header, size, expected",
    [
        (b"bytes=0-9", 100, ByteRange(0, 10)),
        (b"bytes=90-", 100, ByteRange(90, 100)),
        (b"bytes=90-1000", 100, ByteRange(90, 100)),
        (b"bytes=-10", 100, ByteRange(90, 100)),
        (b"bytes=-10000", 100, ByteRange(0, 100)),
        (b"bytes=0-1,5-6", 100, None),
        (b"items=0-1", 100, None),
        (b"bytes=5-1", 100, None),
        (b"bytes=abc", 100, None),
    ],
)
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", [b"bytes=100-", b"bytes=200-300", b"bytes=-0"])
def test_parse_range_unsatisfiable(header):
    with pytest.raises(Unsatisfiable):
        parse_range(header, 100)


def test_proxy_path_keeps_the_public_layout_and_hides_others():
    b2 = "ab" + "cd" + "e" * 60
    url = f"https://files.example/packages/ab/cd/{'e' * 60}/foo-1.0.whl"
    assert proxy_path(url) == ("packages", "ab", "cd", "e" * 60, "foo-1.0.whl")
    assert FileLink(url, "foo-1.0.whl").expected_digests() == {"blake2b_256": b2}
    other = proxy_path("http://host/static/../files/foo-1.0.tar.gz")
    assert other[:2] == ("packages", "+f") and other[-1] == "foo-1.0.tar.gz"
    assert proxy_path("http://a/files/x.whl") != proxy_path("http://b/files/x.whl")
    # an index that replaces a file under the same URL gets a new path, not the old bytes
    assert proxy_path("http://a/files/x.whl", "aa") != proxy_path("http://a/files/x.whl", "bb")
    assert proxy_path(url, "aa") == proxy_path(url)  # the public layout is already content-addressed
    assert relative_href(2, ("packages", "a b", "x.whl"), "sha256=00") == "../../packages/a%20b/x.whl#sha256=00"


def test_settings_defaults_and_overrides():
    settings = build_settings({"index_ttl": 5, "listen": "tcp:1"}, {"index_ttl": 7.5})
    assert settings.index_ttl == 7.5
    assert settings.listen == ("tcp:1",)
    assert Settings().listen == ("tcp:3141",)
    assert build_settings({"upstream": "http://h/simple"}, {}).upstream == "http://h/simple/"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"nope": 1}, "unknown setting 'nope'"),
        ({"index_ttl": "soon"}, "index_ttl"),
        ({"index_ttl": -1}, "index_ttl"),
        ({"upstream": "ftp://x/"}, "upstream"),
        ({"listen": []}, "listen"),
        ({"cache_dir": 3}, "cache_dir"),
    ],
)
def test_settings_errors_name_the_setting(values, message):
    with pytest.raises(ConfigError, match=message):
        build_settings(values, {})
