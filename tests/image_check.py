"""
`make image-test`: the container image, run with podman as docs/image.md says, against a fake
upstream on loopback (tests/fake_upstream.py, in a reactor thread). Run as root.

It checks the image's config (user, entry point, port, volume, labels, healthcheck); that pip
installs through the container; that it runs as the fixed non-root uid; that /health answers
and the image's HEALTHCHECK passes; that `podman exec <ctr> pypicached-admin stats` works;
that SIGTERM in the middle of a download stops it in under 2 s with no entry stored; that the
cache survives a restart on the same volume (served again with no upstream request); and that a
bad mounted config makes it exit non-zero with the one-line error.

    python tests/image_check.py --image pypicached:VERSION --nofile-hard "$(ulimit -Hn)"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.threads import blockingCallFromThread  # noqa: E402

from tests.fake_upstream import FakeUpstream, start_fake_upstream, upstream_file_counts  # noqa: E402
from tests.wheels import build_wheel  # noqa: E402

PORT = 3141
UID = 999
CACHE = "/var/cache/pypicached"
BASE = f"http://127.0.0.1:{PORT}"
STOP_LIMIT = 2.0


def show(argv: list[str]) -> None:
    print("+", shlex.join(argv), flush=True)


def run(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    show(list(argv))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        raise SystemExit(f"failed ({done.returncode}): {shlex.join(argv)}\n{done.stdout}{done.stderr}")
    return done


def wait(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


class Podman:
    """`podman run` with the settings this kind of machine needs, on one cache volume."""

    def __init__(self, image: str, nofile_hard: str, volume: str) -> None:
        hard = 1048576 if nofile_hard == "unlimited" else int(nofile_hard)
        self.image = image
        self.volume = volume
        self.flags = [
            "--network=host",
            "--runtime=runc",
            "--init",
            f"--ulimit=nofile=1024:{hard}",
            "--ulimit=nproc=1024:32768",
        ]
        self.names: list[str] = []

    def start(self, name: str, *args: str) -> str:
        self.names.append(name)
        run("podman", "run", "-d", "--name", name, *self.flags, "-v", f"{self.volume}:{CACHE}", self.image, *args)
        wait(lambda: self.healthy(name), f"{name} to answer /health", 60)
        return name

    def healthy(self, name: str) -> bool:
        state = run("podman", "inspect", "--format", "{{.State.Running}}", name).stdout.strip()
        if state != "true":
            logs = run("podman", "logs", name, check=False)
            raise SystemExit(f"{name} is not running:\n{logs.stdout}{logs.stderr}")
        try:
            with urllib.request.urlopen(f"{BASE}/health", timeout=5) as answer:
                return answer.status == 200
        except OSError:
            return False

    def stop(self, name: str) -> float:
        """`podman stop` (SIGTERM, the image's stop signal): how long it took."""
        started = time.monotonic()
        run("podman", "stop", "--time", "10", name)
        return time.monotonic() - started

    def remove(self, name: str) -> str:
        logs = run("podman", "logs", name, check=False)
        run("podman", "rm", "--force", "--volumes", name, check=False)  # and its anonymous volume
        self.names.remove(name)
        return logs.stdout + logs.stderr

    def exec(self, name: str, *argv: str) -> str:
        return run("podman", "exec", name, *argv).stdout

    def cleanup(self) -> None:
        for name in list(self.names):
            self.remove(name)


def check_config(image: str) -> None:
    """What the image declares: the docker format keeps the healthcheck."""
    (inspected,) = json.loads(run("podman", "image", "inspect", image).stdout)
    config = inspected["Config"]
    assert config["User"] == f"{UID}:{UID}", config["User"]
    assert config["Entrypoint"][:5] == [
        "/usr/bin/twistd3",
        "--nodaemon",
        "--pidfile=",
        "--logger=pypicached.ops.journal.observer",
        "pypicached",
    ], config["Entrypoint"]
    assert f"{PORT}/tcp" in config["ExposedPorts"] and CACHE in config["Volumes"], config
    healthcheck = inspected.get("Healthcheck") or {}
    assert healthcheck.get("Test") == ["CMD", "/usr/local/bin/pypicached-healthcheck"], healthcheck
    labels = config["Labels"]
    version = image.rsplit(":", 1)[1]
    assert labels["org.opencontainers.image.version"] == version, labels
    assert labels["org.opencontainers.image.licenses"] == "MIT" and labels["org.opencontainers.image.source"], labels
    print(f"image config: OK, {inspected['Size'] / 1e6:.1f} MB", flush=True)


def pip_install(venv: Path, project: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    index = f"{BASE}/simple/"
    argv = [str(venv / "bin" / "pip"), "install", "--isolated", "--no-cache-dir", "--index-url", index, project]
    show(argv)
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def file_url(project: str, filename: str) -> str:
    """The file's URL as the proxy's page for ``project`` links it."""
    page_url = f"{BASE}/simple/{project}/"
    request = urllib.request.Request(page_url, headers={"Accept": "text/html"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        page = answer.read().decode()
    (href,) = [h for h in re.findall(r'href="([^"#]+)', page) if h.endswith(filename)]
    return urllib.parse.urljoin(page_url, href)


def stored(volume: Path, filename: str) -> list[Path]:
    """Whatever in the cache volume (seen from the host) is named after ``filename``, temporaries aside."""
    return [p for p in volume.rglob(f"*{filename}*") if "tmp" not in p.relative_to(volume).parts]


def stop_mid_download(podman: Podman, name: str, upstream: FakeUpstream, big: Any, volume: Path) -> None:
    """SIGTERM while a download is held half-way: stops in time, nothing of it stored."""
    path = upstream.file_path(big)
    upstream.behaviour[path] = "gate"
    gate = upstream.gate(path)
    url = file_url("image-big", big.filename)
    outcome: list[object] = []

    def fetch() -> None:
        try:
            with urllib.request.urlopen(url, timeout=60) as answer:
                outcome.append(answer.read())
        except Exception as e:  # the container goes away mid-body
            outcome.append(e)

    client = threading.Thread(target=fetch, daemon=True)
    client.start()
    blockingCallFromThread(reactor, gate.reached, 1)
    wait(lambda: any(p.is_file() for p in (volume / "tmp").rglob("*")), "the download to be under way in tmp/")
    took = podman.stop(name)
    client.join(30)
    exit_code = run("podman", "inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    logs = podman.remove(name)
    print(logs[-1500:], flush=True)
    assert took < STOP_LIMIT, f"SIGTERM took {took:.2f}s"
    assert exit_code == "143", exit_code  # twistd stops cleanly, then ends by the signal it was sent
    assert outcome and outcome[0] != big.data, "the held download completed"
    assert not stored(volume, big.filename), stored(volume, big.filename)
    upstream.behaviour.pop(path)
    print(f"SIGTERM mid-download: stopped in {took:.2f}s, exit 143: OK", flush=True)


def bad_config(podman: Podman, scratch: Path) -> None:
    """A mounted config the daemon refuses: non-zero exit, one line saying why."""
    config = scratch / "bad.toml"
    config.write_text('listen = ["tcp:3141"]\nmax_size = "lots"\n')
    config.chmod(0o644)
    name = "pypicached-image-check-bad"
    podman.names.append(name)
    argv = ["podman", "run", "--name", name, *podman.flags, "-v", f"{config}:/etc/pypicached/pypicached.toml:ro"]
    done = run(*argv, podman.image, check=False)
    output = podman.remove(name)  # the container's own output, without podman's
    lines = [line for line in output.splitlines() if line.strip()]
    assert done.returncode != 0, done
    assert len(lines) == 1 and lines[0].startswith("pypicached: ") and "max_size" in lines[0], lines
    print(f"bad config: exit {done.returncode}, {lines[0]!r}: OK", flush=True)


def port_free() -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", PORT)) != 0


def check(podman: Podman, upstream: FakeUpstream, small: Any, big: Any, scratch: Path) -> None:
    volume = Path(run("podman", "volume", "inspect", "--format", "{{.Mountpoint}}", podman.volume).stdout.strip())
    name = podman.start("pypicached-image-check-1", "--upstream", upstream.simple_url)
    tops = run("podman", "top", name, "huser", "user", "args").stdout.splitlines()[1:]
    assert tops and all(line.split()[:2] == [str(UID), "pypicached"] for line in tops), tops
    assert podman.exec(name, "id", "-u").strip() == str(UID)
    print("runs as pypicached (uid 999), never root: OK", flush=True)
    with urllib.request.urlopen(f"{BASE}/health", timeout=5) as answer:
        health = json.loads(answer.read())
    assert health["status"] == "ok" and health["cache_dir_writable"], health
    run("podman", "healthcheck", "run", name)
    print("/health and the image's HEALTHCHECK: OK", flush=True)

    venv = scratch / "venv"
    run(sys.executable, "-m", "venv", str(venv))
    pip_install(venv, "image-check")
    assert (
        run(str(venv / "bin" / "python"), "-c", "import image_check; print(image_check.__version__)").stdout == "1.0\n"
    )
    assert stored(volume, small.filename), "not stored"
    figures = json.loads(podman.exec(name, "pypicached-admin", "stats", "--json"))
    assert figures["running"] and figures["cache"]["files"] == 1, figures
    print("pip through the container, pypicached-admin stats: OK", flush=True)

    stop_mid_download(podman, name, upstream, big, volume)

    # the same volume: the held download left nothing, the pip install's file is still there
    name = podman.start("pypicached-image-check-2", "--upstream", upstream.simple_url)
    assert not stored(volume, big.filename), stored(volume, big.filename)
    assert not [p for p in (volume / "tmp").rglob("*") if p.is_file()], "temporaries left after the restart"
    before = upstream_file_counts(upstream).get(small.filename, 0)
    with urllib.request.urlopen(file_url("image-check", small.filename), timeout=10) as answer:
        assert answer.read() == small.data
    assert upstream_file_counts(upstream).get(small.filename, 0) == before, "the restart lost the cache"
    assert json.loads(podman.exec(name, "pypicached-admin", "stats", "--json"))["cache"]["files"] == 1
    print("cache survives a restart on the same volume: OK", flush=True)
    took = podman.stop(name)
    assert took < STOP_LIMIT, f"SIGTERM took {took:.2f}s"
    logs = podman.remove(name)
    assert "<6>[pypicached.access]" in logs and "HIT" in logs, logs[-1500:]  # the journal format, on stdout
    bad_config(podman, scratch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", required=True)
    parser.add_argument("--nofile-hard", required=True, help="this host's hard limit of open files (ulimit -Hn)")
    args = parser.parse_args()
    if not port_free():
        raise SystemExit(f"port {PORT} is taken on this host: the image listens there (--network host)")
    check_config(args.image)
    small = build_wheel("image-check", "1.0")
    big = build_wheel("image-big", "1.0", size_padding=4 * 1024 * 1024)
    upstream = FakeUpstream([small, big], flavour="html")
    thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)
    thread.start()
    listening = blockingCallFromThread(reactor, lambda: start_fake_upstream(upstream, reactor=reactor))
    volume = f"pypicached-image-check-{os.getpid()}"
    run("podman", "volume", "create", volume)
    podman = Podman(args.image, args.nofile_hard, volume)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            os.chmod(scratch, 0o755)
            check(podman, upstream, small, big, Path(scratch))
    finally:
        podman.cleanup()
        run("podman", "volume", "rm", "--force", volume, check=False)
        blockingCallFromThread(reactor, listening.stop)
        reactor.callFromThread(reactor.stop)
        thread.join(10)
    print("image-test: OK", flush=True)


if __name__ == "__main__":
    main()
