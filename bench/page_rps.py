"""
Requests per second for a warm page and a warm file, one daemon process, against nginx.

Issue #11's target: `wrk -c32` on a warm small project page with pip's Accept
reaches 7,000 requests/s for one daemon process (against 5,400 before the work),
with the access log still on; the figure is given as a ratio against nginx
serving the same bytes as a static file in the same run.

The fake upstream is tests/fake_upstream.py in a thread of this process: one
project with three releases (a wheel and an sdist each, PEP 691 JSON or HTML
by Accept, PEP 658 metadata); the newest wheel is padded to about 50 KB. Each
daemon (this checkout, "current", and a reference revision run from a temporary
git worktree with the same Python) gets a cache of its own; the page and the
wheel are fetched through it once (MISS) and again (HIT, checked), then
`wrk -t1 -c32 -dN` runs on the page (with pip's Accept header) and on the
wheel (the URL the page links it under). nginx then serves the page bytes and
the wheel bytes the daemon sent, as static files at the same paths.

Fair to one process: the daemon (every thread of it) and nginx (master and its
one worker) run on one core, wrk on the other (nginx and wrk started by
`taskset -c`, the daemon's threads pinned as `taskset -a -p` would, once it
listens and before it is warmed). The daemon logs every request as it does by default,
to its stdout, here a file (under systemd, the journal); nginx writes its
access log to a file too (--nginx-access-log off to drop it). nginx keeps a
connection for any number of requests, as Twisted does.

Each round runs every server on both URLs, in a rotated order, so that a
neighbour's load on this machine hits all of them alike; the table gives the
median over the rounds. Beside requests/s it gives the server's CPU time per
request (user + system, from /proc) and how busy the server's and wrk's cores
were: a server core below 95% busy means something else (wrk, the machine)
set the pace, and the CPU per request is the steadier figure (the table also
gives the requests/s it allows on a whole core: 1e6 / microseconds).

    .venv/bin/python bench/page_rps.py [--reference REV] [--only current|reference]
                                       [--duration 10] [--rounds 3] [--connections 32]
                                       [--nginx-access-log on|off] [--no-install]
                                       [--current-flag=--min-release-age=7d ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import attrs

# bench/ runs as a script: its neighbour page_memory.py and the tests package import from here.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from page_memory import (
    JSON_TYPE,
    PIP_ACCEPT,
    Code,
    Daemon,
    current_code,
    free_port,
    reference_code,
    serving,
)
from twisted.internet import reactor

from tests.fake_upstream import FakeUpstream
from tests.wheels import Dist, build_sdist, build_wheel

DEFAULT_REFERENCE = "5278d2e"
TARGET_RPS = 7000.0
#: Below this share of its core, a server was not what limited its requests/s.
BUSY_ENOUGH = 0.95
PROJECT = "bench-rps"
VERSIONS = ("1.0", "1.1", "1.2")
#: Random bytes stored uncompressed in the newest wheel: about 50 KB in all.
WHEEL_PADDING = 48 * 1024
CACHE_HEADER = "X-Pypi-Cache"
#: Debian packages the bench runs, and the command each provides.
TOOLS = {"wrk": "wrk", "nginx": "nginx"}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# Tools and cores


def ensure_tools(install: bool) -> dict[str, str]:
    """wrk and nginx, installed from Debian when missing (as the Makefile does for chromium)."""
    found = {name: _which(command) for name, command in TOOLS.items()}
    missing = [name for name, path in found.items() if path is None]
    if missing and install:
        print(f"installing {' '.join(missing)} from Debian", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        argv = ["apt-get", "install", "-y", "-q", *missing]
        if subprocess.run(argv, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL, check=True)
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        found = {name: _which(command) for name, command in TOOLS.items()}
        missing = [name for name, path in found.items() if path is None]
    if missing:
        raise SystemExit(f"page_rps: needs {' and '.join(missing)}: apt-get install -y {' '.join(missing)}")
    return {name: str(path) for name, path in found.items()}


def _which(command: str) -> str | None:
    """A command on PATH, or in sbin (nginx lives there, and a user's PATH may lack it)."""
    return shutil.which(command) or shutil.which(command, path="/usr/sbin:/sbin")


def tool_version(argv: Sequence[str]) -> str:
    """The first line a tool prints about its version (nginx writes it to stderr, wrk exits 1)."""
    done = subprocess.run(argv, capture_output=True, text=True)
    return (done.stdout + done.stderr).strip().splitlines()[0]


def pin(pid: int, cpu: int) -> None:
    """Every thread of ``pid`` onto ``cpu`` (``taskset -a -p``); threads it starts later inherit it."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), {cpu})


def on_cpu(cpu: int, argv: Sequence[str]) -> list[str]:
    """``argv`` started on ``cpu`` alone, by ``taskset`` (util-linux, on every Debian system)."""
    return ["taskset", "-c", str(cpu), *argv]


def cpu_ticks(pids: Sequence[int]) -> int:
    """User + system clock ticks of ``pids`` so far (every thread of each)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat(5)
    return total


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (nginx's worker)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rpartition(")")[2].split()[1]) == pid:
                        found.append(int(entry))
    return found


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --------------------------------------------------------------------------------------------
# The fake upstream's project


def distributions() -> tuple[list[Dist], Dist]:
    """Three releases of one project, a wheel and an sdist each; and the (padded) wheel measured."""
    dists = []
    for version in VERSIONS:
        padding = WHEEL_PADDING if version == VERSIONS[-1] else 0
        dists += [build_wheel(PROJECT, version, size_padding=padding), build_sdist(PROJECT, version)]
    return dists, dists[-2]


# --------------------------------------------------------------------------------------------
# Plain requests (warming, checking)


@attrs.frozen
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes = attrs.field(repr=False)


#: Headers every request carries (``--authorization``: a token for a daemon with a tokens file).
EXTRA_HEADERS: dict[str, str] = {}


def get(url: str, accept: str | None = None) -> Answer:
    """One GET, as wrk sends it (no Accept-Encoding), whatever its status."""
    request = urllib.request.Request(url, headers={**EXTRA_HEADERS, **({"Accept": accept} if accept else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return Answer(response.status, {k.lower(): v for k, v in response.headers.items()}, response.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


@attrs.frozen
class Warmed:
    """What one server answered once warm: the paths wrk asks for, and the bodies it sent."""

    page_path: str
    file_path: str
    page: bytes = attrs.field(repr=False)
    file: bytes = attrs.field(repr=False)


def warm(base: str, wheel: Dist) -> Warmed:
    """
    The page with pip's Accept and the wheel it links, through the daemon: once to fill
    its cache, once more to see both come from it (HIT) with the right bytes.
    """
    page_path = f"/simple/{PROJECT}/"
    page_url = base + page_path
    for attempt in ("fill", "warm"):
        page = get(page_url, PIP_ACCEPT)
        if page.status != 200 or not page.headers.get("content-type", "").startswith(JSON_TYPE):
            raise RuntimeError(
                f"{page_url} ({attempt}): {page.status} {page.headers.get('content-type')}: {page.body[:300]!r}"
            )
        links = {f["filename"]: f["url"] for f in json.loads(page.body)["files"]}
        file_url = urldefrag(urljoin(page_url, links[wheel.filename]))[0]
        file = get(file_url)
        if file.status != 200 or file.body != wheel.data:
            raise RuntimeError(f"{file_url} ({attempt}): {file.status}, {len(file.body)} bytes, not the wheel")
    for what, answer in (("page", page), ("file", file)):
        if answer.headers.get(CACHE_HEADER.lower()) != "HIT":
            raise RuntimeError(
                f"the warm {what} was not a cache hit: {CACHE_HEADER} {answer.headers.get(CACHE_HEADER.lower())}"
            )
    return Warmed(page_path, urlsplit(file_url).path, page.body, file.body)


# --------------------------------------------------------------------------------------------
# nginx


_NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    types {{ }}
    default_type application/octet-stream;
    access_log {access_log};
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/root;
{locations}
    }}
}}
"""


class Nginx:
    """nginx with one worker, serving a page and a file as static files, on one core."""

    def __init__(
        self,
        binary: str,
        directory: Path,
        files: dict[str, bytes],
        locations: str,
        cpu: int | None,
        access_log: bool,
    ) -> None:
        """``files`` by path under its root; ``locations``: nginx's location blocks for them (bench/cold.py's too)."""
        self.port = free_port()
        self.dir = directory
        root = directory / "root"
        for relative, body in files.items():
            (root / relative.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / relative.lstrip("/")).write_bytes(body)
        for path in [directory, *directory.rglob("*")]:  # for the worker, which drops root for nobody
            path.chmod(0o755 if path.is_dir() else 0o644)
        (directory / "nginx.conf").write_text(
            _NGINX_CONF.format(
                dir=directory,
                port=self.port,
                locations=locations,
                access_log=f"{directory}/access.log" if access_log else "off",
            )
        )
        argv = [binary, "-e", str(directory / "error.log"), "-p", str(directory), "-c", str(directory / "nginx.conf")]
        self.process = subprocess.Popen(  # taskset execs nginx: this is the master's pid
            argv if cpu is None else on_cpu(cpu, argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    @classmethod
    def serving(cls, binary: str, directory: Path, served: Warmed, cpu: int, access_log: bool) -> Nginx:
        """The page and the file the daemons served, at the same paths."""
        location = f"        location = {served.page_path} {{ default_type {JSON_TYPE}; try_files /page.json =404; }}"
        files = {served.file_path: served.file, "page.json": served.page}
        return cls(binary, directory, files, location, cpu, access_log)

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with status {self.process.returncode}:\n{self._errors()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not listen within {timeout:.0f} s:\n{self._errors()}") from None
                time.sleep(0.05)
            else:
                if self.pids()[1:]:
                    return
                time.sleep(0.05)

    def _errors(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "error.log").read_text(errors="replace")[-3000:]
        return "(no error log)"

    def pids(self) -> list[int]:
        return [self.process.pid, *children(self.process.pid)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # fast shutdown: the worker goes with the master
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                for pid in self.pids():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.process.wait()


# --------------------------------------------------------------------------------------------
# Servers under load


@attrs.define
class Server:
    """One server the bench loads: a daemon or nginx, where it listens and what it serves."""

    label: str
    port: int
    warmed: Warmed
    pids: Callable[[], list[int]]
    alive: Callable[[], bool]
    #: Its access log, to count the bytes logged per request (None: not logging).
    log_path: Path | None

    def url(self, kind: str) -> str:
        return f"http://127.0.0.1:{self.port}{self.warmed.page_path if kind == 'page' else self.warmed.file_path}"


@attrs.frozen
class Run:
    """One wrk run against one server and URL."""

    rps: float
    requests: int
    seconds: float
    bytes_read: int
    latency: str
    non_2xx: int
    socket_errors: int
    #: The server's CPU seconds (all its processes and threads) during the run.
    server_cpu: float
    client_cpu: float
    log_bytes: int | None

    @property
    def cpu_us(self) -> float:
        return self.server_cpu / self.requests * 1e6 if self.requests else float("nan")

    @property
    def server_busy(self) -> float:
        return self.server_cpu / self.seconds if self.seconds else float("nan")

    @property
    def client_busy(self) -> float:
        return self.client_cpu / self.seconds if self.seconds else float("nan")

    @property
    def problem(self) -> str:
        if self.non_2xx or self.socket_errors:
            return f"{self.non_2xx} non-2xx answers, {self.socket_errors} socket errors"
        return ""


_UNITS = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_wrk(output: str) -> tuple[int, float, int, float, str, int, int]:
    """wrk's summary: requests, seconds, bytes read, requests/s, mean latency, non-2xx, socket errors."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)([KMGT]?B) read", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    latency = re.search(r"Latency\s+(\S+)", output)
    if not (total and rps and latency):
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return (
        int(total[1]),
        float(total[2]) * _SECONDS[total[3]],
        int(float(total[4]) * _UNITS[total[5]]),
        float(rps[1]),
        latency[1],
        int(non_2xx[1]) if non_2xx else 0,
        sum(map(int, errors.groups())) if errors else 0,
    )


def load(wrk: str, server: Server, kind: str, *, duration: float, connections: int, cpu: int) -> Run:
    """``wrk -t1 -c<connections> -d<duration>s`` on one URL, wrk on ``cpu``; the server's CPU read around it."""
    argv = [wrk, "-t1", f"-c{connections}", f"-d{duration:g}s", "--timeout", "5s"]
    if kind == "page":
        argv += ["-H", f"Accept: {PIP_ACCEPT}"]
    for name, value in EXTRA_HEADERS.items():
        argv += ["-H", f"{name}: {value}"]
    argv.append(server.url(kind))
    log_before = server.log_path.stat().st_size if server.log_path else None
    pids = server.pids()
    ticks = cpu_ticks(pids)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        on_cpu(cpu, argv), capture_output=True, text=True, timeout=duration + 30, stdin=subprocess.DEVNULL
    )
    server_cpu = (cpu_ticks(pids) - ticks) / CLK_TCK
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child reaped meanwhile
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    if not server.alive():
        raise RuntimeError(f"{server.label} died under load")
    requests, seconds, read, rps, latency, non_2xx, errors = parse_wrk(done.stdout)
    return Run(
        rps=rps,
        requests=requests,
        seconds=seconds,
        bytes_read=read,
        latency=latency,
        non_2xx=non_2xx,
        socket_errors=errors,
        server_cpu=server_cpu,
        client_cpu=(children_after.ru_utime + children_after.ru_stime)
        - (children_before.ru_utime + children_before.ru_stime),
        log_bytes=server.log_path.stat().st_size - log_before if server.log_path and log_before is not None else None,
    )


def logger_options(code: Code, logger: str) -> tuple[str, ...]:
    """twistd's flag for the packaged unit's log observer, where this version of the code keeps it."""
    if logger == "twistd":
        return ()
    module = (
        "pypicached.ops.journal" if (code.root / "pypicached" / "ops" / "journal.py").exists() else "pypicached.journal"
    )
    return (f"--logger={module}.observer",)


def daemon_server(
    code: Code,
    python: str,
    upstream: str,
    scratch: Path,
    wheel: Dist,
    cpu: int,
    logger: str = "journal",
    options: Sequence[str] = (),
) -> tuple[Daemon, Server]:
    """
    A daemon of ``code`` (with more pypicached ``options``), a cache of its own,
    pinned to ``cpu``, its page and wheel warm.
    """
    scratch.mkdir()
    daemon = Daemon(python, code, upstream, scratch, *options, twistd=logger_options(code, logger))
    try:
        daemon.wait_ready()
        pin(daemon.pid, cpu)
        print(f"{code.label}: pypicached from {daemon.loaded_from()}, pid {daemon.pid} on CPU {cpu}", flush=True)
        warmed = warm(f"http://127.0.0.1:{daemon.port}", wheel)
    except BaseException:
        daemon.stop()
        raise
    server = Server(
        code.label,
        daemon.port,
        warmed,
        pids=lambda: [daemon.pid],
        alive=lambda: daemon.process.poll() is None,
        log_path=daemon.log_path,
    )
    return daemon, server


# --------------------------------------------------------------------------------------------
# The report


KINDS = ("page", "file")


def median_run(runs: list[Run], figure: Callable[[Run], float]) -> float:
    return statistics.median(figure(r) for r in runs)


def report(
    results: dict[tuple[str, str], list[Run]], servers: list[Server], args: argparse.Namespace, nginx: Server
) -> None:
    labels = [s.label for s in servers]
    width = max(14, *(len(label) + 2 for label in labels))
    print(
        f"\nmedian of {args.rounds} round(s) of wrk -t1 -c{args.connections} -d{args.duration:g}s; "
        f"server on CPU {args.server_cpu}, wrk on CPU {args.client_cpu} (of {os.cpu_count()})"
    )
    rows: tuple[tuple[str, Callable[[Run], float], str], ...] = (
        ("requests/s", lambda r: r.rps, "{:,.0f}"),
        ("server CPU per request (us)", lambda r: r.cpu_us, "{:.1f}"),
        ("requests/s a whole core allows", lambda r: 1e6 / r.cpu_us, "{:,.0f}"),
        ("server core busy", lambda r: r.server_busy * 100, "{:.0f}%"),
        ("wrk core busy", lambda r: r.client_busy * 100, "{:.0f}%"),
    )
    for kind in KINDS:
        print(f"\n{kind}: {servers[0].url(kind).split(str(servers[0].port), 1)[1]}")
        print(f"  {'':30}" + "".join(f"{label:>{width}}" for label in labels))
        for title, figure, fmt in rows:
            cells = [fmt.format(median_run(results[label, kind], figure)) for label in labels]
            print(f"  {title:30}" + "".join(f"{c:>{width}}" for c in cells))
        per_round = ["/".join(f"{r.rps:,.0f}" for r in results[label, kind]) for label in labels]
        print(f"  {'requests/s, each round':30}" + "".join(f"{c:>{width}}" for c in per_round))
        bytes_per = [
            f"{median_run(results[label, kind], lambda r: r.bytes_read / r.requests):,.0f}" for label in labels
        ]
        print(f"  {'bytes per response (+headers)':30}" + "".join(f"{c:>{width}}" for c in bytes_per))
        logged = []
        for label in labels:
            runs = results[label, kind]
            logged.append(
                "-"
                if runs[0].log_bytes is None
                else f"{median_run(runs, lambda r: (r.log_bytes or 0) / r.requests):.0f}"
            )
        print(f"  {'access log bytes per request':30}" + "".join(f"{c:>{width}}" for c in logged))
        rps = {label: median_run(results[label, kind], lambda r: r.rps) for label in labels}
        cpu = {label: median_run(results[label, kind], lambda r: r.cpu_us) for label in labels}
        for name, other in (("reference", "current"), ("nginx", "current"), ("nginx", "reference")):
            a = next((label for label in labels if label.startswith(other)), None)
            b = next((label for label in labels if label.startswith(name)), None)
            if a and b:
                print(f"  {other}/{name}: {rps[a] / rps[b]:.2f}x requests/s, {cpu[a] / cpu[b]:.2f}x CPU per request")
    problems = [f"{label} {kind}: {r.problem}" for (label, kind), runs in results.items() for r in runs if r.problem]
    for problem in problems:
        print(f"PROBLEM {problem}")
    print()
    for server in servers:
        if server is nginx:
            continue
        runs = results[server.label, "page"]
        page, busy = median_run(runs, lambda r: r.rps), median_run(runs, lambda r: r.server_busy)
        verdict = "met" if page >= TARGET_RPS and not problems else "NOT met"
        print(f"target (>= {TARGET_RPS:,.0f} page requests/s, one process), {server.label}: {verdict} ({page:,.0f})")
        if busy < BUSY_ENOUGH:
            print(
                f"  but its core was only {busy:.0%} busy: other work on this machine set the pace; a whole core "
                f"would allow {median_run(runs, lambda r: 1e6 / r.cpu_us):,.0f} (1e6 / CPU per request)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="git revision to compare with [%(default)s]")
    parser.add_argument("--only", choices=("current", "reference"), help="measure only one of the two daemons")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each wrk run [%(default)s]")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every server and URL [%(default)s]")
    parser.add_argument("--connections", type=int, default=32, help="wrk's -c [%(default)s]")
    parser.add_argument(
        "--current-flag",
        action="append",
        default=[],
        metavar="FLAG",
        help="a pypicached flag for this checkout's daemon only (repeat), e.g. --current-flag=--min-release-age=7d",
    )
    parser.add_argument(
        "--authorization",
        metavar="VALUE",
        help="an Authorization header for every request to every server, e.g. 'Basic ...' for a daemon "
        "given --current-flag=--tokens-file=FILE (the others ignore it)",
    )
    parser.add_argument("--server-cpu", type=int, default=0, help="the core of the daemons and nginx [%(default)s]")
    parser.add_argument("--client-cpu", type=int, default=1, help="wrk's core [%(default)s]")
    parser.add_argument("--nginx-access-log", choices=("on", "off"), default="on", help="[%(default)s]")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install wrk and nginx if missing")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the daemons [this one]")
    parser.add_argument(
        "--logger",
        choices=("twistd", "journal"),
        default="journal",
        help="the daemons' log observer: twistd's default (timestamps) or the packaged unit's "
        "journal observer [%(default)s]",
    )
    args = parser.parse_args()
    if args.authorization:
        EXTRA_HEADERS["Authorization"] = args.authorization
    cpus = os.sched_getaffinity(0)
    if args.server_cpu == args.client_cpu or not {args.server_cpu, args.client_cpu} <= cpus:
        parser.error(f"--server-cpu and --client-cpu must be two different cores of {sorted(cpus)}")

    servers_count = 1 + (args.only is None) + 1
    time_limit = 240 + args.rounds * servers_count * len(KINDS) * (args.duration + 5)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the processes and temp dirs go too
    signal.signal(signal.SIGALRM, lambda *_: _over_time(time_limit))
    signal.alarm(int(time_limit))

    tools = ensure_tools(not args.no_install)
    print(
        f"{tool_version([tools['wrk'], '--version'])}; {tool_version([tools['nginx'], '-v'])}; "
        f"Python {sys.version.split()[0]}; load average before: {load_average()}",
        flush=True,
    )
    dists, wheel = distributions()
    print(
        f"upstream: {PROJECT}, {len(dists)} files; the measured wheel {wheel.filename}, {len(wheel.data):,} bytes",
        flush=True,
    )

    scratch_root = Path(tempfile.mkdtemp(prefix="pypicached-rps-"))
    scratch_root.chmod(0o755)  # nginx's worker (user nobody) reads its root under it
    try:
        with serving(FakeUpstream(dists, reactor=reactor)) as upstream, contextlib.ExitStack() as stack:
            codes: list[Code] = []
            if args.only != "current":
                codes.append(stack.enter_context(reference_code(args.reference, scratch_root)))
            if args.only != "reference":
                codes.append(current_code())
            servers = []
            for number, code in enumerate(codes):
                options = args.current_flag if code.label.startswith("current") else ()
                daemon, server = daemon_server(
                    code,
                    args.python,
                    upstream,
                    scratch_root / f"daemon-{number}",
                    wheel,
                    args.server_cpu,
                    args.logger,
                    options,
                )
                stack.callback(daemon.stop)
                servers.append(server)
            pages = {s.warmed.page for s in servers}
            if len(pages) > 1:
                print("note: the daemons' pages differ; nginx serves the last one's", flush=True)
            served = servers[-1].warmed
            print(f"page {served.page_path}: {len(served.page):,} bytes of {JSON_TYPE}", flush=True)
            web = Nginx.serving(
                tools["nginx"], scratch_root / "nginx", served, args.server_cpu, args.nginx_access_log == "on"
            )
            stack.callback(web.stop)
            if get(f"http://127.0.0.1:{web.port}{served.page_path}", PIP_ACCEPT).body != served.page:
                raise RuntimeError("nginx does not serve the page's bytes")
            nginx = Server(
                f"nginx (log {args.nginx_access_log})",
                web.port,
                served,
                pids=web.pids,
                alive=lambda: web.process.poll() is None,
                log_path=web.dir / "access.log" if args.nginx_access_log == "on" else None,
            )
            servers.append(nginx)
            print(f"nginx: pids {web.pids()} on CPU {args.server_cpu}, access log {args.nginx_access_log}", flush=True)

            results: dict[tuple[str, str], list[Run]] = {(s.label, k): [] for s in servers for k in KINDS}
            for round_number in range(args.rounds):
                order = servers[round_number % len(servers) :] + servers[: round_number % len(servers)]
                for server in order:
                    for kind in KINDS:
                        run = load(
                            tools["wrk"],
                            server,
                            kind,
                            duration=args.duration,
                            connections=args.connections,
                            cpu=args.client_cpu,
                        )
                        results[server.label, kind].append(run)
                        print(
                            f"  round {round_number + 1}: {server.label:28} {kind}: {run.rps:>9,.0f} req/s, "
                            f"{run.cpu_us:6.1f} us CPU/request, server core {run.server_busy:4.0%}, "
                            f"wrk core {run.client_busy:4.0%}, latency {run.latency}"
                            + (f"  PROBLEM {run.problem}" if run.problem else ""),
                            flush=True,
                        )
            report(results, servers, args, nginx)
    finally:
        signal.alarm(0)
        shutil.rmtree(scratch_root, ignore_errors=True)
        print(f"load average after: {load_average()}")


def _over_time(limit: float) -> None:
    raise TimeoutError(f"page_rps: over its {limit:.0f} s time limit")


if __name__ == "__main__":
    main()
