"""
`make deb-test` (this Debian 12 machine) and `make deb-test-trixie` (a Debian 13 chroot):
the operator's path, checked on the release itself. Run as root.

From the signed apt repository `make apt-repo` built: add it as a source with `Signed-By`
(after checking that apt refuses it under a key that did not sign it), `apt install
pypicached`, and run the package's own tests against what was installed, on the release's
Python and libraries. Then start the daemon exactly as the unit's ExecStart does (as the
pypicached user, with the packaged config) and have pip install a package through it from a
static index on 127.0.0.1; the same for instance 1 of the node template unit
(pypicached@.service, its own config and cache), and the example haproxy.cfg checks with
haproxy. Publish a newer version in the repository and upgrade to it: the
cache and a local edit of the config survive, and the new version starts. Purge: the cache
goes.

    python3 tests/deb_check.py --repo build/apt [--root CHROOT] [--lintian]

`--root` runs every step inside that chroot (tests/deb_chroot.sh prepares it) with the host's
loopback; `--lintian` also runs that release's lintian on the package.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import http.server
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from tests.wheels import build_wheel  # noqa: E402

UNIT = "/usr/lib/systemd/system/pypicached.service"
TEMPLATE = "/usr/lib/systemd/system/pypicached@.service"
NODE_CONFIG = "/etc/pypicached/1.toml"
EXAMPLES = "/usr/share/doc/pypicached/examples"
CACHE = "/var/cache/pypicached"
CONFIG = "/etc/pypicached/pypicached.toml"
KEYRING = "/etc/apt/keyrings/pypicached.gpg"
SOURCES = "/etc/apt/sources.list.d/pypicached.sources"
REPO = "/var/tmp/pypicached-apt"  # the repository's copy that the target's apt reads
SCRATCH = "/var/tmp/pypicached-deb-check"  # the tests, pip's venv and its home
UPGRADE_SUFFIX = "+upgradetest"
COMPLAINTS = ("W:", "E:", "Warning:", "Error:")  # how apt starts a warning or an error (Debian 12, 13)


def _show(argv: list[str]) -> None:
    print("+", shlex.join(argv), flush=True)


class Target:
    """This machine (root ``/``) or a chroot: paths and commands inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.chrooted = self.root != Path("/")

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def argv(self, *argv: str) -> list[str]:
        return ["chroot", str(self.root), *argv] if self.chrooted else list(argv)

    def run(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        _show(list(argv))
        return subprocess.run(self.argv(*argv), capture_output=True, text=True, env=env)

    def sh(self, *argv: str, env: dict[str, str] | None = None) -> str:
        done = self.run(*argv, env=env)
        if done.returncode:
            raise SystemExit(f"failed ({done.returncode}): {shlex.join(argv)}\n{done.stdout}{done.stderr}")
        return done.stdout

    def apt(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The operator's `apt`, answering yes, waiting for a lock another apt holds."""
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        return self.run("apt", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *args, env=env)

    def apt_ok(self, *args: str) -> str:
        done = self.apt(*args)
        if done.returncode:
            raise SystemExit(f"apt {' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done.stdout + done.stderr

    def update(self) -> subprocess.CompletedProcess[str]:
        """`apt update`; on this machine for the pypicached source alone, keeping every other list."""
        if self.chrooted:
            return self.apt("update")
        return self.apt(
            "update",
            "-o",
            f"Dir::Etc::SourceList={SOURCES}",
            "-o",
            "Dir::Etc::SourceParts=-",
            "-o",
            "APT::Get::List-Cleanup=0",
        )

    def upgrade(self) -> str:
        """`apt upgrade` in the throwaway chroot; on this machine, pypicached alone."""
        if self.chrooted:
            return self.apt_ok("upgrade")
        return self.apt_ok("install", "--only-upgrade", "pypicached")

    def installed_version(self) -> str:
        return self.sh("dpkg-query", "--show", "--showformat=${Version}", "pypicached")


def add_repository(target: Target, repo: Path) -> None:
    """The repository as a source, trusted through its own key only (`Signed-By`)."""
    shutil.copytree(repo, target.path(REPO))
    target.path(KEYRING).parent.mkdir(parents=True, exist_ok=True)
    sources = target.path(SOURCES)
    entry = f"Types: deb\nURIs: file://{REPO}\nSuites: stable\nComponents: main\nSigned-By: {{keyring}}\n"
    # under a key that did not sign it (Debian's own), apt must refuse the repository
    sources.write_text(entry.format(keyring="/usr/share/keyrings/debian-archive-keyring.gpg"))
    refused = target.update()
    assert refused.returncode != 0 and REPO in refused.stderr, refused.stdout + refused.stderr
    print(*(line for line in refused.stderr.splitlines() if line.startswith(COMPLAINTS)), sep="\n")
    print("apt refuses the repository under another key: OK", flush=True)
    shutil.copyfile(repo / "pypicached-archive-keyring.gpg", target.path(KEYRING))
    os.chmod(target.path(KEYRING), 0o644)
    sources.write_text(entry.format(keyring=KEYRING))
    updated = target.update()
    complaints = [
        line for line in (updated.stdout + updated.stderr).splitlines() if line.startswith(COMPLAINTS) and REPO in line
    ]
    assert updated.returncode == 0 and not complaints, updated.stdout + updated.stderr


def remove_repository(target: Target) -> None:
    """What add_repository left on this machine (a chroot is thrown away whole)."""
    for inside in (SOURCES, KEYRING):
        target.path(inside).unlink(missing_ok=True)
    shutil.rmtree(target.path(REPO), ignore_errors=True)
    mangled = REPO.replace("/", "_")
    for stale in target.path("/var/lib/apt/lists").glob(f"*{mangled}_*"):
        stale.unlink()


def install(target: Target, repo: Path) -> str:
    if target.run("dpkg-query", "--show", "pypicached").returncode == 0:
        target.apt_ok("purge", "pypicached")  # left by an earlier run that failed
    target.apt_ok("install", "pypicached")  # the operator's command
    version = target.installed_version()
    policy = target.sh("apt-cache", "policy", "pypicached")
    assert f"file:{REPO} stable/main" in policy, policy
    published = sorted(repo.glob("pool/main/p/pypicached/pypicached_*_all.deb"))
    assert published and published[-1].name == f"pypicached_{version}_all.deb", (version, published)
    assert target.sh("getent", "passwd", "pypicached"), "no pypicached user"
    assert target.path(CONFIG).is_file()
    assert target.path("/usr/lib/python3/dist-packages/twisted/plugins/pypicached_plugin.py").is_file()
    # every unit shipped verifies, now that the release's twistd3 is installed beside it
    verify = target.run(
        "systemd-analyze",
        "verify",
        UNIT,
        UNIT.replace(".service", ".socket"),
        TEMPLATE.replace("@.service", "@1.service"),
    )
    assert verify.returncode == 0 and not (verify.stdout + verify.stderr).strip(), verify.stdout + verify.stderr
    return version


def package_tests(target: Target) -> None:
    """
    The package's own tests against the installed package, on the release's Python and its
    python3-twisted, -treq, ... (those the Debian build runs; debian/rules names the ones
    that need tools from elsewhere).
    """
    target.apt_ok("install", "python3-pytest", "python3-pytest-twisted")
    ignored = re.findall(r"--ignore=\{build_dir\}/tests/(\S+)", (PROJECT / "debian" / "rules").read_text())
    assert ignored, "debian/rules names no ignored tests"
    copy = target.path(SCRATCH) / "suite" / "tests"
    shutil.copytree(PROJECT / "tests", copy, ignore=shutil.ignore_patterns("__pycache__", *ignored))
    suite = f"{SCRATCH}/suite"
    done = target.run("env", f"--chdir={suite}", "python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests")
    print(done.stdout[-2000:], done.stderr[-2000:], flush=True)
    assert done.returncode == 0 and " passed" in done.stdout, "the package's tests failed on the installed package"
    shutil.rmtree(copy.parent)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, process: subprocess.Popen[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"daemon exited with {process.returncode}:\n{process.communicate()[0]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("daemon did not start listening")


@contextlib.contextmanager
def daemon(
    target: Target,
    upstream: str,
    port: int,
    log: list[str],
    unit_path: str = UNIT,
    instance: str = "",
    cache: str = CACHE,
    extra: tuple[str, ...] = (),
) -> Iterator[None]:
    """
    The unit's ExecStart (``%i`` being ``instance``), as its User= in its WorkingDirectory=,
    plus the two flags that point it at this test.
    """
    unit = target.path(unit_path).read_text().replace("%i", instance).splitlines()
    exec_start = next(line.split("=", 1)[1] for line in unit if line.startswith("ExecStart="))
    user = next(line.split("=", 1)[1] for line in unit if line.startswith("User="))
    argv = [
        "env",
        f"--chdir={cache}",
        "runuser",
        "-u",
        user,
        "--",
        *shlex.split(exec_start),
        "--upstream",
        upstream,
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        *extra,
    ]
    _show(argv)
    process = subprocess.Popen(target.argv(*argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(port, process)
        yield
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
        print(output, flush=True)
        log.append(output)


def admin_stats(target: Target, port: int) -> dict:
    return json.loads(target.sh("pypicached-admin", "--url", f"http://127.0.0.1:{port}", "stats", "--json"))


def pip_env(home: str) -> dict[str, str]:
    """No pip settings of this machine's: no PIP_* or UV_* variables, no config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, HOME=home, PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def serve_and_upgrade(target: Target, repo: Path, scratch: Path) -> None:
    """The daemon as its unit runs it, pip through it; then an upgrade from the repository."""
    served = scratch / "index"
    served.mkdir()
    filename = static_index(served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    upstream = f"http://127.0.0.1:{server.server_address[1]}/simple/"
    user = "pypicached"
    try:
        port, log = free_port(), []
        target.apt_ok("install", "python3-venv")
        with daemon(target, upstream, port, log):
            venv = f"{SCRATCH}/venv"
            target.sh("python3", "-m", "venv", venv)
            target.sh(
                f"{venv}/bin/pip",
                "install",
                "--isolated",
                "--no-cache-dir",
                "--index-url",
                f"http://127.0.0.1:{port}/simple/",
                "deb-check",
                env=pip_env(SCRATCH),
            )
            assert (
                target.sh(f"{venv}/bin/python", "-c", "import deb_check; print(deb_check.__version__)").strip() == "1.0"
            )
            stored = list(target.path(f"{CACHE}/files").rglob(filename))
            assert stored and stored[0].read_bytes() == (served / "files" / filename).read_bytes(), stored
            assert stored[0].stat().st_uid == int(target.sh("id", "-u", user).strip())
            # the admin command, as installed, asks the running daemon
            figures = admin_stats(target, port)
            assert figures["running"] and figures["cache"]["files"] == 1 and figures["all_time"]["misses"] >= 2, figures
            assert "pypicached-admin" in target.sh("man", "-P", "cat", "pypicached-admin")
        assert '"GET /simple/deb-check/" 200' in log[0] and "MISS" in log[0], log[0]
        assert "<6>[pypicached.access]" in log[0]  # the journal format, no timestamps
        serve_node(target, upstream, filename, served)
        serve_with_tokens(target, upstream)

        # `apt upgrade` takes a newer version from the repository; the cache and an edited config stay
        with target.path(CONFIG).open("a") as config:
            config.write("# edited on this machine\n")
        newer = publish_newer(repo, target.path(REPO), scratch)
        assert target.update().returncode == 0
        target.upgrade()
        assert target.installed_version() == newer, target.installed_version()
        assert target.path(CONFIG).read_text().endswith("# edited on this machine\n")
        assert list(target.path(f"{CACHE}/files").rglob(filename)), "the upgrade lost the cache"
        port, log = free_port(), []
        with daemon(target, upstream, port, log):
            assert admin_stats(target, port)["cache"]["files"] == 1
        print(f"apt upgrade to {newer}: OK", flush=True)
    finally:
        server.shutdown()


def serve_node(target: Target, upstream: str, filename: str, served: Path) -> None:
    """A node of a cluster: the template unit's instance 1, with its own config and cache, pip through it."""
    target.path(NODE_CONFIG).write_text('listen = ["tcp:3142:interface=127.0.0.1"]\n')
    # what CacheDirectory=pypicached/%i does before the unit starts
    target.sh("install", "-d", "-o", "pypicached", "-g", "pypicached", "-m", "0750", f"{CACHE}/1")
    port, log = free_port(), []
    try:
        with daemon(target, upstream, port, log, TEMPLATE, "1", f"{CACHE}/1"):
            target.sh(
                f"{SCRATCH}/venv/bin/pip",
                "download",
                "--isolated",
                "--no-cache-dir",
                "--no-deps",
                "-d",
                f"{SCRATCH}/node-1",
                "--index-url",
                f"http://127.0.0.1:{port}/simple/",
                "deb-check",
                env=pip_env(SCRATCH),
            )
            stored = list(target.path(f"{CACHE}/1/files").rglob(filename))
            assert stored and stored[0].read_bytes() == (served / "files" / filename).read_bytes(), stored
        assert '"GET /simple/deb-check/" 200' in log[0] and "MISS" in log[0], log[0]
    finally:
        target.path(NODE_CONFIG).unlink(missing_ok=True)
    print("node 1 of the template unit: OK", flush=True)


def check_examples(target: Target) -> None:
    """The load balancer's example configuration, as shipped, is one HAProxy accepts."""
    target.apt_ok("install", "haproxy")
    target.sh("haproxy", "-c", "-f", f"{EXAMPLES}/haproxy.cfg")
    assert "vrrp_instance" in target.path(f"{EXAMPLES}/keepalived.conf").read_text()
    print("example haproxy.cfg: OK", flush=True)


def publish_newer(repo: Path, published: Path, scratch: Path) -> str:
    """The built package again, as version <version>+upgradetest, published beside it (deploy/apt-repo.sh, same key)."""
    (original,) = repo.glob("pool/main/p/pypicached/pypicached_*_all.deb")
    unpacked = scratch / "repack"
    subprocess.run(["dpkg-deb", "--raw-extract", str(original), str(unpacked)], check=True)
    control = unpacked / "DEBIAN" / "control"
    version = re.search(r"^Version: (\S+)$", control.read_text(), re.M).group(1) + UPGRADE_SUFFIX
    control.write_text(re.sub(r"^Version: \S+$", f"Version: {version}", control.read_text(), flags=re.M))
    newer = scratch / f"pypicached_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(unpacked), str(newer)], check=True, stdout=subprocess.DEVNULL
    )
    subprocess.run([str(PROJECT / "deploy" / "apt-repo.sh"), str(published), str(original), str(newer)], check=True)
    return version


def lintian(target: Target, version: str) -> None:
    """This release's lintian on the package, as strict as `make deb` is on the build machine."""
    target.apt_ok("install", "lintian")
    print(target.sh("lintian", "--version").strip(), flush=True)
    deb = f"{REPO}/pool/main/p/pypicached/pypicached_{version}_all.deb"
    done = target.run("lintian", "--fail-on", "error,warning", "--pedantic", deb)
    print(done.stdout, done.stderr, flush=True)
    assert done.returncode == 0, "lintian found errors or warnings"


def status_of(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """A GET's status, headers and body, errors included (no proxy of this machine's in between)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def serve_with_tokens(target: Target, upstream: str) -> None:
    """A token-protected start: a tokens file made by the installed admin command; 401 without the token, 200 with."""
    tokens = "/etc/pypicached/tokens"
    token = target.sh("pypicached-admin", "--tokens-file", tokens, "token", "add", "deb-check").strip()
    assert token.startswith("ppc_") and len(token) >= 36, "token add printed no token"
    assert token not in target.path(tokens).read_text()
    port, log = free_port(), []
    try:
        with daemon(target, upstream, port, log, extra=("--tokens-file", tokens)):
            base = f"http://127.0.0.1:{port}"
            code, headers, body = status_of(base + "/simple/deb-check/", {})
            assert code == 401 and headers.get("WWW-Authenticate") == 'Basic realm="pypicached"', (code, headers)
            assert body.count(b"\n") == 1, body
            basic = base64.b64encode(f"deb-ci:{token}".encode()).decode()
            code, _, body = status_of(base + "/simple/deb-check/", {"Authorization": f"Basic {basic}"})
            assert code == 200 and b"deb_check" in body, (code, body[:200])
            assert status_of(base + "/health", {})[0] == 200
            assert "deb-check" in target.sh("pypicached-admin", "--tokens-file", tokens, "token", "list")
        assert '"GET /simple/deb-check/" 401' in log[0] and "token=deb-check" in log[0], log[0]
        assert token not in log[0], "the token was logged"
    finally:
        target.path(tokens).unlink(missing_ok=True)
    print("token-protected start: OK", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, required=True, help="the apt repository make apt-repo built")
    parser.add_argument("--root", type=Path, default=Path("/"), help="a chroot to do it all in")
    parser.add_argument("--lintian", action="store_true", help="also run the release's lintian on the package")
    args = parser.parse_args()
    target = Target(args.root)
    release = target.path("/etc/os-release").read_text()
    print("on:", re.search(r'^PRETTY_NAME="(.*)"$', release, re.M).group(1), flush=True)
    target.path(SCRATCH).mkdir(parents=True, exist_ok=True)
    try:
        add_repository(target, args.repo.resolve())
        version = install(target, args.repo.resolve())
        print(f"apt install pypicached {version}: OK", flush=True)
        package_tests(target)
        check_examples(target)
        with tempfile.TemporaryDirectory() as scratch:
            os.chmod(scratch, 0o755)
            serve_and_upgrade(target, args.repo.resolve(), Path(scratch))
        target.apt_ok("purge", "pypicached")
        assert not target.path(CACHE).exists(), "purge left the cache behind"
        assert not target.path(CONFIG).exists(), "purge left the config behind"
        if args.lintian:
            lintian(target, version)
    finally:
        shutil.rmtree(target.path(SCRATCH), ignore_errors=True)
        if not target.chrooted:
            remove_repository(target)
    print("deb-test: OK", flush=True)


if __name__ == "__main__":
    main()
