"""
A big page read and written in a disk thread leaves the event loop's thread
its turns (issue #23): ``json`` in one piece holds the GIL throughout, the
pieces only briefly. ``chunkedjson`` gives the same values and bytes as ``json``,
refuses what it refuses, and works one file entry at a time.
"""

from __future__ import annotations

import json

from pypicached.simpleapi import chunkedjson


def _page(files: int) -> dict:
    return {
        "meta": {"api-version": "1.1"},
        "name": "big",
        "files": [
            {
                "filename": f"big-1.{i}-py3-none-any.whl",
                "url": f"https://files.example.lan/packages/{i:064x}/big-1.{i}-py3-none-any.whl",
                "hashes": {"sha256": f"{i:064x}"},
                "requires-python": ">=3.8",
                "core-metadata": {"sha256": f"{i + 1:064x}"},
                "yanked": False,
            }
            for i in range(files)
        ],
        "versions": [f"1.{i}" for i in range(files)],
    }


def test_chunked_json_reads_and_writes_the_same():
    page = _page(3000)
    body = json.dumps(page, separators=(",", ":"))
    assert chunkedjson.dumps(page) == body
    assert chunkedjson.dumps(page, ensure_ascii=False) == json.dumps(page, ensure_ascii=False, separators=(",", ":"))
    assert chunkedjson.loads(body.encode()) == page
    record = {"format": 1, "etag": None, "page": page}
    assert chunkedjson.loads(json.dumps(record).encode()) == record
    assert chunkedjson.dumps(record) == json.dumps(record, separators=(",", ":"))


def test_chunked_json_refuses_what_json_refuses():
    body = json.dumps(_page(2000)).encode()
    for broken in (body[:-1], body + b"x", body.replace(b"}]", b"},]", 1), body.replace(b'":', b'"', 1)):
        try:
            json.loads(broken)
        except ValueError as e:
            expected: object = type(e)
        else:
            expected = json.loads(broken)
        try:
            got: object = chunkedjson.loads(broken)
        except ValueError as e:
            got = type(e)
        assert got == expected


def test_a_big_page_is_read_and_written_one_file_entry_at_a_time(monkeypatch):
    """
    Between two pieces the interpreter may hand the GIL to the event loop's thread; within
    one (a C call of ``json``) it cannot. So no piece may be more than one file entry: checked
    on the pieces themselves, not by timing them (the loop's longest stall is measured by
    ``make bench-cold``, where a busy machine cannot fail a test).
    """
    page = _page(60_000)  # about 18 MB of JSON
    body = json.dumps(page, separators=(",", ":"))
    entry = max(len(json.dumps(f, separators=(",", ":"))) for f in page["files"])
    written: list[int] = []
    encode = json.JSONEncoder(separators=(",", ":")).encode

    def counted(value: object) -> str:
        text = encode(value)
        written.append(len(text))
        return text

    assert chunkedjson._value(page, counted, 0) == body
    assert len(written) > 2 * 60_000 and max(written) <= entry

    read: list[int] = []
    decoder = chunkedjson._DECODER

    class Counted:
        @staticmethod
        def raw_decode(text: str, pos: int = 0) -> tuple[object, int]:
            value, end = decoder.raw_decode(text, pos)
            read.append(end - pos)
            return value, end

    monkeypatch.setattr(chunkedjson, "_DECODER", Counted)
    assert chunkedjson.loads(body.encode()) == page
    assert len(read) > 2 * 60_000 and max(read) <= entry
