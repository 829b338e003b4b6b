"""
`make deb-test`: install the built package with apt, start the daemon exactly as
the unit's ExecStart does (as the pypicached user, with the packaged config), run
pip through it against a static index on 127.0.0.1, check the cache landed in
/var/cache/pypicached; the same for instance 1 of the node template unit
(pypicached@.service, cache in /var/cache/pypicached/1); check the example haproxy.cfg
with haproxy; then purge. Run as root on a Debian machine.

    python3 tests/deb_check.py DEB PIP_PYTHON
"""

from __future__ import annotations

import functools
import json
import http.server
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.wheels import build_wheel  # noqa: E402

UNIT = Path("/lib/systemd/system/pypicached.service")
TEMPLATE = Path("/lib/systemd/system/pypicached@.service")
TEMPLATE_CONFIG = Path("/etc/pypicached/1.toml")
CACHE = Path("/var/cache/pypicached")


def sh(*argv: str) -> str:
    print("+", " ".join(argv), flush=True)
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def static_index(root: Path) -> str:
    """A PEP 503 directory index with relative links, as a plain web server shows it."""
    dist = build_wheel("deb-check", "1.0")
    (root / "simple" / "deb-check").mkdir(parents=True)
    (root / "files").mkdir()
    (root / "files" / dist.filename).write_bytes(dist.data)
    (root / "simple" / "deb-check" / "index.html").write_text(
        f'<a href="../../files/{dist.filename}#sha256={dist.sha256}">{dist.filename}</a>\n'
    )
    return dist.filename


def wait_for(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"daemon exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("daemon did not start listening")


def serve_as_unit(
    unit: Path, instance: str, cache: Path, root: Path, filename: str, upstream_port: int, pip_python: str
) -> None:
    """
    Run the daemon exactly as ``unit``'s ExecStart does (``%i`` being ``instance``), as its
    user, pip through it, and check the file landed in ``cache`` as that user's.
    """
    text = unit.read_text().replace("%i", instance)
    exec_start = next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("ExecStart="))
    user = next(line.split("=", 1)[1] for line in text.splitlines() if line.startswith("User="))
    proxy_port = free_port()
    # exactly the unit's command line, plus the two flags that point it at this test
    argv = ["runuser", "-u", user, "--", *shlex.split(exec_start),
            "--upstream", f"http://127.0.0.1:{upstream_port}/simple/",
            "--listen", f"tcp:{proxy_port}:interface=127.0.0.1"]
    print("+", " ".join(argv), flush=True)
    daemon = subprocess.Popen(argv, cwd=str(cache), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(proxy_port, daemon)
        out = root / f"out{instance}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
        env.update(PIP_CONFIG_FILE=os.devnull, HOME=str(root))
        subprocess.run(
            [pip_python, "-m", "pip", "download", "--isolated", "--no-cache-dir", "--no-deps",
             "-d", str(out), "--index-url", f"http://127.0.0.1:{proxy_port}/simple/", "deb-check"],
            check=True, env=env,
        )
        assert (out / filename).is_file()
        stored = list((cache / "files").rglob(filename))
        assert stored and stored[0].read_bytes() == (root / "files" / filename).read_bytes(), stored
        assert stored[0].stat().st_uid == int(sh("id", "-u", user).strip())
        if not instance:
            # the admin command, as installed, asks the running daemon
            stats = sh("pypicached-admin", "--url", f"http://127.0.0.1:{proxy_port}", "stats", "--json")
            figures = json.loads(stats)
            assert figures["running"] and figures["cache"]["files"] == 1 and figures["all_time"]["misses"] >= 2, stats
            assert "pypicached-admin" in sh("man", "-P", "cat", "pypicached-admin")
    finally:
        daemon.terminate()
        output = daemon.communicate(timeout=30)[0]
        print(output)
    assert '"GET /simple/deb-check/" 200' in output and "MISS" in output
    assert "<6>[pypicached.access]" in output  # the journal format, no timestamps


def main(deb: str, pip_python: str) -> None:
    sh("apt-get", "install", "-y", "-q", deb)
    assert sh("getent", "passwd", "pypicached"), "no pypicached user"
    assert Path("/etc/pypicached/pypicached.toml").is_file()
    assert Path("/usr/lib/python3/dist-packages/twisted/plugins/pypicached_plugin.py").is_file()
    # every unit shipped verifies, now that Debian's twistd3 is installed beside it
    units = [str(UNIT), str(UNIT.with_suffix(".socket")), str(TEMPLATE.with_name("pypicached@1.service"))]
    verify = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True)
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), verify.stdout + verify.stderr

    # a node of a cluster: the template unit's instance 1, with its own config and cache
    TEMPLATE_CONFIG.write_text('listen = ["tcp:3142:interface=127.0.0.1"]\n')
    # what CacheDirectory=pypicached/%i does before the unit starts
    sh("install", "-d", "-o", "pypicached", "-g", "pypicached", "-m", "0750", str(CACHE / "1"))
    examples = Path("/usr/share/doc/pypicached/examples")
    assert sh("haproxy", "-c", "-f", str(examples / "haproxy.cfg")), "the example haproxy.cfg does not check"
    assert "vrrp_instance" in (examples / "keepalived.conf").read_text()

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        os.chmod(root, 0o755)
        filename = static_index(root)
        upstream_port = free_port()
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", upstream_port), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            serve_as_unit(UNIT, "", CACHE, root, filename, upstream_port, pip_python)
            serve_as_unit(TEMPLATE, "1", CACHE / "1", root, filename, upstream_port, pip_python)
        finally:
            server.shutdown()
    TEMPLATE_CONFIG.unlink()
    sh("apt-get", "purge", "-y", "-q", "pypicached")
    assert not CACHE.exists(), "purge left the cache behind"
    print("deb-test: OK")


if __name__ == "__main__":
    main(*sys.argv[1:])
