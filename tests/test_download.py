"""
The download state machine, driven without sockets: a fake response pushes chunks
into a ``Download``, and the ``GrowingFile`` it feeds is checked at every step.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from twisted.internet.defer import succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone, ResponseFailed
from twisted.web.http_headers import Headers

from pypicached.base.disk import run_inline
from pypicached.cache.download import Download, DownloadPlace
from pypicached.cache.files import open_temporary_file
from pypicached.cache.growing import GrowingFile, State
from pypicached.ops.metrics import Metrics
from pypicached.simpleapi.links import FileLink
from pypicached.upstream.breaker import UpstreamHealth

DATA = b"wheel bytes " * 1000
SEGMENTS = ("packages", "+f", "key", "pkg-1.0-py3-none-any.whl")


class Transport:
    """What a body's protocol may ask of its transport."""

    stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


class FakeResponse:
    """A 200 whose body the test pushes, chunk by chunk."""

    def __init__(self, length: int | None, code: int = 200) -> None:
        self.code = code
        self.length = length
        self.headers = Headers()
        self.protocol = None

    def deliverBody(self, protocol) -> None:  # type: ignore[no-untyped-def]
        self.protocol = protocol
        protocol.makeConnection(Transport())

    def push(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def end(self, reason: Failure = Failure(ResponseDone())) -> None:
        self.protocol.connectionLost(reason)


class FakeClient:
    """The upstream client as a download sees it: ``get`` answers with the test's response."""

    def __init__(self, response: FakeResponse, clock: Clock) -> None:
        self.response = response
        self.clock = clock
        self.idle_timeout = 60.0
        self.file_timeout = 30.0
        self.report = Metrics(clock)
        self.health = UpstreamHealth("http://upstream.test/simple/", clock)

    def get(self, url: str, headers=None, *, timeout=None):  # type: ignore[no-untyped-def]
        return succeed(self.response)


@pytest.fixture
def rig(tmp_path: Path):
    events: dict[str, list] = {"committed": [], "ended": [], "mismatched": [], "disk": []}

    def start(response: FakeResponse, sha256: str | None = None) -> GrowingFile:
        clock = Clock()
        (tmp_path / "tmp").mkdir(exist_ok=True)
        place = DownloadPlace(
            clock=clock,
            run_in_thread=run_inline,
            tmp=tmp_path / "tmp",
            open_temporary=open_temporary_file,
            final_path=lambda segments: tmp_path.joinpath("files", *segments),
            disk_failed=events["disk"].append,
            committed=lambda path, size: events["committed"].append((path, size)),
            ended=events["ended"].append,
            mismatched=lambda: events["mismatched"].append(True),
        )
        hashes = (("sha256", sha256 if sha256 is not None else hashlib.sha256(DATA).hexdigest()),)
        growing = GrowingFile(tmp_path / "tmp" / "pending")
        link = FileLink("http://upstream.test/f/pkg-1.0-py3-none-any.whl", SEGMENTS[-1], hashes)
        Download(
            place,
            FakeClient(response, clock),
            SEGMENTS,
            link,  # type: ignore[arg-type]
            growing,
        ).start()
        return growing

    rig.start, rig.events, rig.root = start, events, tmp_path
    return rig


def test_chunks_grow_the_file_and_the_last_byte_waits_for_the_check(rig):
    response = FakeResponse(len(DATA))
    growing = rig.start(response)
    assert growing.state is State.STREAMING and growing.size == len(DATA)
    response.push(DATA[:5000])
    assert growing.written == 5000 and growing.available() == 4999  # never the last byte before the check
    response.push(DATA[5000:])
    assert growing.available() == len(DATA) - 1 and not rig.events["committed"]
    response.end()
    assert growing.state is State.COMPLETE and growing.available() == len(DATA)
    final = rig.root.joinpath("files", *SEGMENTS)
    assert growing.path == final and final.read_bytes() == DATA
    assert rig.events["committed"] == [(final, len(DATA))] and rig.events["ended"] == [SEGMENTS]
    assert list((rig.root / "tmp").iterdir()) == []


def test_a_digest_mismatch_fails_and_stores_nothing(rig):
    response = FakeResponse(len(DATA))
    growing = rig.start(response, sha256="0" * 64)
    response.push(DATA)
    response.end()
    assert growing.state is State.FAILED and "sha256 mismatch" in growing.error
    assert rig.events["mismatched"] == [True] and not rig.events["committed"]
    assert list((rig.root / "tmp").iterdir()) == [] and not (rig.root / "files").exists()


def test_a_body_cut_short_fails(rig):
    response = FakeResponse(len(DATA))
    growing = rig.start(response)
    response.push(DATA[:100])
    response.end(Failure(ResponseFailed([Failure(ConnectionLost())])))
    assert growing.state is State.FAILED and growing.error_status == 502
    assert rig.events["ended"] == [SEGMENTS] and not rig.events["committed"]


def test_fewer_bytes_than_announced_fail(rig):
    response = FakeResponse(len(DATA) + 1)
    growing = rig.start(response)
    response.push(DATA)
    response.end()
    assert growing.state is State.FAILED and "of" in growing.error and not rig.events["committed"]


def test_an_upstream_404_fails_with_404(rig):
    growing = rig.start(FakeResponse(None, code=404))
    assert growing.state is State.FAILED and growing.error_status == 404


def test_transitions_check_the_state_they_leave(tmp_path):
    growing = GrowingFile(tmp_path / "x")
    with pytest.raises(RuntimeError):
        growing.wrote(1)  # no bytes before the headers
    growing.begin(3, tmp_path / "x")
    with pytest.raises(RuntimeError):
        growing.begin(3, tmp_path / "x")  # headers come once
    growing.wrote(3)
    growing.complete()
    assert growing.fail("too late") is False and growing.state is State.COMPLETE
    with pytest.raises(RuntimeError):
        growing.held(b"more")
