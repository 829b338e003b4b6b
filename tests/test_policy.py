"""
The supply-chain policy, in memory on an injected clock: a release cooldown by
upload time, deny and allow lists, missing upload times, PEP 792 quarantine,
and what the operator sees (403 reasons, /stats, /metrics, the explanation).
The policy works on what is cached: no test here needs a refetch to see it change.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest
from twisted.web.resource import Resource

from pypicached.cache.pagekind import JSON_API, PageKey
from pypicached.cache.records import StoredPage
from pypicached.config import ConfigError, build_settings
from pypicached.policy.advisories import EMPTY
from pypicached.policy.judge import Judge
from pypicached.policy.rules import Policy, deny_list
from pypicached.policy.view import view

from .advisories import advisory, zip_of
from .fake_upstream import FakeUpstream
from .memory import PIP_ACCEPT, World
from .wheels import build_sdist, build_wheel

DAY = 86400.0
NOW = datetime.datetime(2026, 11, 29, 12, 0, tzinfo=datetime.UTC)
HTML = "text/html"

OLD = build_wheel("pcx-cool", "1.0")
OLD_SDIST = build_sdist("pcx-cool", "1.0")
NEW = build_wheel("pcx-cool", "2.0")
OTHER = build_wheel("pcx-other", "3.0")


def upstream(flavour: str = "json") -> FakeUpstream:
    """pcx-cool 1.0 a month old, 2.0 an hour old; pcx-other 3.0 a month old."""
    fake = FakeUpstream([], flavour)
    fake.add(OLD, upload_time=NOW - datetime.timedelta(days=30))
    fake.add(OLD_SDIST, upload_time=NOW - datetime.timedelta(days=30))
    fake.add(NEW, upload_time=NOW - datetime.timedelta(hours=1))
    fake.add(OTHER, upload_time=NOW - datetime.timedelta(days=30))
    return fake


@pytest.fixture
def world(make_world):
    def make(flavour: str = "json", fake: Any = None, **settings: Any) -> World:
        settings.setdefault("index_ttl", 30 * DAY)  # no refetch in these tests: the policy works on the cached page
        return make_world(fake if fake is not None else upstream(flavour), now=NOW.timestamp(), **settings)

    return make


def json_page(w: World, project: str) -> dict[str, Any]:
    reply = w.page(project)
    assert reply.code == 200, reply.body
    return json.loads(reply.body)


def filenames(page: dict[str, Any]) -> list[str]:
    return [f["filename"] for f in page["files"]]


def file_path(dist) -> str:
    return dist.pypi_path


# --- the release cooldown ------------------------------------------------------------


def test_a_release_younger_than_min_release_age_is_hidden_until_it_comes_of_age(world):
    w = world(min_release_age=7 * DAY)
    page = json_page(w, "pcx-cool")
    assert filenames(page) == [OLD.filename, OLD_SDIST.filename]
    assert page["versions"] == ["1.0"]  # 2.0's only file is hidden, so 2.0 is gone from versions
    html = w.get("/simple/pcx-cool/", {"Accept": HTML})
    assert OLD.filename in html.body.decode() and NEW.filename not in html.body.decode()

    direct = w.get(file_path(NEW))
    assert direct.code == 403
    assert direct.header("X-Pypi-Cache") == "DENIED"
    assert direct.header("Content-Type") == "text/plain; charset=utf-8"
    uploaded = NOW - datetime.timedelta(hours=1)
    until = uploaded + datetime.timedelta(days=7)
    assert direct.body.decode() == (
        f"{NEW.filename}: uploaded {uploaded:%Y-%m-%dT%H:%M:%SZ}, "
        f"held back until {until:%Y-%m-%dT%H:%M:%SZ} by min_release_age\n"
    )
    assert w.get(file_path(NEW) + ".metadata").code == 403
    assert w.upstream.count(lambda r: NEW.filename in r.path) == 0  # never fetched, nor its metadata

    # the page's max-age ends when 2.0 comes of age, not at the 30-day TTL
    assert w.page("pcx-cool").header("Cache-Control") == f"max-age={7 * DAY - 3600:.0f}, public"

    pages_fetched = len(w.upstream.page_requests())
    w.advance(7 * DAY - 3600 + 1)
    page = json_page(w, "pcx-cool")
    assert NEW.filename in filenames(page) and page["versions"] == ["1.0", "2.0"]
    assert w.get(file_path(NEW)).code == 200
    assert len(w.upstream.page_requests()) == pages_fetched  # no refetch: the cached page had 2.0 all along


@pytest.mark.parametrize("policy", [{}, {"min_release_age": 7 * DAY}], ids=["no-policy", "policy"])
def test_a_cold_file_finds_its_linking_page_once(world, policy):
    """The file's page is looked up once per request, and judged by that same page: no second search."""
    w = world(**policy)
    router = w.proxy.indexes
    searches = []
    find_link = router.find_link
    router.find_link = lambda segments: searches.append(segments) or find_link(segments)
    assert w.get(file_path(OLD)).code == 200  # nothing cached: its page is fetched, then the file
    assert w.get(file_path(NEW)).code == (403 if policy else 200)  # the page is cached now
    assert len(searches) == 2, searches
    assert w.upstream.count("/simple/pcx-cool/") == 1
    assert w.upstream.count(OLD.pypi_path) == 1 and w.upstream.count(NEW.pypi_path) == (0 if policy else 1)
    assert w.get(file_path(OLD)).code == 200  # cached: no search at all
    assert len(searches) == 2


def test_views_have_their_own_etags(world):
    plain = world()
    held = world(min_release_age=7 * DAY)
    assert plain.page("pcx-cool").header("ETag") != held.page("pcx-cool").header("ETag")
    unaffected = (plain.page("pcx-other").header("ETag"), held.page("pcx-other").header("ETag"))
    assert unaffected[0] == unaffected[1]  # nothing hidden: the page as it is, validators and all


def test_exempt_projects_are_never_held_back(world):
    w = world(min_release_age=7 * DAY, min_release_age_exempt=("pcx-c*",))
    assert NEW.filename in filenames(json_page(w, "pcx-cool"))
    assert w.get(file_path(NEW)).code == 200


def test_the_json_api_drops_held_back_files_and_refuses_a_release_it_holds_back_whole(world):
    w = world(min_release_age=7 * DAY)
    document = json.loads(w.get("/pypi/pcx-cool/json").body)
    assert sorted(document["releases"]) == ["1.0"]
    # the newest release is held back whole: the document points at the newest one shown
    assert document["info"]["version"] == "1.0"
    assert sorted(f["filename"] for f in document["urls"]) == sorted([OLD.filename, OLD_SDIST.filename])
    release = w.get("/pypi/pcx-cool/2.0/json")
    assert release.code == 403 and release.header("X-Pypi-Cache") == "DENIED"
    assert b"min_release_age" in release.body
    assert w.get("/pypi/pcx-cool/1.0/json").code == 200


# --- files without an upload time --------------------------------------------------


@pytest.mark.parametrize("missing, shown", [("allow", True), ("hide", False)])
def test_an_html_only_index_under_missing_upload_time(world, missing, shown):
    w = world("html", min_release_age=7 * DAY, missing_upload_time=missing)
    body = w.get("/simple/pcx-cool/", {"Accept": HTML}).body.decode()
    assert (OLD.filename in body) is shown and (NEW.filename in body) is shown
    assert bool(json_page(w, "pcx-cool")["files"]) is shown


def test_missing_upload_time_hide_refuses_the_file_itself(world):
    w = world("html", missing_upload_time="hide")
    plain = world("html")
    link = json.loads(plain.page("pcx-cool").body)["files"][0]["url"]  # relative to /simple/pcx-cool/
    path = "/" + link.removeprefix("../../")
    assert plain.get(path).code == 200
    refused = w.get(path)
    assert refused.code == 403 and b'hidden by missing_upload_time = "hide"' in refused.body


# --- deny and allow lists -----------------------------------------------------------


def test_a_denied_project_is_refused_without_asking_upstream(world):
    w = world(deny=deny_list(["pcx-cool"]))
    for path in ("/simple/pcx-cool/", "/pypi/pcx-cool/json", "/pypi/pcx-cool/1.0/json", file_path(OLD)):
        reply = w.get(path, {"Accept": PIP_ACCEPT})
        assert reply.code == 403, path
        assert reply.header("X-Pypi-Cache") == "DENIED"
        assert "denied by deny entry 'pcx-cool'" in reply.body.decode()
    assert w.upstream.count("pcx-cool") == 0
    assert json_page(w, "pcx-other")["files"]  # others are untouched


@pytest.mark.parametrize(
    "entry, hidden",
    [
        ("pcx-cool==2.0", {NEW.filename}),
        ("pcx-cool<2", {OLD.filename, OLD_SDIST.filename}),
        ("PCX_Cool>=1.0,!=2.0", {OLD.filename, OLD_SDIST.filename}),
        ("pcx-cool>5", set()),
    ],
)
def test_deny_entries_with_versions_hide_just_those(world, entry, hidden):
    w = world(deny=deny_list([entry]))
    shown = set(filenames(json_page(w, "pcx-cool")))
    assert shown == {OLD.filename, OLD_SDIST.filename, NEW.filename} - hidden
    for dist in (OLD, NEW):
        reply = w.get(file_path(dist))
        assert reply.code == (403 if dist.filename in hidden else 200)
        if dist.filename in hidden:
            assert f"denied by deny entry {entry!r}" in reply.body.decode()


def test_a_file_already_cached_is_refused_once_the_policy_denies_it(world):
    w = world()
    assert w.get(file_path(NEW)).code == 200  # cached now
    w.restart(deny=deny_list(["pcx-cool==2.0"]))
    reply = w.get(file_path(NEW))
    assert reply.code == 403 and reply.header("X-Pypi-Cache") == "DENIED"
    assert w.get(file_path(OLD)).code == 200


@pytest.mark.parametrize("allow", [("pcx-other",), ("pcx-o*",)])
def test_only_allowed_projects_are_served(world, allow):
    w = world(allow=allow)
    assert json_page(w, "pcx-other")["files"]
    refused = w.page("pcx-cool")
    assert refused.code == 403 and refused.body == b"pcx-cool: not in the allow list\n"
    assert w.get(file_path(OLD)).code == 403


def test_the_policy_may_differ_per_index(world):
    tables = [{"name": "main", "url": "http://upstream.test/simple/", "min_release_age": 0}]
    settings = build_settings({"min_release_age": "7d", "index": tables}, {})
    assert settings.indexes[0].policy.min_release_age == 0
    w = world(min_release_age=7 * DAY, index=tables)
    assert NEW.filename in filenames(json_page(w, "pcx-cool"))


# --- PEP 792 ------------------------------------------------------------------------


BAD_WHEEL = build_wheel("pcx-bad", "1.0")


class Quarantined(Resource):
    """
    A JSON index (and JSON API) with one project whose PEP 792 status a test sets; its
    page still lists the file (as a stale mirror might), and the file is served.
    """

    isLeaf = True

    def __init__(self, status: str = "quarantined") -> None:
        super().__init__()
        self.status = status

    def render_GET(self, request):
        entry = {
            "filename": BAD_WHEEL.filename,
            "url": "/packages/" + BAD_WHEEL.filename,
            "hashes": {"sha256": BAD_WHEEL.sha256},
            "upload-time": "2026-01-01T00:00:00Z",
        }
        if request.path.startswith(b"/packages/"):
            request.setHeader(b"Content-Type", b"application/octet-stream")
            return BAD_WHEEL.data
        if request.path.startswith(b"/pypi/"):
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps(
                {"info": {"name": "pcx-bad", "version": "1.0"}, "urls": [entry], "releases": {"1.0": [entry]}}
            ).encode()
        request.setHeader(b"Content-Type", b"application/vnd.pypi.simple.v1+json")
        return json.dumps(
            {
                "meta": {"api-version": "1.4"},
                "name": "pcx-bad",
                "project-status": {"status": self.status, "reason": "malware reported"},
                "files": [entry],
                "versions": ["1.0"],
            }
        ).encode()


def test_a_quarantined_project_offers_no_files(world):
    w = world(fake=Quarantined())
    page = json_page(w, "pcx-bad")
    assert page["files"] == [] and page["versions"] == []
    assert page["project-status"] == {"status": "quarantined", "reason": "malware reported"}
    html = w.get("/simple/pcx-bad/", {"Accept": HTML}).body.decode()
    assert '<meta name="pypi:project-status" content="quarantined">' in html and "<a " not in html
    document = json.loads(w.get("/pypi/pcx-bad/json").body)  # the JSON API has no status: its simple page's holds
    assert document["releases"] == {} and document["urls"] == []


def test_a_quarantined_projects_files_are_refused_without_any_policy_even_from_disk(world):
    upstream = Quarantined("active")
    w = world(fake=upstream, index_ttl=60)
    path = "/packages/" + BAD_WHEEL.filename
    assert json_page(w, "pcx-bad")["files"] and w.get(path).code == 200  # cached now
    upstream.status = "quarantined"
    w.advance(61)
    assert json_page(w, "pcx-bad")["files"] == []
    refused = w.get(path)
    assert refused.code == 403 and b"quarantined by its index (PEP 792)" in refused.body
    w.restart()  # a lock-file install after a restart asks for the file alone
    assert w.get(path).code == 403


# --- files that no page lists ------------------------------------------------------


def test_offline_the_age_rules_still_hold_for_a_cached_file(world):
    w = world()
    assert w.get(file_path(NEW)).code == 200 and w.get(file_path(OLD)).code == 200
    w.restart(min_release_age=7 * DAY, offline=True)
    refused = w.get(file_path(NEW))
    assert refused.code == 403 and b"held back until" in refused.body
    assert w.get(file_path(OLD)).code == 200


def cached_at(w: World, dist, when: datetime.datetime) -> None:
    """Make the cached copy of ``dist`` look as if it had been cached at ``when``."""
    path = Path(w.proxy.settings.cache_dir) / "files" / file_path(dist).lstrip("/")
    os.utime(path, (when.timestamp(), when.timestamp()))


def test_a_young_release_deleted_upstream_is_not_served_from_disk(world):
    w = world(index_ttl=60)
    assert w.get(file_path(NEW)).code == 200  # cached
    cached_at(w, NEW, NOW - datetime.timedelta(hours=1))
    w.upstream.remove(NEW.filename)  # a malicious release, caught and removed within the hour
    w.restart(min_release_age=7 * DAY)
    w.advance(61)
    assert NEW.filename not in filenames(json_page(w, "pcx-cool"))
    refused = w.get(file_path(NEW))
    assert refused.code == 403 and refused.header("X-Pypi-Cache") == "DENIED"
    assert refused.body.decode() == (
        f"{NEW.filename}: no cached index page lists it, so its upload time is unknown; "
        "cached 2026-11-29T11:00:00Z, held back until 2026-12-06T11:00:00Z by min_release_age\n"
    )


def test_an_old_cached_file_deleted_upstream_is_still_served(world):
    w = world(index_ttl=60)
    assert w.get(file_path(OLD)).code == 200
    cached_at(w, OLD, NOW - datetime.timedelta(days=8))  # uploaded no later than that: of age
    w.upstream.remove(OLD.filename)
    w.restart(min_release_age=7 * DAY)
    w.advance(61)
    assert OLD.filename not in filenames(json_page(w, "pcx-cool"))
    reply = w.get(file_path(OLD))
    assert reply.code == 200 and reply.body == OLD.data


def test_files_the_cache_could_not_serve_anyway_keep_their_404_and_503(world):
    w = world(min_release_age=7 * DAY)
    json_page(w, "pcx-cool")
    unknown = w.get(file_path(OLD).replace("pcx_cool-1.0", "pcx_cool-1.1"))
    assert unknown.code == 404 and unknown.header("X-Pypi-Cache") != "DENIED"
    w.network.mode = "refuse"
    down = w.get(file_path(OTHER))  # its page never cached, the upstream gone
    assert down.code in (502, 503) and down.header("X-Pypi-Cache") == "ERROR"
    assert json.loads(w.get("/stats").body)["policy"]["denied_by_rule"] == {}


# --- hostile upstream data ---------------------------------------------------------


class Odd(Resource):
    """A JSON index whose upload times are of every wrong kind, and one in year 9999."""

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"application/vnd.pypi.simple.v1+json")
        files = [
            {
                "filename": f"pcx_odd-1.{i}-py3-none-any.whl",
                "url": f"/f/pcx_odd-1.{i}-py3-none-any.whl",
                "hashes": {},
                "upload-time": value,
            }
            for i, value in enumerate([["2026"], {}, 17, None, "yesterday", "9999-12-31T00:00:00Z"])
        ]
        return json.dumps({"meta": {"api-version": "1.1"}, "files": files, "versions": {"not": "a list"}}).encode()


def test_a_json_api_document_of_odd_shape_is_filtered_without_error():
    entry = {
        "filename": "pcx_x-2.0-py3-none-any.whl",
        "url": "https://files.test/x.whl",
        "upload_time_iso_8601": "2026-11-29T11:00:00Z",
    }
    page = {
        "info": {"version": ["2.0"]},
        "urls": [entry, "junk"],
        "releases": {"2.0": [entry], "1.0": "junk", "0.9": []},
    }
    stored = StoredPage(PageKey(JSON_API, "pcx-x"), "https://upstream.test/pypi/pcx-x/json", 0.0, None, None, page)
    made = view(Judge(Policy(min_release_age=7 * DAY), lambda: EMPTY), stored, NOW.timestamp(), "")
    assert set(made.hidden) == {entry["filename"]}
    assert made.page.page == {"info": {"version": ["2.0"]}, "urls": ["junk"], "releases": {"1.0": "junk", "0.9": []}}


def test_odd_upload_times_are_missing_ones_and_the_far_future_is_held_back(world):
    w = world(fake=Odd(), min_release_age=7 * DAY)
    page = json_page(w, "pcx-odd")
    assert len(page["files"]) == 5 and page["versions"] == {"not": "a list"}
    assert "pcx_odd-1.5-py3-none-any.whl" not in filenames(page)
    answer = json.loads(w.get("/policy/pcx-odd/1.5").body)
    assert answer["versions"][0]["files"][0]["verdict"]["reason"].endswith(
        "held back until 9999-12-31T23:59:59Z by min_release_age"
    )
    hidden = json_page(world(fake=Odd(), min_release_age=7 * DAY, missing_upload_time="hide"), "pcx-odd")
    assert hidden["files"] == []


# --- what the operator sees ---------------------------------------------------------


def test_stats_and_metrics_count_what_was_held_back_by_rule(world):
    w = world(min_release_age=7 * DAY, deny=deny_list(["pcx-other"]))
    json_page(w, "pcx-cool")
    json_page(w, "pcx-cool")  # the same file, held back again: counted once
    w.get(file_path(NEW))
    w.page("pcx-other")
    policy = json.loads(w.get("/stats").body)["policy"]
    assert policy["held_back_by_rule"] == {"min_release_age": 1}
    assert policy["denied_by_rule"] == {"deny": 1, "min_release_age": 1}
    [held] = policy["held_back_today"]
    assert (held["project"], held["filename"], held["rule"]) == ("pcx-cool", NEW.filename, "min_release_age")
    assert "held back until" in held["reason"]
    page = w.get("/").body.decode()
    assert "Held back by the policy" in page and NEW.filename in page
    assert "Requests refused (403): <code>deny</code> 1, <code>min_release_age</code> 1." in page
    metrics = w.get("/metrics").body.decode()
    assert 'pypicached_policy_held_back_total{rule="min_release_age"} 1.0' in metrics
    assert 'pypicached_policy_denied_total{rule="deny"} 1.0' in metrics


def test_the_explanation_names_each_rule(world):
    w = world(min_release_age=7 * DAY, deny=deny_list(["pcx-cool==1.0", "pcx-other"]))
    answer = json.loads(w.get("/policy/pcx-cool").body)
    assert [v["version"] for v in answer["versions"]] == ["2.0", "1.0"]
    newest, oldest = answer["versions"]
    assert newest["shown"] == 0 and newest["files"][0]["verdict"]["rule"] == "min_release_age"
    assert {f["verdict"]["rule"] for f in oldest["files"]} == {"deny"}
    one = json.loads(w.get("/policy/pcx-cool/2.0").body)
    assert [v["version"] for v in one["versions"]] == ["2.0"]
    denied = json.loads(w.get("/policy/pcx-other").body)
    assert denied["verdict"]["rule"] == "deny" and denied["versions"] == []


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, message",
    [
        ({"deny": ["evil pkg"]}, "deny entry 'evil pkg' is not a requirement"),
        ({"deny": ["evil[extra]"]}, "give a project name and versions only"),
        ({"deny": ["evil; python_version<'3'"]}, "give a project name and versions only"),
        ({"deny": "evil"}, "expected a list of requirement strings"),
        ({"allow": []}, "an empty allow list would serve nothing"),
        ({"allow": ["Pcx_Cool"]}, "must be a list of normalized project names or globs"),
        ({"min_release_age_exempt": ["My_Pkg"]}, "must be a list of normalized project names or globs"),
        ({"missing_upload_time": "drop"}, "expected 'allow' or 'hide'"),
        ({"min_release_age": "a week"}, "expected a number of seconds"),
        ({"advisories_url": "ftp://osv.example/all.zip"}, "is not an http:// or https:// URL"),
        ({"advisories_refresh": 0}, "must be at least 1 second"),
        (
            {"index": [{"name": "a", "url": "http://a.test/simple/", "deny": ["x y"]}]},
            "index 'a': deny: deny entry 'x y'",
        ),
    ],
)
def test_policy_settings_errors_name_the_setting_and_entry(values, message):
    with pytest.raises(ConfigError) as raised:
        build_settings(values, {})
    assert message in str(raised.value)


def test_policy_settings_parse():
    settings = build_settings(
        {
            "min_release_age": "7d",
            "min_release_age_exempt": ["mycorp-*"],
            "missing_upload_time": "hide",
            "deny": ["evil-pkg", "urllib3<1.26.5"],
            "allow": ["mycorp-*", "requests"],
            "deny_vulnerable": True,
            "advisories_url": "https://osv.example/PyPI/all.zip",
            "advisories_refresh": "30m",
        },
        {},
    )
    policy = settings.indexes[0].policy
    assert policy.min_release_age == 7 * DAY and policy.exempt("mycorp-tools") and not policy.exempt("requests")
    assert [(d.project, str(d.specifier)) for d in policy.deny] == [("evil-pkg", ""), ("urllib3", "<1.26.5")]
    assert policy.allow == ("mycorp-*", "requests") and policy.deny_vulnerable
    assert settings.advisories_refresh == 1800 and settings.advisories_url == "https://osv.example/PyPI/all.zip"
    assert settings.effective()["deny"] == ["evil-pkg", "urllib3<1.26.5"]


# --- advisories ---------------------------------------------------------------------


class WithFeed(Resource):
    """The fake index, plus an OSV feed at /osv/all.zip whose bytes a test can change."""

    isLeaf = True

    def __init__(self, index: FakeUpstream, feed: bytes) -> None:
        super().__init__()
        self.index = index
        self.feed = feed
        self.feed_requests = 0

    def render(self, request):
        if request.path != b"/osv/all.zip":
            return self.index.render(request)
        self.feed_requests += 1
        request.setHeader(b"Content-Type", b"application/zip")
        return self.feed


def feed_world(world, feed: bytes, **settings: Any) -> tuple[World, WithFeed]:
    served = WithFeed(upstream(), feed)
    w = world(fake=served, advisories_url="http://upstream.test/osv/all.zip", advisories_refresh=3600.0, **settings)
    served.index.base_url, served.index._reactor = "http://upstream.test", w.clock  # as World does for its own
    w.flush()
    assert served.feed_requests == 1  # fetched at start
    return w, served


MALWARE = advisory("MAL-2026-1234", "pcx-cool", versions=("2.0",))
VULNERABLE = advisory("PYSEC-2026-7", "pcx-cool", events=({"introduced": "0"}, {"fixed": "2.0"}))


def test_a_malicious_release_disappears_and_a_failed_refresh_keeps_the_advisories(world):
    w, served = feed_world(world, zip_of(MALWARE, VULNERABLE))
    page = json_page(w, "pcx-cool")
    assert filenames(page) == [OLD.filename, OLD_SDIST.filename] and page["versions"] == ["1.0"]
    refused = w.get(file_path(NEW))
    assert refused.code == 403 and "MAL-2026-1234" in refused.body.decode()
    assert w.get(file_path(OLD)).code == 200  # PYSEC: only flagged without deny_vulnerable
    policy = json.loads(w.get("/stats").body)["policy"]
    assert policy["held_back_by_rule"] == {"malicious": 1} and policy["flagged_by_rule"] == {"vulnerable": 2}
    assert policy["advisories"]["count"] == 2 and policy["advisories"]["last_error"] is None

    fetched = json.loads(w.get("/stats").body)["all_time"]["fetched_bytes"]
    served.feed = b"not a zip"
    w.advance(3600)
    assert json.loads(w.get("/stats").body)["all_time"]["fetched_bytes"] == fetched  # the feed is not index traffic
    assert served.feed_requests == 2
    assert NEW.filename not in filenames(json_page(w, "pcx-cool"))  # the last good copy still holds
    assert json.loads(w.get("/stats").body)["policy"]["advisories"]["last_error"]

    served.feed = zip_of(VULNERABLE)  # the advisory withdrawn upstream: 2.0 is back at once
    w.advance(3600)
    assert NEW.filename in filenames(json_page(w, "pcx-cool"))
    policy = json.loads(w.get("/stats").body)["policy"]
    assert policy["flagged_by_rule"] == {"vulnerable": 2}  # the same files, seen again today: counted once


def test_deny_vulnerable_hides_versions_any_advisory_names(world):
    w, _ = feed_world(world, zip_of(VULNERABLE), deny_vulnerable=True)
    assert filenames(json_page(w, "pcx-cool")) == [NEW.filename]
    refused = w.get(file_path(OLD))
    assert refused.code == 403 and refused.body.decode() == f"{OLD.filename}: PYSEC-2026-7, denied by deny_vulnerable\n"
