"""
A big page read and written in a disk thread leaves the event loop's thread
its turns (issue #23): ``json`` in one piece holds the GIL throughout, the
pieces only briefly. Measured as ratios to the one-piece time on this machine,
so a slow or busy machine does not fail the test.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Callable

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


def _longest_gap(work: Callable[[], object]) -> float:
    """
    The longest the calling thread waited for its turn while ``work`` ran in another thread
    (the cyclic collector off: its full passes are the daemon's ``quiet_collector``'s business).
    """
    gc.disable()
    try:
        return _gaps(work)
    finally:
        gc.enable()


def _gaps(work: Callable[[], object]) -> float:
    done = threading.Event()
    thread = threading.Thread(target=lambda: (work(), done.set()))
    longest, last = 0.0, time.perf_counter()
    thread.start()
    while not done.is_set():
        time.sleep(0.0005)
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    thread.join()
    return longest


def _one_piece(work: Callable[[], object]) -> float:
    gc.disable()
    try:
        return min(_timed(work) for _ in range(3))
    finally:
        gc.enable()


def _timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


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


def test_a_big_page_in_pieces_leaves_the_loop_thread_its_turns():
    page = _page(60_000)  # about 18 MB of JSON
    body = json.dumps(page, separators=(",", ":")).encode()
    whole_loads = _one_piece(lambda: json.loads(body))
    whole_dumps = _one_piece(lambda: json.dumps(page, separators=(",", ":")))
    # in one piece the other thread waits about as long as json works (the check that the probe sees it)
    assert _longest_gap(lambda: json.loads(body)) > whole_loads / 2
    # in pieces, a small share of it (each piece is one file entry)
    assert _longest_gap(lambda: chunkedjson.loads(body)) < whole_loads * 0.4
    assert _longest_gap(lambda: chunkedjson.dumps(page)) < whole_dumps * 0.4
