"""OSV advisories: reading a feed's zip, and the service that keeps the last good copy fresh (in memory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.web.resource import Resource
from twisted.web.server import Site

from pypicached.base.disk import run_inline
from pypicached.ops.metrics import Metrics
from pypicached.policy import advisories, osv
from pypicached.policy.advisories import EMPTY, AdvisoryFeed, read_zip
from pypicached.upstream.agent import upstream_http
from pypicached.upstream.breaker import UpstreamHealth
from pypicached.upstream.client import UpstreamClient

from .advisories import advisory, zip_of
from .memory import ScriptedAgent, SiteAgent

FEED_URL = "http://advisories.test/PyPI/all.zip"
REFRESH = 3600.0


SAMPLE = (
    advisory("MAL-2026-1234", "Evil_Pkg", versions=("1.0", "1.1", "2004d")),
    advisory("PYSEC-2024-1", "evil-pkg", events=({"introduced": "0"}, {"fixed": "1.1"}), versions=("1.0",)),
    advisory("GHSA-aaaa-bbbb-cccc", "Fine.Lib", events=({"introduced": "2.0"}, {"last_affected": "2.5"})),
    advisory(
        "PYSEC-2024-2",
        "fine-lib",
        events=({"introduced": "1.0"}, {"fixed": "1.1"}, {"introduced": "3.0"}, {"fixed": "3.2"}),
    ),
    advisory("MAL-2026-9", "typo-squat", events=({"introduced": "0"},)),
    advisory("PYSEC-2020-5", "fine-lib", versions=("9.9",), withdrawn="2021-01-01T00:00:00Z"),
    advisory("GHSA-npmm-npmm-npmm", "left-pad", ecosystem="npm", versions=("1.0",)),
)


@pytest.fixture
def sample(tmp_path: Path) -> osv.AdvisoryIndex:
    path = tmp_path / "all.zip"
    path.write_bytes(zip_of(*SAMPLE, extra={"README.txt": b"not json", "dir/": b""}))
    return read_zip(path)


def ids(found: tuple[osv.Advisory, ...]) -> list[str]:
    return [a.id for a in found]


def test_listed_versions_of_a_malicious_release(sample):
    found = sample.affecting("evil-pkg", "1.1")
    assert ids(found) == ["MAL-2026-1234"]
    assert found[0].malicious and found[0].summary == "summary of MAL-2026-1234"
    assert ids(sample.affecting("evil-pkg", "1.1.0")) == ["MAL-2026-1234"]  # one release, spelt two ways
    assert ids(sample.affecting("evil-pkg", "2004d")) == ["MAL-2026-1234"]  # no PEP 440 version: by its string
    assert sample.affecting("evil-pkg", "1.2") == ()
    assert sample.affecting("Evil_Pkg", "1.1") == ()  # callers pass normalized names


def test_malicious_advisories_come_first(sample):
    found = sample.affecting("evil-pkg", "1.0")
    assert ids(found) == ["MAL-2026-1234", "PYSEC-2024-1"]
    assert [a.malicious for a in found] == [True, False]


def test_malicious_first_whatever_the_ids_say(tmp_path):
    path = tmp_path / "both.zip"
    path.write_bytes(
        zip_of(
            advisory("GHSA-0000-0000-0000", "both", versions=("1.0",)),
            advisory("MAL-2026-2", "both", versions=("1.0",)),
        )
    )
    assert ids(read_zip(path).affecting("both", "1.0")) == ["MAL-2026-2", "GHSA-0000-0000-0000"]


def test_introduced_fixed_is_half_open(sample):
    assert ids(sample.affecting("evil-pkg", "0.1")) == ["PYSEC-2024-1"]
    assert ids(sample.affecting("evil-pkg", "1.1rc1")) == ["PYSEC-2024-1"]  # sorts before the fix: still affected
    assert ids(sample.affecting("evil-pkg", "1.1")) == ["MAL-2026-1234"]  # the fix itself is not
    assert ids(sample.affecting("fine-lib", "1.0")) == ["PYSEC-2024-2"]
    assert sample.affecting("fine-lib", "1.1") == ()
    assert ids(sample.affecting("fine-lib", "3.1.9")) == ["PYSEC-2024-2"]
    assert sample.affecting("fine-lib", "3.2") == ()


def test_last_affected_is_included(sample):
    assert sample.affecting("fine-lib", "1.9") == ()
    assert ids(sample.affecting("fine-lib", "2.0")) == ["GHSA-aaaa-bbbb-cccc"]
    assert ids(sample.affecting("fine-lib", "2.5")) == ["GHSA-aaaa-bbbb-cccc"]
    assert sample.affecting("fine-lib", "2.5.1") == ()


def test_an_open_range_covers_every_later_version(sample):
    assert ids(sample.affecting("typo-squat", "0.0.1")) == ["MAL-2026-9"]
    assert ids(sample.affecting("typo-squat", "0.dev1")) == ["MAL-2026-9"]  # "0" is before every version
    assert ids(sample.affecting("typo-squat", "99.0")) == ["MAL-2026-9"]
    assert sample.affecting("typo-squat", "not-a-version") == ()  # matched only by a listed string


def test_withdrawn_and_other_ecosystems_count_for_nothing(sample):
    assert sample.affecting("fine-lib", "9.9") == ()
    assert "left-pad" not in sample.projects()
    assert sorted(sample.projects()) == ["evil-pkg", "fine-lib", "typo-squat"]
    assert sample.count == 5


def test_the_snapshot_is_named_by_its_contents(tmp_path, sample):
    again, other = tmp_path / "again.zip", tmp_path / "other.zip"
    again.write_bytes(zip_of(*reversed(SAMPLE)))
    other.write_bytes(zip_of(*SAMPLE[:2]))
    assert sample.version and read_zip(again).version == sample.version
    assert read_zip(other).version != sample.version and read_zip(other).count == 2
    assert EMPTY.version == "" and EMPTY.count == 0 and EMPTY.affecting("evil-pkg", "1.0") == ()


def test_answers_are_remembered(sample):
    assert sample.affecting("evil-pkg", "1.0") is sample.affecting("evil-pkg", "1.0")


@pytest.mark.parametrize(
    "body, words",
    [
        (b"this is no zip", "not a readable zip"),
        (zip_of(*SAMPLE)[:200], "not a readable zip"),
        (zip_of(), "no OSV advisories"),
        (zip_of(extra={"x.json": b"[1, 2]"}), "not an OSV advisory"),
        (zip_of(extra={"x.json": b'{"id": '}), "is not JSON"),
        (zip_of(SAMPLE[-1]), "none of its 1 advisories is for PyPI"),
    ],
)
def test_a_zip_that_is_no_feed_is_refused(tmp_path, body, words):
    path = tmp_path / "bad.zip"
    path.write_bytes(body)
    with pytest.raises(ValueError, match=words):
        read_zip(path)


def test_an_oversized_member_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(osv, "MAX_MEMBER_BYTES", 1000)
    path = tmp_path / "big.zip"
    path.write_bytes(zip_of(SAMPLE[0], extra={"huge.json": b" " * 1001}))
    with pytest.raises(ValueError, match="'huge.json' is larger than 1000 bytes"):
        read_zip(path)


def test_too_many_members_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(osv, "MAX_MEMBERS", 2)
    path = tmp_path / "many.zip"
    path.write_bytes(zip_of(*SAMPLE[:3]))
    with pytest.raises(ValueError, match="3 members, more than 2"):
        read_zip(path)


class FeedResource(Resource):
    """The feed's host: serves ``body`` with ``code``, and counts requests."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body, self.code, self.requests = body, 200, 0
        #: When set, sent as the ETag, and an If-None-Match naming it gets 304.
        self.etag: bytes | None = None
        self.conditional: list[bytes | None] = []

    def render_GET(self, request: Any) -> bytes:
        self.requests += 1
        asked = request.getHeader(b"if-none-match")
        self.conditional.append(asked)
        if self.etag is not None:
            request.setHeader(b"etag", self.etag)
            if asked == self.etag:
                request.setResponseCode(304)
                return b""
        request.setResponseCode(self.code)
        request.setHeader(b"content-type", b"application/zip")
        return self.body


class Rig:
    """A feed's host in memory, a network a test can break, and feeds on one clock and one disk."""

    def __init__(self, root: Path) -> None:
        self.clock = MemoryReactorClock()
        self.site = FeedResource(zip_of(*SAMPLE))
        self._agent = SiteAgent(Site(self.site))
        self.network = ScriptedAgent(self._agent)
        self.path, self.tmp = root / "advisories" / "all.zip", root / "tmp"
        self.tmp.mkdir()
        self.feeds: list[AdvisoryFeed] = []

    def feed(self) -> AdvisoryFeed:
        client = UpstreamClient(
            upstream_http(self.network),
            clock=self.clock,
            health=UpstreamHealth(FEED_URL, self.clock),
            report=Metrics(self.clock),
        )
        feed = AdvisoryFeed(
            clock=self.clock,
            client=client,
            url=FEED_URL,
            refresh=REFRESH,
            path=self.path,
            tmp=self.tmp,
            run_in_thread=run_inline,
        )
        self.feeds.append(feed)
        return feed

    def started(self) -> AdvisoryFeed:
        feed = self.feed()
        feed.startService()
        self.flush()
        return feed

    def flush(self) -> None:
        for _ in range(100):
            self.clock.advance(0)
            if not self._agent.flush():
                return
        raise AssertionError("the pumps never settled")

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.flush()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    for feed in rig.feeds:
        if feed.running:
            feed.stopService()


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    """The advisories module's warning lines."""
    lines: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == advisories.__name__ and event.get("log_level") is LogLevel.warn:
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def test_the_first_refresh_loads_the_feed_and_stores_it(rig, warnings):
    feed = rig.feed()
    assert feed.current is EMPTY
    feed.startService()
    rig.flush()
    assert rig.site.requests == 1
    assert feed.current.count == 5 and ids(feed.current.affecting("evil-pkg", "1.1")) == ["MAL-2026-1234"]
    assert feed.last_refresh == rig.clock.seconds() and feed.last_error is None
    assert rig.path.read_bytes() == rig.site.body and list(rig.tmp.iterdir()) == []
    assert warnings == []


def test_the_feed_is_refreshed_every_interval(rig):
    feed = rig.started()
    first = feed.current.version
    rig.site.body = zip_of(*SAMPLE, advisory("MAL-2026-7777", "new-evil", versions=("0.1",)))
    rig.advance(REFRESH - 1)
    assert rig.site.requests == 1 and feed.current.version == first
    rig.advance(1)
    assert rig.site.requests == 2 and feed.current.version != first
    assert ids(feed.current.affecting("new-evil", "0.1")) == ["MAL-2026-7777"]
    assert feed.last_refresh == REFRESH and rig.path.read_bytes() == rig.site.body


def break_feed(rig: Rig, how: str) -> str:
    """Break the feed one way; the words its ``last_error`` then has."""
    if how == "500":
        rig.site.code = 500
        return "the feed answered 500"
    if how == "refused":
        rig.network.mode = "refuse"
        return "refused"
    if how == "corrupt":
        rig.site.body = b"PK\x03\x04 but no zip"
        return "the feed is unusable: not a readable zip"
    rig.site.body = zip_of(SAMPLE[-1])  # an npm feed at the PyPI feed's address
    return "is for PyPI"


@pytest.mark.parametrize("how", ["500", "refused", "corrupt", "wrong ecosystem"])
def test_a_failed_refresh_keeps_the_last_good_advisories(rig, warnings, how):
    feed = rig.started()
    good, stored = feed.current, rig.path.read_bytes()
    words = break_feed(rig, how)
    rig.advance(REFRESH)
    assert rig.network.attempts == 2
    assert feed.current is good and rig.path.read_bytes() == stored and list(rig.tmp.iterdir()) == []
    assert words in feed.last_error and feed.last_refresh == 0
    assert len(warnings) == 1 and words in warnings[0] and f"previous 5 advisories ({good.version})" in warnings[0]
    rig.site.code, rig.site.body, rig.network.mode = 200, zip_of(*SAMPLE[:2]), None
    rig.advance(REFRESH)
    assert feed.last_error is None and feed.current.count == 2 and feed.last_refresh == 2 * REFRESH


def test_a_feed_larger_than_the_bound_is_refused(rig, monkeypatch):
    monkeypatch.setattr(advisories, "MAX_FEED_BYTES", 100)
    feed = rig.started()
    assert feed.current is EMPTY and "larger than 100 bytes" in feed.last_error
    assert not rig.path.exists() and list(rig.tmp.iterdir()) == []


def test_a_restart_serves_the_copy_on_disk_before_the_feed_answers(rig):
    first = rig.started()
    first.stopService()
    rig.network.mode = "hang"
    again = rig.started()
    assert rig.network.hanging, "the refresh is under way"
    assert again.current.version == first.current.version and again.current.count == 5
    assert ids(again.current.affecting("typo-squat", "1.0")) == ["MAL-2026-9"]
    assert again.last_refresh is None and again.last_error is None


def test_an_unusable_copy_on_disk_waits_for_the_feed(rig, warnings):
    rig.path.parent.mkdir()
    rig.path.write_bytes(b"torn")
    rig.network.mode = "hang"
    feed = rig.started()
    assert feed.current is EMPTY and "copy on disk is unusable" in feed.last_error
    assert len(warnings) == 1 and str(rig.path) in warnings[0]


def test_stopping_stops_the_timer(rig):
    feed = rig.started()
    feed.stopService()
    rig.advance(3 * REFRESH)
    assert rig.site.requests == 1 and not feed.running


def test_refreshes_asked_together_share_one_download(rig):
    feed = rig.feed()
    first, second = feed.refresh(), feed.refresh()
    assert not first.called and not second.called
    rig.flush()
    assert rig.site.requests == 1 and first.called and second.called
    assert feed.current.count == 5


def test_a_feed_that_cannot_be_stored_is_reported_and_not_used(rig, warnings):
    (rig.path / "in-the-way").mkdir(parents=True)  # the copy's place is a directory that is not empty
    feed = rig.started()
    assert feed.current is EMPTY and feed.last_error.startswith("cannot store the feed")
    assert len(warnings) == 2 and "copy on disk is unusable" in warnings[0] and "Is a directory" in warnings[1]
    assert list(rig.tmp.iterdir()) == []


def test_an_unchanged_feed_is_asked_for_conditionally_also_after_a_restart(rig):
    rig.site.etag = b'"feed-1"'
    feed = rig.started()
    version = feed.current.version
    rig.advance(REFRESH)
    assert rig.site.conditional == [None, b'"feed-1"']  # the second refresh: 304, no body
    assert feed.current.version == version and feed.last_refresh == REFRESH and feed.last_error is None
    feed.stopService()
    again = rig.started()  # the validators were kept beside the copy on disk
    assert rig.site.conditional[-1] == b'"feed-1"' and again.current.version == version
    rig.site.etag, rig.site.body = b'"feed-2"', zip_of(*SAMPLE[:1])
    rig.advance(REFRESH)
    assert rig.site.conditional[-1] == b'"feed-1"' and again.current.count == 1  # changed: sent whole


def test_stopping_cancels_a_refresh_under_way_quietly(rig, warnings):
    rig.network.mode = "hang"
    feed = rig.started()
    assert len(rig.network.hanging) == 1
    feed.stopService()
    rig.flush()
    assert rig.network.hanging[0].called  # cancelled, not left waiting
    assert warnings == [] and feed.last_error is None and list(rig.tmp.iterdir()) == []
    attempts = rig.network.attempts
    assert feed.refresh().called and rig.network.attempts == attempts  # nothing more once stopped
