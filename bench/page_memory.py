"""
How much memory does the daemon need to serve big index pages to many clients at once?

Issue #10's target: 16 slow clients (8 HTML, 8 JSON, half of each asking for
gzip) of a 700,000-project root page keep the daemon's peak RSS under 150 MB,
and 50 concurrent clients of a project page of a few MB (like boto3's) stay
under the same bound.

This process plays both ends. The upstream is twisted.web in a thread, its
bodies generated once, here (not in the daemon). The clients are raw sockets
with a small receive buffer; the slow ones read 64 KiB every 50 ms, so the
kernel cannot absorb the page for them and the daemon must hold or stream what
they have not read yet. Each phase runs against a freshly started daemon with
an empty cache, so the phase also includes the daemon fetching, parsing and
rendering the page; its peak is the daemon's VmHWM when the phase ends, and
VmRSS is sampled every 100 ms for the course of it. The samples taken until
the first body byte reaches a client cover the fetch, the parse, the rendering
and whatever the daemon did with the responses before sending them; those
after, the serving.

Every figure is measured for this checkout ("current") and for a reference
revision (default 5278d2e, before the memory work) run from a temporary git
worktree with the same Python, in the same run, and given as a ratio.

    .venv/bin/python bench/page_memory.py [--reference REV] [--only current|reference]
                                          [--names 700000] [--files 8000]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import hashlib
import html
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.threads import blockingCallFromThread
from twisted.protocols.basic import FileSender
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REFERENCE = "5278d2e"
TARGET_MB = 150.0
MB = 1_000_000  # the "150 MB", decimal; /proc's "kB" are KiB

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "text/html"
HTML_ACCEPT = "text/html"
PIP_ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01"

#: A slow client reads this much, then waits SLOW_INTERVAL: about 1.2 MB/s.
SLOW_CHUNK = 64 * 1024
SLOW_INTERVAL = 0.05
#: Set before connecting, so it also caps the TCP window the daemon may fill.
SLOW_RCVBUF = 16 * 1024
SAMPLE_INTERVAL = 0.1


# --------------------------------------------------------------------------------------------
# The upstream's pages, generated once in this process


@attrs.frozen
class Representation:
    """One upstream body in one format, plain and gzipped, as the fake index sends it."""

    content_type: str
    plain: bytes = attrs.field(repr=False)
    packed: bytes = attrs.field(repr=False)
    etag: str

    @classmethod
    def of(cls, content_type: str, body: bytes) -> Representation:
        digest = hashlib.blake2b(body, digest_size=16).hexdigest()
        return cls(content_type, body, gzip.compress(body, 6, mtime=0), f'"{digest}"')


@attrs.frozen
class Page:
    """An index page in both formats of the simple API."""

    html: Representation
    json: Representation

    def sizes(self) -> str:
        return (
            f"HTML {len(self.html.plain) / MB:.1f} MB (gzip {len(self.html.packed) / MB:.1f} MB), "
            f"JSON {len(self.json.plain) / MB:.1f} MB (gzip {len(self.json.packed) / MB:.1f} MB)"
        )


_WORDS = (
    "py",
    "django",
    "flask",
    "aws",
    "cloud",
    "data",
    "test",
    "lib",
    "tools",
    "async",
    "json",
    "http",
    "client",
    "sdk",
    "plugin",
    "utils",
    "core",
    "api",
    "ml",
    "torch",
    "net",
    "web",
    "cli",
    "sql",
    "auth",
    "config",
    "log",
    "parse",
    "yaml",
    "zope",
    "types",
    "google",
)
_HTML_HEAD = (
    "<!DOCTYPE html>\n<html>\n  <head>\n"
    '    <meta name="pypi:repository-version" content="1.1">\n'
    "    <title>{title}</title>\n  </head>\n  <body>\n"
)
_HTML_TAIL = "  </body>\n</html>\n"
_SERIAL = 30_000_000


def normalize(name: str) -> str:
    """PEP 503, as the public index links projects."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_names(count: int) -> list[str]:
    """
    Distinct names shaped like the public index's (words, mixed separators and
    case, 6 to 30 characters), so the pages come out the size of its pages; the
    hex suffix keeps them distinct after normalization. Seeded: every run and
    both daemons get the same list.
    """
    rng = random.Random(10)
    names = []
    for i in range(count):
        sep = rng.choice(("-", "-", "_", ".", ""))
        name = sep.join(rng.choices(_WORDS, k=rng.randint(1, 3))) + f"{sep or '-'}{i:x}"
        names.append(name.capitalize() if rng.random() < 0.1 else name)
    return names


def root_page(names: Sequence[str]) -> Page:
    """``/simple/`` as the public index writes it: PEP 503 anchors, PEP 691 JSON with serials."""
    rows = "".join(f'    <a href="/simple/{normalize(n)}/">{html.escape(n)}</a>\n' for n in names)
    document = {
        "meta": {"_last-serial": _SERIAL, "api-version": "1.1"},
        "projects": [{"_last-serial": _SERIAL - i, "name": n} for i, n in enumerate(names)],
    }
    return Page(
        Representation.of(HTML_TYPE, (_HTML_HEAD.format(title="Simple index") + rows + _HTML_TAIL).encode()),
        Representation.of(JSON_TYPE, json.dumps(document, separators=(",", ":")).encode()),
    )


def _file_entries(count: int) -> list[dict[str, Any]]:
    """A wheel and an sdist per version, each with the keys the public index gives them."""
    epoch = datetime.datetime(2019, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    entries = []
    for i in range(count):
        version = f"1.{i // 200}.{i % 200 // 2}"
        wheel = i % 2 == 0
        filename = f"bigproject-{version}-py3-none-any.whl" if wheel else f"bigproject-{version}.tar.gz"
        blake = hashlib.blake2b(filename.encode(), digest_size=32).hexdigest()
        metadata = {"sha256": hashlib.sha256(b"metadata " + filename.encode()).hexdigest()} if wheel else False
        entries.append(
            {
                "core-metadata": metadata,
                "data-dist-info-metadata": metadata,
                "filename": filename,
                "hashes": {"sha256": hashlib.sha256(filename.encode()).hexdigest()},
                "provenance": None,
                "requires-python": ">=3.8",
                "size": 130_000 + 37 * i,
                "upload-time": (epoch + datetime.timedelta(minutes=37 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "url": f"/packages/{blake[:2]}/{blake[2:4]}/{blake[4:]}/{filename}",
                "yanked": False,
            }
        )
    return entries


def _anchor(entry: dict[str, Any]) -> str:
    attributes = f' data-requires-python="{html.escape(entry["requires-python"])}"'
    if entry["core-metadata"]:
        digest = f"sha256={entry['core-metadata']['sha256']}"
        attributes += f' data-dist-info-metadata="{digest}" data-core-metadata="{digest}"'
    href = f"{entry['url']}#sha256={entry['hashes']['sha256']}"
    return f'    <a href="{html.escape(href)}"{attributes}>{html.escape(entry["filename"])}</a><br />\n'


def big_project_page(files: int) -> Page:
    """``/simple/bigproject/``: ``files`` files with hashes and metadata, a few MB like boto3's page."""
    entries = _file_entries(files)
    versions = sorted({e["filename"].split("-")[1].removesuffix(".tar.gz") for e in entries})
    document = {
        "files": entries,
        "meta": {"_last-serial": _SERIAL, "api-version": "1.1"},
        "name": "bigproject",
        "versions": versions,
    }
    head = _HTML_HEAD.format(title="Links for bigproject") + "    <h1>Links for bigproject</h1>\n"
    return Page(
        Representation.of(HTML_TYPE, (head + "".join(map(_anchor, entries)) + _HTML_TAIL).encode()),
        Representation.of(JSON_TYPE, json.dumps(document, separators=(",", ":")).encode()),
    )


# --------------------------------------------------------------------------------------------
# The fake upstream


def wants_json(accept: str) -> bool:
    """PEP 691, as far as this bench needs it: JSON whenever the client accepts it at all."""
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        if media.lower() == JSON_TYPE:
            q = next((p.partition("=")[2] for p in params if p.replace(" ", "").startswith("q=")), "1")
            return float(q or 0) > 0
    return False


class FakeIndex(Resource):
    """
    The upstream index: each page in the format the ``Accept`` header asks for,
    gzipped when asked (as the public index does, so the daemon's own decoding is
    measured), with its headers, ETags and 304s; bodies streamed with
    backpressure so that only the daemon's reading paces them.
    """

    isLeaf = True

    def __init__(self, pages: dict[str, Page]) -> None:
        super().__init__()
        self._pages = pages

    def render_GET(self, request: Any) -> Any:
        page = self._pages.get(request.path.decode("latin-1"))
        if page is None:
            request.setResponseCode(404)
            return b"no such page\n"
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        shown = page.json if wants_json(accept) else page.html
        packed = b"gzip" in (request.getHeader(b"accept-encoding") or b"").lower()
        etag = shown.etag[:-1] + '-gz"' if packed else shown.etag
        request.setHeader(b"Content-Type", shown.content_type.encode())
        request.setHeader(b"Vary", b"Accept, Accept-Encoding")
        request.setHeader(b"Cache-Control", b"max-age=600, public")
        request.setHeader(b"X-PyPI-Last-Serial", b"%d" % _SERIAL)
        request.setHeader(b"ETag", etag.encode())
        if etag.encode() in (request.getHeader(b"if-none-match") or b""):
            request.setResponseCode(304)
            return b""
        body = shown.packed if packed else shown.plain
        if packed:
            request.setHeader(b"Content-Encoding", b"gzip")
        request.setHeader(b"Content-Length", b"%d" % len(body))
        sent = FileSender().beginFileTransfer(BytesIO(body), request)
        sent.addCallbacks(lambda _: request.finish(), lambda _: None)  # errback: the daemon went away
        return NOT_DONE_YET


@contextlib.contextmanager
def serving(resource: Resource) -> Iterator[str]:
    """The fake upstream on a random loopback port, its reactor in a thread; yields the index URL."""
    thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True)
    thread.start()
    port = blockingCallFromThread(reactor, reactor.listenTCP, 0, Site(resource), interface="127.0.0.1")
    try:
        yield f"http://127.0.0.1:{port.getHost().port}/simple/"
    finally:
        blockingCallFromThread(reactor, port.stopListening)
        reactor.callFromThread(reactor.stop)
        thread.join(10)


# --------------------------------------------------------------------------------------------
# The daemon under test


@attrs.frozen
class Code:
    """Which pypicached runs: a label for the table, and the tree its package and plugin come from."""

    label: str
    root: Path


#: twistd, after saying which pypicached package it imported: twistd's plugin names
#: the module "pypicached.tap", so the package imported here is the one that serves.
_LAUNCH = (
    "import sys, pypicached; "
    "print('bench: pypicached from', pypicached.__file__, flush=True); "
    "from twisted.scripts.twistd import run; run()"
)


def proc_status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field of /proc/PID/status (VmRSS, VmHWM), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def free_port() -> int:
    """A loopback port free right now (the daemon binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """One pypicached process on a loopback port, with a cache directory of its own."""

    def __init__(
        self, python: str, code: Code, upstream: str, scratch: Path, *options: str, twistd: tuple[str, ...] = ()
    ) -> None:
        """``options``: more of pypicached's flags (``--index-ttl 10``); ``twistd``: twistd's own (``--logger=…``)."""
        self.code = code
        self.port = free_port()
        self.log_path = scratch / "daemon.log"
        argv = [
            python,
            "-c",
            _LAUNCH,
            "--nodaemon",
            "--pidfile=",
            *twistd,
            "pypicached",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            "--cache-dir",
            str(scratch / "cache"),
            "--upstream",
            upstream,
            *options,
        ]
        # PYTHONPATH first on sys.path: the tree's pypicached and twisted/plugins win over
        # the venv's editable install of this checkout.
        env = dict(os.environ, PYTHONPATH=str(code.root), PYTHONDONTWRITEBYTECODE="1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv, cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def kb(self, field: str) -> int:
        value = proc_status_kb(self.pid, field)
        if value is None:
            raise RuntimeError(f"the daemon exited (status {self.process.poll()}):\n{self.log_tail()}")
        return value

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until the port accepts connections; then check it is the code we meant to run."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the daemon exited with status {self.process.returncode}:\n{self.log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the daemon did not listen within {timeout:.0f} s:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.05)
        ran = self.loaded_from()
        if not Path(ran).resolve().is_relative_to(self.code.root.resolve()):
            raise RuntimeError(f"{self.code.label}: the daemon ran pypicached from {ran}, not from {self.code.root}")

    def loaded_from(self) -> str:
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("bench: pypicached from "):
                return line.removeprefix("bench: pypicached from ")
        raise RuntimeError(f"the daemon did not say which pypicached it runs:\n{self.log_tail()}")

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Sampler(threading.Thread):
    """The daemon's VmRSS every 100 ms: the course of a phase, where VmHWM gives only its peak."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self._pid = pid
        self._done = threading.Event()
        self.samples: list[tuple[float, int]] = []

    def run(self) -> None:
        while True:
            kb = proc_status_kb(self._pid, "VmRSS")
            if kb is not None:
                self.samples.append((time.monotonic(), kb))
            if kb is None or self._done.wait(SAMPLE_INTERVAL):
                return

    def stop(self) -> list[tuple[float, int]]:
        self._done.set()
        self.join()
        return self.samples


# --------------------------------------------------------------------------------------------
# Clients


@attrs.frozen
class ClientSpec:
    """One client of a phase: the format it asks for, gzip or not, and how fast it reads."""

    accept: str
    gzip: bool
    slow: bool

    @property
    def expected_type(self) -> str:
        return JSON_TYPE if self.accept == PIP_ACCEPT else HTML_TYPE

    def request(self, port: int, path: str) -> bytes:
        encoding = "gzip, deflate" if self.gzip else "identity"
        return (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: pypicached-bench\r\n"
            f"Accept: {self.accept}\r\nAccept-Encoding: {encoding}\r\nConnection: close\r\n\r\n"
        ).encode()


@attrs.define
class ClientResult:
    """What one client got, and when (seconds from the start of the phase)."""

    spec: ClientSpec
    status: int = 0
    content_type: str = ""
    encoding: str = ""
    length: int | None = None
    chunked: bool = False
    received: int = 0
    tail: bytes = b""
    eof: bool = False
    first_byte: float | None = None
    finished: float | None = None
    error: str = ""

    @property
    def complete(self) -> bool:
        """A 200 whose whole body arrived, whichever way its end was marked."""
        if self.status != 200 or self.error:
            return False
        if self.length is not None:
            return self.received == self.length
        return self.eof and (not self.chunked or self.tail.endswith(b"0\r\n\r\n"))

    def problem(self) -> str:
        """Why this answer is not what the client asked for; "" when it is."""
        if not self.complete:
            return self.error or f"status {self.status}, {self.received} bytes of {self.length}"
        if not self.content_type.startswith(self.spec.expected_type):
            return f"asked for {self.spec.expected_type}, got {self.content_type}"
        if self.spec.gzip != (self.encoding == "gzip") and self.received >= 1024:
            return f"gzip {'asked' if self.spec.gzip else 'not asked'}, Content-Encoding {self.encoding or 'none'}"
        return ""


def _recv(sock: socket.socket, deadline: float) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("cut off at the phase cap")
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except TimeoutError:
        raise TimeoutError("cut off at the phase cap") from None


def _read_head(sock: socket.socket, result: ClientResult, deadline: float) -> bytes:
    """Parse the status line and headers into ``result``; return the body bytes already read."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = _recv(sock, deadline)
        if not more:
            raise ConnectionError(f"connection closed before the response headers ({len(data)} bytes)")
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    result.status = int(status_line.split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    result.content_type = headers.get("content-type", "")
    result.encoding = headers.get("content-encoding", "")
    result.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
    if "content-length" in headers:
        result.length = int(headers["content-length"])
    return body


def fetch(port: int, path: str, result: ClientResult, started: float, deadline: float) -> None:
    """
    One client: connect, ask, and read the whole body (slowly, if the spec says
    so), never past the deadline. A slow client's small receive buffer is set
    before connecting, since that is what bounds the TCP window the daemon may fill.
    """
    spec = result.spec
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if spec.slow:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            sock.connect(("127.0.0.1", port))
            sock.sendall(spec.request(port, path))
            data = _read_head(sock, result, deadline)
            this_tick = 0
            while True:
                if data:
                    if result.first_byte is None:
                        result.first_byte = time.monotonic() - started
                    result.received += len(data)
                    result.tail = (result.tail + data)[-5:]
                    this_tick += len(data)
                if result.length is not None and result.received >= result.length:
                    break
                if spec.slow and this_tick >= SLOW_CHUNK:
                    time.sleep(max(0.0, min(SLOW_INTERVAL, deadline - time.monotonic())))
                    this_tick = 0
                data = _recv(sock, deadline)
                if not data:
                    result.eof = True
                    break
            result.finished = time.monotonic() - started
    except (OSError, ValueError, IndexError) as e:
        result.error = str(e) or type(e).__name__


# --------------------------------------------------------------------------------------------
# Phases


@attrs.frozen
class Phase:
    """A load on one page: clients that all start at once."""

    title: str
    path: str
    clients: tuple[ClientSpec, ...]


def phases() -> tuple[Phase, ...]:
    """Issue #10's two loads."""
    root = tuple(
        ClientSpec(accept, gzip=packed, slow=True)
        for accept in (HTML_ACCEPT, PIP_ACCEPT)
        for packed in (True, False)
        for _ in range(4)
    )
    big = tuple(
        ClientSpec((HTML_ACCEPT, PIP_ACCEPT)[i % 2], gzip=bool(i // 2 % 2), slow=bool(i // 4 % 2)) for i in range(50)
    )
    return (
        Phase("16 slow clients of /simple/ (8 HTML, 8 JSON, half gzip)", "/simple/", root),
        Phase("50 clients of /simple/bigproject/ (HTML/JSON, gzip or not, half slow)", "/simple/bigproject/", big),
    )


@attrs.frozen
class PhaseResult:
    """One phase against one daemon; memory in kB (KiB) as /proc gives it."""

    idle_kb: int
    #: VmHWM at the end of the phase, or a higher VmRSS sample: the kernel's RSS
    #: counters are approximate, so a sample can exceed the high-water mark by a few kB.
    peak_kb: int
    sampled_max_kb: int
    before_first_byte_kb: int
    first_byte: float
    seconds: float
    clients: tuple[ClientResult, ...]

    @property
    def complete(self) -> int:
        return sum(1 for c in self.clients if not c.problem())


def run_phase(daemon: Daemon, phase: Phase, cap: float) -> PhaseResult:
    """Start every client at once, sample the daemon while they read, read VmHWM at the end."""
    idle = daemon.kb("VmRSS")
    sampler = Sampler(daemon.pid)
    sampler.start()
    started = time.monotonic()
    deadline = started + cap
    results = tuple(ClientResult(spec) for spec in phase.clients)
    threads = [
        threading.Thread(target=fetch, args=(daemon.port, phase.path, r, started, deadline), daemon=True)
        for r in results
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 5)
    seconds = time.monotonic() - started
    high_water = daemon.kb("VmHWM")
    samples = sampler.stop()
    sampled_max = max((kb for _, kb in samples), default=idle)
    first = min((r.first_byte for r in results if r.first_byte is not None), default=seconds)
    return PhaseResult(
        idle_kb=idle,
        peak_kb=max(high_water, sampled_max),
        sampled_max_kb=sampled_max,
        before_first_byte_kb=max((kb for t, kb in samples if t - started <= first), default=idle),
        first_byte=first,
        seconds=max((r.finished for r in results if r.finished is not None), default=seconds),
        clients=results,
    )


def measure(code: Code, python: str, upstream: str, scratch_root: Path, cap: float) -> list[PhaseResult]:
    """Every phase, each against a fresh daemon of ``code`` with an empty cache."""
    out = []
    for number, phase in enumerate(phases(), 1):
        scratch = Path(tempfile.mkdtemp(prefix="daemon-", dir=scratch_root))
        daemon = Daemon(python, code, upstream, scratch)
        try:
            daemon.wait_ready()
            if number == 1:
                print(f"{code.label}: pypicached from {daemon.loaded_from()}", flush=True)
            result = run_phase(daemon, phase, cap)
            problems = [c.problem() for c in result.clients if c.problem()]
            print(
                f"  phase {number}, {phase.title}: {result.complete}/{len(result.clients)} answered in full "
                f"in {result.seconds:.1f} s; peak RSS {result.peak_kb * 1024 / MB:.1f} MB",
                flush=True,
            )
            if problems:
                print(f"    {len(problems)} problems, e.g. {problems[0]}; the daemon's log ends:", flush=True)
                print("      " + daemon.log_tail(15).replace("\n", "\n      "), flush=True)
            out.append(result)
        finally:
            daemon.stop()
            shutil.rmtree(scratch, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------
# The code to compare


def git(*args: str) -> str:
    """A read-only git query on this checkout (or worktree bookkeeping, which leaves its files alone)."""
    return subprocess.run(
        ["git", "--no-optional-locks", "-C", str(REPO), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def current_code() -> Code:
    """This checkout, labelled with its commit and whether pypicached/ has changed since."""
    changed = git("status", "--porcelain", "--", "pypicached", "twisted")
    return Code(f"current {git('rev-parse', '--short', 'HEAD')}{'+changes' if changed else ''}", REPO)


@contextlib.contextmanager
def reference_code(rev: str, scratch_root: Path) -> Iterator[Code]:
    """The reference revision in a temporary git worktree, removed afterwards."""
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    path = scratch_root / "reference"
    git("worktree", "add", "--detach", "--quiet", str(path), commit)
    try:
        yield Code(f"reference {commit[:7]}", path)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)


# --------------------------------------------------------------------------------------------
# The report


def _mb(kb: int) -> float:
    return kb * 1024 / MB


#: The table's rows: a label, how to read the figure from a run's phase results, its unit.
ROWS: tuple[tuple[str, Callable[[list[PhaseResult]], float], str], ...] = (
    ("idle RSS (after start, before any request)", lambda r: _mb(r[0].idle_kb), "MB"),
    ("phase 1: peak RSS (VmHWM)", lambda r: _mb(r[0].peak_kb), "MB"),
    ("phase 1: max sampled RSS (every 100 ms)", lambda r: _mb(r[0].sampled_max_kb), "MB"),
    ("phase 1:   of it, until a client got a body byte", lambda r: _mb(r[0].before_first_byte_kb), "MB"),
    ("phase 1: first body byte after", lambda r: r[0].first_byte, "s"),
    ("phase 1: time", lambda r: r[0].seconds, "s"),
    ("phase 2: peak RSS (VmHWM)", lambda r: _mb(r[1].peak_kb), "MB"),
    ("phase 2: max sampled RSS (every 100 ms)", lambda r: _mb(r[1].sampled_max_kb), "MB"),
    ("phase 2:   of it, until a client got a body byte", lambda r: _mb(r[1].before_first_byte_kb), "MB"),
    ("phase 2: first body byte after", lambda r: r[1].first_byte, "s"),
    ("phase 2: time", lambda r: r[1].seconds, "s"),
)


def report(runs: dict[str, list[PhaseResult]]) -> None:
    """The figures side by side, the ratio current/reference, and the target's verdict."""
    labels = list(runs)
    width = max(len(label) for label in labels) + 2
    ratio = len(runs) == 2
    header = f"{'':48}" + "".join(f"{label:>{width}}" for label in labels)
    print("\n" + header + (f"{'current/reference':>20}" if ratio else ""))
    for title, figure, unit in ROWS:
        values = [figure(runs[label]) for label in labels]
        line = f"{title:48}" + "".join(f"{f'{v:.1f} {unit}':>{width}}" for v in values)
        if ratio:
            reference, current = values
            line += f"{current / reference:>19.2f}x" if reference else f"{'-':>20}"
        print(line)
    completes = [", ".join(f"{p.complete}/{len(p.clients)}" for p in runs[label]) for label in labels]
    print(f"{'clients answered in full, phase 1/phase 2':48}" + "".join(f"{c:>{width}}" for c in completes))
    for label in labels:
        peak = max(_mb(p.peak_kb) for p in runs[label])
        failed = sum(len(p.clients) - p.complete for p in runs[label])
        verdict = "met" if peak < TARGET_MB else "NOT met"
        if failed:  # a daemon that answers nobody needs little memory: that proves nothing
            verdict = f"not shown: {failed} clients were not answered in full"
        print(f"target (peak RSS under {TARGET_MB:.0f} MB in both phases), {label}: {verdict} (worst {peak:.1f} MB)")
    print("MB = 10^6 bytes. Each phase runs against a fresh daemon with an empty cache.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="git revision to compare with [%(default)s]")
    parser.add_argument("--only", choices=("current", "reference"), help="measure only one of the two")
    parser.add_argument("--names", type=int, default=700_000, help="projects in /simple/ [%(default)s]")
    parser.add_argument("--files", type=int, default=8_000, help="files of /simple/bigproject/ [%(default)s]")
    parser.add_argument("--phase-cap", type=float, default=60.0, help="seconds a phase may take [%(default)s]")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the daemons [this one]")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the daemons and temp dirs go too

    started = time.monotonic()
    pages = {"/simple/": root_page(project_names(args.names)), "/simple/bigproject/": big_project_page(args.files)}
    print(f"upstream bodies, generated in {time.monotonic() - started:.1f} s:")
    for path, page in pages.items():
        print(f"  {path:22} {page.sizes()}")
    print(
        f"slow clients read {SLOW_CHUNK // 1024} KiB every {SLOW_INTERVAL * 1000:.0f} ms "
        f"(SO_RCVBUF {SLOW_RCVBUF // 1024} KiB); phases capped at {args.phase_cap:.0f} s",
        flush=True,
    )

    scratch_root = Path(tempfile.mkdtemp(prefix="pypicached-bench-"))
    runs: dict[str, list[PhaseResult]] = {}
    try:
        with serving(FakeIndex(pages)) as upstream, contextlib.ExitStack() as stack:
            codes = []
            if args.only != "current":
                codes.append(stack.enter_context(reference_code(args.reference, scratch_root)))
            if args.only != "reference":
                codes.append(current_code())
            for code in codes:
                runs[code.label] = measure(code, args.python, upstream, scratch_root, args.phase_cap)
        report(runs)
    finally:
        shutil.rmtree(scratch_root, ignore_errors=True)


if __name__ == "__main__":
    main()
