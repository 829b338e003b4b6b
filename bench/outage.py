"""
Does a pip install from a warm cache survive the upstream going away, and how much slower is it?

Issue #10's target: pip installs a dozen projects warm; the upstream process is
killed (connections reset, pages expired); the same install succeeds and takes
no more than 1.5x the warm run. And the worse outage, an upstream that accepts
connections and never answers: there an expired page must not wait the full
response_timeout, let alone pip's own 15 s, page after page.

Two scenarios, each against a freshly started daemon with an empty cache and a
short index TTL, and a fake upstream (tests/fake_upstream.py, a dozen projects of
small wheels with PEP 658 metadata) in a process of its own, so that SIGKILL
does to its connections what a crash does:

  refused  cold run (fills the cache), warm run (pages fresh), wait past the TTL,
           SIGKILL the upstream, run again: every page is expired and every
           connection to its port is refused.
  hanging  the same, but a listener that accepts connections, reads what it is
           sent and never answers takes the dead upstream's port before the run.

Each run is a real `pip download` (isolated from this machine's pip settings,
fresh destination, pip's 15 s read timeout) of the dozen projects, capped at
--cap seconds; the outage run's wall time is given as a ratio against the median
of the warm runs of the same daemon, in the same run. The daemon's access log
(X-Pypi-Cache status and upstream wait of every request) shows where an outage
run spent its time. Everything is measured for this checkout ("current") and for a reference
revision (default 5278d2e, before the outage work) run from a temporary git
worktree with the same Python.

    .venv/bin/python bench/outage.py [--reference REV] [--only current|reference]
                                     [--ttl 10] [--cap 180] [--projects 12] [--warm-runs 3]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import attrs

# bench/ runs as a script: its neighbour page_memory.py and the tests package import from here.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from page_memory import Code, Daemon, current_code, reference_code

from tests.installers import clean_env

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE = "5278d2e"
TARGET_RATIO = 1.5
#: pip's default read timeout, passed explicitly: it is what turns a slow proxy into a failed CI job.
PIP_TIMEOUT = 15
#: After the TTL, so that no page is fresh by a rounding error.
EXPIRY_MARGIN = 1.0


# --------------------------------------------------------------------------------------------
# The upstreams, each in a process of its own

#: The fake index of tests/fake_upstream.py, printing every request it gets, so that the
#: bench can tell how many reached it in each run. argv: port (0: any), projects.
_SERVE = r"""
import sys
from twisted.internet import reactor
from tests.fake_upstream import FakeUpstream, start_fake_upstream
from tests.wheels import build_wheel

class Logged(FakeUpstream):
    def render(self, request):
        print("request", request.method.decode(), request.path.decode(), flush=True)
        return super().render(request)

names = [f"bench-outage-{i:02d}" for i in range(int(sys.argv[2]))]
upstream = Logged([build_wheel(n, v, size_padding=64 * 1024) for n in names for v in ("1.0", "1.1")])
listening = start_fake_upstream(upstream)
print("listening", listening.port_number, flush=True)
reactor.run()
"""

#: An upstream that accepts connections, reads what it is sent and never answers: a WAN
#: brown-out or a stuck middlebox, as the daemon sees it. argv: port.
_HANG = r"""
import selectors, socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(128)
selector = selectors.DefaultSelector()
selector.register(server, selectors.EVENT_READ)
print("listening", server.getsockname()[1], flush=True)
while True:
    for key, _ in selector.select():
        if key.fileobj is server:
            connection, _ = server.accept()
            selector.register(connection, selectors.EVENT_READ)
            print("accepted", flush=True)
        else:
            try:
                more = key.fileobj.recv(65536)
            except OSError:  # the daemon gave up and reset the connection
                more = b""
            if not more:
                selector.unregister(key.fileobj)
                key.fileobj.close()
"""

UPSTREAM_SCRIPTS = {"serve": _SERVE, "hang": _HANG}


class UpstreamProcess:
    """One upstream process (``serve`` or ``hang``) on a loopback port, its stdout in a log file."""

    def __init__(self, python: str, mode: str, scratch: Path, port: int = 0, projects: int = 0) -> None:
        self.mode = mode
        self.log_path = scratch / f"upstream-{mode}.log"
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [python, "-c", UPSTREAM_SCRIPTS[mode], str(port), str(projects)],
                cwd=scratch,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.port = self._wait_listening()

    def _wait_listening(self, timeout: float = 30.0) -> int:
        """The port, once the process says it listens (the daemon must not meet a refusal by accident)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(r"^listening (\d+)$", self._log(), re.M)
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the {self.mode} upstream did not start:\n{self._log()[-3000:]}")

    def _log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/simple/"

    def requests(self) -> int:
        """Requests (``serve``) or connections (``hang``) it has had so far."""
        return len(re.findall(r"^(?:request|accepted)\b", self._log(), re.M))

    def kill(self) -> None:
        """SIGKILL, as a crash would: no goodbye on its connections, its port refused from now on."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()


# --------------------------------------------------------------------------------------------
# The daemon under test


class OutageDaemon(Daemon):
    """page_memory's daemon, with a short index TTL, so that its pages expire within the bench."""

    def __init__(self, python: str, code: Code, upstream: str, scratch: Path, ttl: float) -> None:
        super().__init__(python, code, upstream, scratch, "--index-ttl", f"{ttl:g}")

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        """What the daemon logged from byte ``offset`` on: one run's requests and warnings."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")


_ACCESS = re.compile(
    r'"(?P<method>[A-Z]+) (?P<path>\S+)" (?P<status>\S+) (?P<bytes>\d+) (?P<cache>\S+) '
    r"(?P<total>[\d.]+)s upstream=(?P<upstream>[\d.]+s|-)"
)
#: What the daemon says about its upstream while it fails: the reason an outage run took long.
_UPSTREAM_NEWS = re.compile(r"Upstream .*(down|back|failed)|revalidation .* failed", re.I)


@attrs.frozen
class AccessLine:
    """One request as the daemon's access log tells it."""

    path: str
    status: str
    cache: str
    total: float
    upstream: str

    @property
    def is_page(self) -> bool:
        return self.path.startswith("/simple/")


def access_lines(text: str) -> tuple[AccessLine, ...]:
    """The access-log lines of a stretch of the daemon's log, in the order they were written."""
    return tuple(
        AccessLine(m["path"], m["status"], m["cache"], float(m["total"]), m["upstream"])
        for m in map(_ACCESS.search, text.splitlines())
        if m
    )


# --------------------------------------------------------------------------------------------
# pip


@attrs.frozen
class PipRun:
    """One ``pip download`` through the daemon: its wall time, its outcome, and what the daemon saw."""

    seconds: float
    #: pip's exit status; None when it was killed at the cap.
    code: int | None
    output: str = attrs.field(repr=False)
    downloaded: tuple[str, ...]
    requests: tuple[AccessLine, ...]
    daemon_news: tuple[str, ...]
    upstream_requests: int

    @property
    def succeeded(self) -> bool:
        return self.code == 0

    def exit_text(self, cap: float) -> str:
        if self.code is None:
            return f"killed at the {cap:.0f} s cap"
        return "0 (ok)" if self.code == 0 else f"{self.code} (failed)"

    def statuses(self) -> str:
        """X-Pypi-Cache of the run's page requests, counted: HIT warm, STALE in an outage; aborted: pip gave up."""
        counts = collections.Counter(
            "aborted" if line.status == "aborted" else line.cache for line in self.requests if line.is_page
        )
        return ", ".join(f"{n} {cache}" for cache, n in counts.most_common()) or "no page requests"


def pip_argv(pip_python: str, port: int, dest: Path, projects: list[str]) -> list[str]:
    """
    pip download of ``projects`` from the daemon alone (with clean_env's PIP_CONFIG_FILE,
    --isolated keeps this machine's pip settings out), with pip's read timeout spelled out.
    """
    return [
        pip_python,
        "-m",
        "pip",
        "download",
        "--isolated",
        "--no-input",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--progress-bar=off",
        "--timeout",
        str(PIP_TIMEOUT),
        "-d",
        str(dest),
        "--index-url",
        f"http://127.0.0.1:{port}/simple/",
        *projects,
    ]


def run_pip(
    pip_python: str, daemon: OutageDaemon, upstream: UpstreamProcess, projects: list[str], scratch: Path, cap: float
) -> PipRun:
    """
    One timed run into a fresh directory (pip skips files it finds there, which would
    make runs incomparable), killed at ``cap``: a run that hangs is the finding, not a
    reason to wait forever.
    """
    dest = Path(tempfile.mkdtemp(prefix="download-", dir=scratch))
    home = Path(tempfile.mkdtemp(prefix="home-", dir=scratch))
    offset, before = daemon.log_size(), upstream.requests()
    argv = pip_argv(pip_python, daemon.port, dest, projects)
    started = time.monotonic()
    try:
        done = subprocess.run(
            argv,
            env=clean_env(home),
            cwd=scratch,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=cap,
        )
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code, output = None, _text(e.stdout) + _text(e.stderr)
    seconds = time.monotonic() - started
    time.sleep(0.2)  # the daemon logs a request when it has finished it, a moment after pip has its answer
    logged = daemon.log_since(offset)
    return PipRun(
        seconds=seconds,
        code=code,
        output=output,
        downloaded=tuple(sorted(p.name for p in dest.iterdir())),
        requests=access_lines(logged),
        daemon_news=tuple(line for line in logged.splitlines() if _UPSTREAM_NEWS.search(line)),
        upstream_requests=upstream.requests() - before,
    )


def _text(data: bytes | str | None) -> str:
    """What TimeoutExpired kept of an output: bytes even under text=True, or None."""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data or ""


# --------------------------------------------------------------------------------------------
# Scenarios


def refuse(python: str, dead: UpstreamProcess, scratch: Path) -> UpstreamProcess | None:
    """Nothing takes the killed upstream's port: every connection is refused."""
    return None


def hang(python: str, dead: UpstreamProcess, scratch: Path) -> UpstreamProcess | None:
    """A listener that never answers takes the killed upstream's port."""
    return UpstreamProcess(python, "hang", scratch, port=dead.port)


@attrs.frozen
class Scenario:
    """An outage: its name in the table, and what takes the upstream's place once it is killed."""

    name: str
    title: str
    replace: Callable[[str, UpstreamProcess, Path], UpstreamProcess | None]


SCENARIOS = (
    Scenario("refused", "upstream killed: connections reset, then refused", refuse),
    Scenario("hanging", "upstream killed, its port taken by a listener that never answers", hang),
)


@attrs.frozen
class Outcome:
    """A scenario's runs against one daemon: cold, warm (several), outage."""

    scenario: Scenario
    label: str
    cold: PipRun
    warm: tuple[PipRun, ...]
    outage: PipRun
    #: Connections (hanging) the silent listener accepted during the outage run.
    silent_connections: int | None

    @property
    def warm_seconds(self) -> float:
        """The median warm run: one run of a second or so is at the mercy of whatever else the machine does."""
        return statistics.median(run.seconds for run in self.warm)

    @property
    def warm_ok(self) -> bool:
        """Every warm run succeeded from the cache alone: otherwise it is no baseline."""
        return all(run.succeeded and run.upstream_requests == 0 for run in self.warm)

    @property
    def ratio(self) -> float:
        return self.outage.seconds / self.warm_seconds

    @property
    def met(self) -> bool:
        return self.warm_ok and self.outage.succeeded and self.ratio <= TARGET_RATIO


@attrs.frozen
class Bench:
    """What every scenario run needs: interpreters, the projects, the limits."""

    python: str
    pip_python: str
    projects: list[str]
    ttl: float
    cap: float
    warm_runs: int


def run_scenario(bench: Bench, code: Code, scenario: Scenario, scratch: Path) -> Outcome:
    """Cold, warm (within the TTL), then (pages expired, upstream killed and maybe replaced) the outage run."""
    upstream = UpstreamProcess(bench.python, "serve", scratch, projects=len(bench.projects))
    replacement = None
    daemon = OutageDaemon(bench.python, code, upstream.url, scratch, bench.ttl)
    try:
        daemon.wait_ready()
        print(f"{code.label}, {scenario.name}: pypicached from {daemon.loaded_from()}", flush=True)
        cold = run_pip(bench.pip_python, daemon, upstream, bench.projects, scratch, bench.cap)
        warm = tuple(
            run_pip(bench.pip_python, daemon, upstream, bench.projects, scratch, bench.cap)
            for _ in range(bench.warm_runs)
        )
        time.sleep(bench.ttl + EXPIRY_MARGIN)  # after the warm runs: every page has expired, however they went
        upstream.kill()
        replacement = scenario.replace(bench.python, upstream, scratch)
        outage = run_pip(bench.pip_python, daemon, replacement or upstream, bench.projects, scratch, bench.cap)
        return Outcome(
            scenario,
            code.label,
            cold,
            warm,
            outage,
            silent_connections=replacement.requests() if replacement else None,
        )
    finally:
        daemon.stop()
        upstream.kill()
        if replacement is not None:
            replacement.kill()


def measure(bench: Bench, code: Code, scratch_root: Path) -> list[Outcome]:
    """Every scenario for ``code``, each with its own daemon, cache and upstream."""
    outcomes = []
    for scenario in SCENARIOS:
        scratch = Path(tempfile.mkdtemp(prefix=f"{scenario.name}-", dir=scratch_root))
        try:
            outcome = run_scenario(bench, code, scenario, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        describe(outcome, bench.cap)
        outcomes.append(outcome)
    return outcomes


# --------------------------------------------------------------------------------------------
# The report


def describe(outcome: Outcome, cap: float) -> None:
    """One scenario's runs as they finish: times, statuses, and for the outage run every page's wait."""
    print(f"\n{outcome.label}, {outcome.scenario.name} ({outcome.scenario.title}):", flush=True)
    runs = [("cold", outcome.cold), *((f"warm {i}", run) for i, run in enumerate(outcome.warm, 1))]
    for name, run in [*runs, ("outage", outcome.outage)]:
        wheels = sum(1 for f in run.downloaded if f.endswith(".whl"))
        print(
            f"  {name:7} {run.seconds:6.1f} s  pip {run.exit_text(cap)}; {wheels} wheels; pages: {run.statuses()}; "
            f"requests reaching the upstream: {run.upstream_requests}",
            flush=True,
        )
    if outcome.silent_connections is not None:
        print(f"  the silent upstream accepted {outcome.silent_connections} connections during the outage run")
    pages = [line for line in outcome.outage.requests if line.is_page]
    if pages:
        print("  outage run, page requests in the daemon's access log (status, X-Pypi-Cache, total, upstream wait):")
        for line in pages:
            print(f"    {line.path:32} {line.status:>7} {line.cache:9} {line.total:7.3f}s upstream={line.upstream}")
    for news in outcome.outage.daemon_news[:8]:
        print(f"  daemon: {news.strip()[:200]}")
    if not outcome.outage.succeeded:
        tail = "\n".join(outcome.outage.output.strip().splitlines()[-8:])
        print("  pip's output ends:\n    " + tail.replace("\n", "\n    "), flush=True)


def report(outcomes: list[Outcome], cap: float) -> None:
    """The table: warm and outage times, their difference and ratio per scenario and version, and the verdicts."""
    width = max(len(o.label) for o in outcomes) + 2
    print(
        f"\n{'scenario':10}{'version':{width}}{'cold':>8}{'warm':>8}{'outage':>23}{'outage-warm':>13}"
        f"{'outage/warm':>13}  pip exit (outage run)"
    )
    for o in outcomes:
        failed = "" if o.outage.succeeded else ">="
        outage = f"{o.outage.seconds:.1f} s" if o.outage.succeeded else f"failed after {o.outage.seconds:.1f} s"
        print(
            f"{o.scenario.name:10}{o.label:{width}}{o.cold.seconds:>6.1f} s{o.warm_seconds:>6.1f} s{outage:>23}"
            f"{f'{failed}{o.outage.seconds - o.warm_seconds:.1f} s':>13}{f'{failed}{o.ratio:.2f}x':>13}"
            f"  {o.outage.exit_text(cap)}"
        )
    for o in outcomes:
        verdict = "met" if o.met else "NOT met"
        if not o.warm_ok:  # a baseline that failed or waited on the upstream is no warm run
            verdict = "not shown: a warm run failed or reached the upstream"
        target = f"target (outage run succeeds within {TARGET_RATIO}x the warm run), {o.scenario.name}, {o.label}"
        print(f"{target}: {verdict}")
    print(
        "Times are wall clock of the whole pip download (pip's start-up included); warm is the median of the warm "
        "runs; each scenario has its own daemon, cache and upstream; ratios are against the same daemon's warm runs."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="git revision to compare with [%(default)s]")
    parser.add_argument("--only", choices=("current", "reference"), help="measure only one of the two")
    parser.add_argument("--projects", type=int, default=12, help="projects pip downloads [%(default)s]")
    parser.add_argument(
        "--ttl",
        type=float,
        default=10.0,
        help="the daemon's --index-ttl: long enough for the cold and warm runs [%(default)s]",
    )
    parser.add_argument("--warm-runs", type=int, default=3, help="warm runs, of which the median counts [%(default)s]")
    parser.add_argument("--cap", type=float, default=180.0, help="seconds a pip run may take [%(default)s]")
    parser.add_argument(
        "--python",
        default=str(REPO / ".venv" / "bin" / "python"),
        help="interpreter of the daemons and upstreams [%(default)s]",
    )
    parser.add_argument(
        "--pip-python",
        default=str(REPO / ".venv-tools" / "pip" / "bin" / "python"),
        help="interpreter whose pip is measured (make tools builds it) [%(default)s]",
    )
    args = parser.parse_args()
    counts = {"--projects": args.projects, "--warm-runs": args.warm_runs, "--ttl": args.ttl, "--cap": args.cap}
    for flag, value in counts.items():
        if value <= 0:
            parser.error(f"{flag} must be positive, not {value:g}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the processes and temp dirs go too
    for python in (args.python, args.pip_python):
        if not Path(python).exists():
            sys.exit(f"outage: no interpreter {python}; `make run` builds .venv, `make tools` the installers")

    bench = Bench(
        python=args.python,
        pip_python=args.pip_python,
        projects=[f"bench-outage-{i:02d}" for i in range(args.projects)],
        ttl=args.ttl,
        cap=args.cap,
        warm_runs=args.warm_runs,
    )
    print(
        f"pip download of {args.projects} projects (two versions of a 64 KiB wheel each, PEP 658 metadata), "
        f"pip --timeout {PIP_TIMEOUT}; daemon --index-ttl {args.ttl:g}; each pip run capped at {args.cap:.0f} s",
        flush=True,
    )
    scratch_root = Path(tempfile.mkdtemp(prefix="pypicached-outage-"))
    outcomes: list[Outcome] = []
    try:
        with contextlib.ExitStack() as stack:
            codes = []
            if args.only != "current":
                codes.append(stack.enter_context(reference_code(args.reference, scratch_root)))
            if args.only != "reference":
                codes.append(current_code())
            for code in codes:
                outcomes += measure(bench, code, scratch_root)
        report(outcomes, args.cap)
    finally:
        shutil.rmtree(scratch_root, ignore_errors=True)


if __name__ == "__main__":
    main()
