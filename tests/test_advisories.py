"""OSV advisories: reading a feed's zip."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from pypicached.policy import osv
from pypicached.policy.osv import EMPTY, read_zip


def advisory(id_: str, name: str, *, versions: tuple[str, ...] = (), events: tuple[dict, ...] = (),
             ecosystem: str = "PyPI", **fields: Any) -> dict:
    affected: dict[str, Any] = {"package": {"ecosystem": ecosystem, "name": name}, "versions": list(versions)}
    if events:
        affected["ranges"] = [{"type": "ECOSYSTEM", "events": list(events)}]
    return {"id": id_, "summary": f"summary of {id_}", "aliases": [], "affected": [affected], **fields}


def zip_of(*docs: dict, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for doc in docs:
            archive.writestr(f"{doc['id']}.json", json.dumps(doc))
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return buffer.getvalue()


SAMPLE = (
    advisory("MAL-2026-1234", "Evil_Pkg", versions=("1.0", "1.1", "2004d")),
    advisory("PYSEC-2024-1", "evil-pkg", events=({"introduced": "0"}, {"fixed": "1.1"}), versions=("1.0",)),
    advisory("GHSA-aaaa-bbbb-cccc", "Fine.Lib", events=({"introduced": "2.0"}, {"last_affected": "2.5"})),
    advisory("PYSEC-2024-2", "fine-lib", events=({"introduced": "1.0"}, {"fixed": "1.1"},
                                                 {"introduced": "3.0"}, {"fixed": "3.2"})),
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
    path.write_bytes(zip_of(advisory("GHSA-0000-0000-0000", "both", versions=("1.0",)),
                            advisory("MAL-2026-2", "both", versions=("1.0",))))
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


@pytest.mark.parametrize("body, words", [
    (b"this is no zip", "not a readable zip"),
    (zip_of(*SAMPLE)[:200], "not a readable zip"),
    (zip_of(), "no OSV advisories"),
    (zip_of(extra={"x.json": b"[1, 2]"}), "not an OSV advisory"),
    (zip_of(extra={"x.json": b"{\"id\": "}), "is not JSON"),
    (zip_of(SAMPLE[-1]), "none of its 1 advisories is for PyPI"),
])
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
