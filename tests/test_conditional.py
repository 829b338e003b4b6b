"""Conditional requests: each header, on a package file and on an index page, answered by the one module."""

from __future__ import annotations

import pytest
from twisted.web.http import datetimeToString

from .memory import PIP_ACCEPT, World
from .wheels import build_wheel

WHEEL = build_wheel("pcx-cond", "1.0")


@pytest.fixture
def world(tmp_path):
    w = World({"pcx-cond": [WHEEL]}, tmp_path / "cache")
    assert w.page("pcx-cond").code == 200
    yield w
    w.stop()


@pytest.fixture
def file_path(world) -> str:
    path = WHEEL.pypi_path
    reply = world.get(path)
    assert reply.code == 200 and reply.body == WHEEL.data
    return path


def page(world: World, **headers: str):
    return world.get("/simple/pcx-cond/", {"Accept": PIP_ACCEPT, **headers})


def file(world: World, path: str, **headers: str):
    return world.get(path, headers)


@pytest.mark.parametrize("kind", ["page", "file"])
@pytest.mark.parametrize(
    "form, code",
    [
        ("{etag}", 304),
        ("W/{etag}", 304),
        ("*", 304),
        ('"other", {etag}', 304),
        ('"other"', 200),
        ('W/"other"', 200),
    ],
)
def test_if_none_match(world, file_path, kind, form, code):
    get = (lambda **h: page(world, **h)) if kind == "page" else (lambda **h: file(world, file_path, **h))
    etag = get().header("ETag")
    reply = get(**{"If-None-Match": form.format(etag=etag)})
    assert reply.code == code
    assert (reply.body == b"") == (code == 304)
    assert reply.header("ETag") == etag


def test_if_modified_since_on_a_file(world, file_path):
    modified = file(world, file_path).header("Last-Modified")
    assert file(world, file_path, **{"If-Modified-Since": modified}).code == 304
    assert file(world, file_path, **{"If-Modified-Since": datetimeToString(0).decode()}).code == 200
    assert file(world, file_path, **{"If-Modified-Since": "not a date"}).code == 200


def test_if_modified_since_on_a_page_is_ignored(world):
    # pages carry no Last-Modified: only their ETag can make a 304
    assert page(world).header("Last-Modified") is None
    assert page(world, **{"If-Modified-Since": datetimeToString(2**31 - 1).decode()}).code == 200


def test_if_none_match_wins_over_if_modified_since(world, file_path):
    modified = file(world, file_path).header("Last-Modified")
    assert file(world, file_path, **{"If-None-Match": '"other"', "If-Modified-Since": modified}).code == 200


@pytest.mark.parametrize("validator, code", [("{etag}", 206), ("{modified}", 206), ('"other"', 200), ("W/{etag}", 200)])
def test_if_range_on_a_file(world, file_path, validator, code):
    first = file(world, file_path)
    value = validator.format(etag=first.header("ETag"), modified=first.header("Last-Modified"))
    reply = file(world, file_path, Range="bytes=0-9", **{"If-Range": value})
    assert reply.code == code
    assert reply.body == (WHEEL.data[:10] if code == 206 else WHEEL.data)


def test_a_page_takes_no_ranges(world):
    reply = page(world, Range="bytes=0-9")
    assert reply.code == 200 and reply.header("Accept-Ranges") is None and len(reply.body) > 10
