"""Read access with tokens (#19): who gets in, who gets 401 or 429, and that no token is ever logged or shown."""

from __future__ import annotations

import base64
import os
import signal

import pytest
from twisted.logger import globalLogPublisher

from pypicached.admin.tokens import add, revoke
from pypicached.base.tokens import TokenEntry, digest_of, render
from pypicached.http.access import credential

from .memory import World

READ = "ppc_" + "r" * 40
ADMIN = "ppc_" + "a" * 40
OTHER = "ppc_" + "o" * 40


def basic(user: bytes, password: bytes) -> str:
    return "Basic " + base64.b64encode(user + b":" + password).decode()


@pytest.fixture
def tokens_file(tmp_path):
    path = tmp_path / "tokens"
    path.write_bytes(
        render(
            (
                TokenEntry("ci", "read", "2025-01-01T00:00:00Z", digest_of(READ.encode())),
                TokenEntry("boss", "admin", "2025-01-01T00:00:00Z", digest_of(ADMIN.encode())),
            )
        )
    )
    return path


@pytest.fixture
def logged():
    lines: list[str] = []

    def observe(event):
        from twisted.logger import formatEvent

        lines.append(formatEvent(event) + " " + repr(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest.fixture
def world(make_world, tokens_file) -> World:
    return make_world(tokens_file=tokens_file)


def test_without_a_token_401_with_basic_challenge_and_one_line(world):
    for path in ("/simple/pcx-alpha/", "/", "/stats", "/metrics", "/packages/x/y.whl", "/nowhere"):
        reply = world.get(path)
        assert reply.code == 401, path
        assert reply.header("WWW-Authenticate") == 'Basic realm="pypicached"'
        assert reply.body.count(b"\n") == 1 and reply.body.endswith(b"\n")
    assert world.get("/health").code == 200  # load balancers need no token
    # nor does the ACME CA checking a challenge (none pending here, no CA configured: 404, not 401)
    assert world.get("/.well-known/acme-challenge/some-token").code == 404
    assert world.get("/.well-known/acme-challengeX").code == 401


def test_a_token_as_basic_password_or_bearer_is_let_in(world, logged):
    assert world.get("/simple/pcx-alpha/", {"Authorization": basic(b"laptop-7", READ.encode())}).code == 200
    assert world.get("/simple/pcx-alpha/", {"Authorization": "Bearer " + READ}).code == 200
    access = [line for line in logged if "pcx-alpha" in line and " 200 " in line]
    assert any("user=laptop-7 token=ci" in line for line in access), access
    assert not any(READ in line or "Basic " in line for line in logged)


@pytest.mark.parametrize(
    "header",
    [
        basic(b"ci", OTHER.encode()),  # wrong
        basic(b"ci", b""),  # empty password
        basic(b"\xff\xfe", READ.encode()),  # a user name that is not UTF-8
        "Basic !!!not-base64",
        "Basic " + base64.b64encode(b"no colon").decode(),
        "Bearer",
        "Bearer a b",
        "Digest x",
        "Basic",
        basic(b"ci", b"\xff\xfe"),  # a password that is not UTF-8
        "Basic " + "A" * 10000,  # long garbage
    ],
)
def test_bad_credentials_get_401_never_500(world, header):
    reply = world.get("/simple/pcx-alpha/", {"Authorization": header})
    assert reply.code == 401, reply.body


def test_credential_parsing():
    assert credential(basic(b"ci", b"tok").encode()) == ("ci", b"tok")
    assert credential(basic(b"", b"tok").encode()) == ("-", b"tok")
    assert credential(b"bearer tok") == ("-", b"tok")
    assert credential(basic(b"a b\x01", b"t").encode()) == ("a_b_", b"t")
    assert credential(basic(b"ci", b"").encode()) is None


def test_revoked_token_stops_working_within_5s_by_mtime(world, tokens_file, capsys):
    headers = {"Authorization": basic(b"ci", READ.encode())}
    assert world.get("/simple/pcx-alpha/", headers).code == 200
    revoke(tokens_file, "ci", open(os.devnull, "w"))
    world.advance(5)
    assert world.get("/simple/pcx-alpha/", headers).code == 401
    assert world.get("/simple/pcx-alpha/", {"Authorization": basic(b"x", ADMIN.encode())}).code == 200


def test_sighup_rereads_the_tokens_file(world, tokens_file):
    headers = {"Authorization": basic(b"ci", READ.encode())}
    assert world.get("/simple/pcx-alpha/", headers).code == 200
    stat = os.stat(tokens_file)
    tokens_file.write_bytes(render(()).ljust(stat.st_size))  # same size, inode and mtime: no poll sees it
    os.utime(tokens_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    world.advance(3)
    assert world.get("/simple/pcx-alpha/", headers).code == 200  # remembered: the poll saw no change
    service = world.proxy.cache_service
    queued: list = []
    service._reactor = type("Reactor", (), {"callFromThread": staticmethod(lambda f, *a: queued.append(f))})()
    service.startService()  # installs the SIGHUP handler (the tokens file is a reloader)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
    finally:
        service.stopService()
        world.flush()
    assert queued == [service.reload]
    queued[0]()
    assert world.get("/simple/pcx-alpha/", headers).code == 401


def test_ten_failures_in_a_minute_earn_a_minute_of_429_logged_once(world, logged):
    wrong = {"Authorization": basic(b"ci", OTHER.encode())}
    for _ in range(10):
        assert world.get("/simple/pcx-alpha/", wrong).code == 401
    reply = world.get("/simple/pcx-alpha/", wrong)
    assert reply.code == 429 and reply.body.count(b"\n") == 1 and reply.header("Retry-After") == "60"
    assert world.get("/simple/pcx-alpha/").code == 429  # no token at all, from the blocked address
    assert world.get("/health").code == 200
    # a valid token is let in all the same: behind a load balancer every client shares one address,
    # and one client's stale token must not lock the others out
    good = {"Authorization": basic(b"ci", READ.encode())}
    assert world.get("/simple/pcx-alpha/", good).code == 200
    assert world.get("/metrics", {"Authorization": "Bearer " + ADMIN}).code == 200
    assert len([line for line in logged if "failed token attempts" in line]) == 1
    world.advance(61)
    assert world.get("/simple/pcx-alpha/", wrong).code == 401  # the minute is over
    text = world.get("/metrics", good).body.decode()
    assert "pypicached_auth_blocked_total 1.0" in text
    assert "pypicached_auth_failures_total 11.0" in text


def test_failures_spread_over_more_than_a_minute_are_not_blocked(world):
    wrong = {"Authorization": basic(b"ci", OTHER.encode())}
    for _ in range(12):
        assert world.get("/simple/pcx-alpha/", wrong).code == 401
        world.advance(7)


def test_open_networks_admit_loopback_without_a_token(make_world, tokens_file):
    world = make_world(tokens_file=tokens_file, open_networks=("127.0.0.0/8",))
    assert world.get("/simple/pcx-alpha/").code == 200
    assert world.get("/stats").code == 200
    # the admin endpoints keep their own rule: a local client, as before
    assert world.get("/admin/purge/pcx-alpha", method="POST").code == 200
    other = make_world(tokens_file=tokens_file, open_networks=("10.0.0.0/8",))
    assert other.get("/simple/pcx-alpha/").code == 401


def test_admin_endpoints_take_an_admin_token_and_admin_token_still_works(make_world, tokens_file):
    legacy = "L" * 20
    world = make_world(tokens_file=tokens_file, admin_token=legacy)
    read = world.get("/admin/purge/pcx-alpha", {"Authorization": basic(b"ci", READ.encode())}, method="POST")
    assert read.code == 401  # admin_token set: the read token is not enough
    assert world.get("/admin/purge/pcx-alpha", {"Authorization": "Bearer " + ADMIN}, method="POST").code == 200
    assert world.get("/admin/purge/pcx-alpha", {"Authorization": "Bearer " + legacy}, method="POST").code == 200


def test_per_token_counts_in_stats_and_metrics_and_no_token_shown(world, logged):
    good = {"Authorization": basic(b"ci", READ.encode())}
    page = world.get("/simple/pcx-alpha/", good)
    world.get("/simple/pcx-alpha/", good)
    stats = world.get("/stats", {"Authorization": "Bearer " + ADMIN})
    access = __import__("json").loads(stats.body)["access"]
    assert access["tokens"] == {"ci": "read", "boss": "admin"}
    assert access["use_since_start"]["ci"]["requests"] == 2
    assert access["use_since_start"]["ci"]["bytes"] == 2 * len(page.body)
    metrics = world.get("/metrics", good).body.decode()
    assert 'pypicached_token_requests_total{token="ci"} 2.0' in metrics
    assert f'pypicached_token_bytes_total{{token="ci"}} {2.0 * len(page.body)}' in metrics
    for body in (stats.body, metrics.encode(), world.get("/", good).body):
        assert READ.encode() not in body and ADMIN.encode() not in body
    assert not any(READ in line or ADMIN in line or "Authorization" in line for line in logged)


def test_without_a_tokens_file_nothing_changes(make_world):
    world = make_world()
    assert world.get("/simple/pcx-alpha/").code == 200
    assert "access" not in __import__("json").loads(world.get("/stats").body)


def test_admin_command_adds_a_token_that_works(world, tokens_file, capsys):
    import io

    out = io.StringIO()
    add(tokens_file, "laptop", "read", out)
    token = out.getvalue().strip()
    assert token.startswith("ppc_") and len(token) >= 36
    assert token not in tokens_file.read_text()
    world.advance(2)
    assert world.get("/simple/pcx-alpha/", {"Authorization": basic(b"me", token.encode())}).code == 200
