"""The real ``twistd pypicached`` command: plugin discovery, flags, config file, start-up errors."""

from __future__ import annotations

import json
import re
import signal

import pytest
from pytest_twisted import ensureDeferred
from twisted.internet import reactor

from .daemon import Daemon, twistd_args
from .installers import clean_env, run_process
from .proxy_rig import RunningProxy


@ensureDeferred
async def test_twistd_runs_the_plugin_with_config_and_flags(fake_upstream_json, tmp_path):
    config = tmp_path / "pypicached.toml"
    config.write_text(
        f'upstream = "{fake_upstream_json.simple_url}"\n'
        f'cache_dir = "{tmp_path / "from-config"}"\n'
        "index_ttl = 30\n"
        'listen = ["tcp:1:interface=127.0.0.1"]\n'
    )
    cache = tmp_path / "from-flag"
    daemon = Daemon()
    argv = twistd_args("--config", str(config), "--listen", "tcp:0:interface=127.0.0.1", "--cache-dir", str(cache))
    process = reactor.spawnProcess(daemon, argv[0], argv, env=clean_env(tmp_path), path=str(tmp_path))
    try:
        port = await daemon.port
        client = RunningProxy(None, None, f"http://127.0.0.1:{port}")  # type: ignore[arg-type]
        response = await client.get("/simple/pcx-alpha/")
        assert response.code == 200
        assert b"pcx_alpha-2.0-py3-none-any.whl" in await response.content()
        assert response.header("X-Pypi-Cache") == "MISS"
    finally:
        process.signalProcess(signal.SIGTERM)
        code = await daemon.ended
    # a clean stop: exit 0, or (Twisted >= 24) the SIGTERM re-raised after shutting down
    assert code in ((0, None), (None, signal.SIGTERM)), daemon.output.decode()
    assert "Server Shut Down." in daemon.output.decode()
    assert (cache / "pages").is_dir()  # the flag won over the file
    assert not (tmp_path / "from-config").exists()
    log = daemon.output.decode()
    assert "index pages fresh for 30s" in log  # the file's other settings applied
    assert re.search(r'127\.0\.0\.1 "GET /simple/pcx-alpha/" 200 \d+ MISS [\d.]+s upstream=[\d.]+s', log)


@pytest.mark.parametrize(
    "args, toml, message",
    [
        (["--listen", "nonsense:1"], None, "listen: cannot use endpoint 'nonsense:1'"),
        (["--index-ttl", "soon"], None, "index_ttl (command line): expected a number of seconds"),
        ([], 'index_ttl = "soon"', "index_ttl (CONFIG): expected a number of seconds"),
        ([], "colour = 1", "unknown setting 'colour'"),
        ([], "this is not toml", "is not valid TOML"),
        (["--cache-dir", "/proc/no/such"], None, "cache_dir: '/proc/no/such' is not a writable directory"),
        (["--upstream", "ftp://x/"], None, "upstream (command line)"),
        (["--listen", "ssl:443:privateKey=/no/such.key"], None, "cannot read key /no/such.key"),
        ([], 'tls_cert = "/x.pem"', "tls_cert and tls_key: give both or neither"),
    ],
)
@ensureDeferred
async def test_bad_settings_stop_startup_with_one_line(tmp_path, args, toml, message):
    if toml is not None:
        config = tmp_path / "bad.toml"
        config.write_text(toml + "\n")
        args = ["--config", str(config), *args]
        message = message.replace("CONFIG", str(config))
    result = await run_process(twistd_args(*args), env=clean_env(tmp_path), cwd=str(tmp_path), timeout=60)
    assert result.code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("pypicached: ") and message in lines[0]


@ensureDeferred
async def test_help_explains_every_flag(tmp_path):
    result = await run_process(twistd_args("--help"), env=clean_env(tmp_path), cwd=str(tmp_path), timeout=60)
    for flag in ("--config", "--listen", "--upstream", "--cache-dir", "--index-ttl"):
        assert flag in result.output


@ensureDeferred
async def test_json_access_log_and_the_effective_configuration_with_secrets_masked(fake_upstream_json, tmp_path):
    token = "very-secret-token-0123456789"
    daemon = Daemon()
    argv = twistd_args(
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--upstream",
        fake_upstream_json.simple_url,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--log-format",
        "json",
        "--admin-token",
        token,
    )
    process = reactor.spawnProcess(daemon, argv[0], argv, env=clean_env(tmp_path), path=str(tmp_path))
    try:
        port = await daemon.port
        client = RunningProxy(None, None, f"http://127.0.0.1:{port}")  # type: ignore[arg-type]
        response = await client.get("/simple/pcx-alpha/")
        body = await response.content()
        await client.get("/health")  # a second request: the first one's log line is surely written
    finally:
        process.signalProcess(signal.SIGTERM)
        await daemon.ended
    log = daemon.output.decode()
    assert token not in log
    config = json.loads(log.split("Effective configuration: ", 1)[1].splitlines()[0])
    assert config["admin_token"] == "***" and config["log_format"] == "json"
    assert config["upstream"] == fake_upstream_json.simple_url and config["index_ttl"] == 600
    access = [json.loads(line.split("] ", 1)[1]) for line in log.splitlines() if "[pypicached.access#info]" in line]
    first = access[0]
    assert set(first) == {"client", "method", "path", "status", "bytes", "cache", "total", "upstream", "index"}
    assert first["client"] == "127.0.0.1" and first["path"] == "/simple/pcx-alpha/" and first["index"] == "pypi"
    assert first["status"] == 200 and first["bytes"] == len(body) and first["cache"] == "MISS"
    assert first["total"] >= first["upstream"] > 0
