"""pip, uv, poetry and pdm through a real pypicached daemon against the real upstream index.

``make e2e`` runs this (it needs the network, so it is not part of ``make test``).  For each
tool it starts the daemon on its defaults (the public index as upstream) with an empty cache,
installs a dozen popular projects through it twice, cold then warm, each time with an empty
client cache, and prints a table: wall time and the ``X-Pypi-Cache`` statuses of the requests
the daemon answered (from its access log).  Exit status 1 if any install failed, or if a warm
run needed the upstream (anything other than ``HIT``).

    .venv/bin/python tests/e2e.py [--tools pip,uv,poetry,pdm] [--packages a,b,...] [--keep] [--log FILE]
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.installers import clean_env, tool_bin  # noqa: E402

PACKAGES = [
    "requests",
    "urllib3",
    "certifi",
    "idna",
    "charset-normalizer",
    "six",
    "python-dateutil",
    "packaging",
    "pyyaml",
    "click",
    "jinja2",
    "attrs",
]
TOOLS = ["pip", "uv", "poetry", "pdm"]
STATUSES = ["HIT", "MISS", "JOINED", "REVALIDATED", "EXPIRED", "STALE", "ERROR"]
# The daemon's access log line (text format): client "METHOD target" status bytes cache ...
ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+)" (?P<status>\d+|aborted) (?P<bytes>\d+) (?P<cache>\S+) ')


class Daemon:
    """``twistd --nodaemon pypicached`` on a free loopback port, its log read line by line."""

    def __init__(self, cache_dir: Path) -> None:
        cache_dir.mkdir(parents=True)
        # twistd from this interpreter, with this checkout's pypicached first on the path
        argv = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "--nodaemon", "--pidfile=", "pypicached",
            "--listen", "tcp:0:interface=127.0.0.1", "--cache-dir", str(cache_dir),
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.process = subprocess.Popen(
            argv, cwd=cache_dir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        started = self.wait_for(lambda line: re.search(r"ProxySite starting on (\d+)", line), 60)
        self.port = int(re.search(r"ProxySite starting on (\d+)", started).group(1))  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._marks = 0

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, predicate: Callable[[str], object], timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.process.poll() is not None and self.lines.empty():
                raise RuntimeError("daemon log never showed the expected line:\n" + "\n".join(self.log[-30:]))
            try:
                line = self.lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            self.log.append(line)
            if predicate(line):
                return line

    def requests_until_mark(self) -> list[re.Match[str]]:
        """Access-log entries up to now: a marker request is logged after everything before it."""
        self._marks += 1
        marker = f"/e2e-mark-{self._marks}"
        start = len(self.log)
        try:
            urllib.request.urlopen(self.base_url + marker, timeout=30).read()
        except urllib.error.HTTPError:
            pass
        self.wait_for(lambda line: marker in line, 30)
        entries = [ACCESS.search(line) for line in self.log[start:] if marker not in line]
        return [m for m in entries if m is not None]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def commands(tool: str, index_url: str, work: Path, packages: list[str]) -> Iterator[tuple[list[str], Path]]:
    """The commands a tool runs (with the directory to run them in) for one install."""
    work.mkdir(parents=True)
    if tool == "pip":
        python = tool_bin("pip", "python")
        yield [
            python, "-m", "pip", "install", "--isolated", "--no-input", "--no-cache-dir",
            "--disable-pip-version-check", "--progress-bar=off", "--index-url", index_url,
            "--target", str(work / "target"), *packages,
        ], work  # fmt: skip
    elif tool == "uv":
        yield [
            tool_bin("uv"), "pip", "install", "--no-config", "--no-cache", "--no-progress",
            "--index-url", index_url, "--python", tool_bin("uv", "python"),
            "--target", str(work / "target"), *packages,
        ], work  # fmt: skip
    elif tool == "poetry":
        deps = ", ".join(f'"{p}"' for p in packages)
        (work / "pyproject.toml").write_text(
            f'[project]\nname = "e2e"\nversion = "0"\nrequires-python = ">=3.11"\ndependencies = [{deps}]\n'
            "\n[tool.poetry]\npackage-mode = false\n"
            f'\n[[tool.poetry.source]]\nname = "lan"\nurl = "{index_url}"\npriority = "primary"\n'
        )
        yield [tool_bin("poetry"), "lock", "--no-interaction"], work
        yield [tool_bin("poetry"), "install", "--no-interaction"], work
    elif tool == "pdm":
        deps = ", ".join(f'"{p}"' for p in packages)
        (work / "pyproject.toml").write_text(
            f'[project]\nname = "e2e"\nversion = "0"\nrequires-python = ">=3.11"\ndependencies = [{deps}]\n'
            "\n[tool.pdm]\ndistribution = false\n"
            f'\n[[tool.pdm.source]]\nname = "pypi"\nurl = "{index_url}"\n'
        )
        yield [tool_bin("pdm"), "lock"], work
        yield [tool_bin("pdm"), "install"], work
    else:
        raise ValueError(f"unknown tool {tool!r}")


def run_phase(tool: str, daemon: Daemon, work: Path, packages: list[str]) -> tuple[bool, float, Counter[str], int]:
    """One install with empty client caches; (ok, seconds, statuses, failed responses)."""
    started = time.monotonic()
    ok = True
    for step, (argv, cwd) in enumerate(commands(tool, daemon.base_url + "/simple/", work, packages)):
        env = clean_env(work / f"home{step}")  # a fresh client cache for every command
        env["UV_PYTHON_DOWNLOADS"] = "never"
        env["POETRY_VIRTUALENVS_USE_POETRY_PYTHON"] = "true"
        done = subprocess.run(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900
        )
        if done.returncode != 0:
            ok = False
            sys.stderr.write(f"\n--- {tool}: {' '.join(argv)} failed ({done.returncode})\n{done.stdout}{done.stderr}\n")
            break
    seconds = time.monotonic() - started
    entries = daemon.requests_until_mark()
    statuses = Counter(m["cache"] for m in entries)
    failed = sum(1 for m in entries if m["status"] == "aborted" or int(m["status"]) >= 400)
    return ok, seconds, statuses, failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument("--packages", default=",".join(PACKAGES))
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--log", type=Path, help="write the daemons' logs to this file")
    args = parser.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    packages = [p for p in args.packages.split(",") if p]
    scratch = Path(tempfile.mkdtemp(prefix="pypicached-e2e-"))
    rows: list[tuple[str, str, bool, float, Counter[str], int]] = []
    try:
        for tool in tools:
            daemon = Daemon(scratch / tool / "cache")
            try:
                for phase in ("cold", "warm"):
                    print(f"{tool} {phase} ...", flush=True)
                    ok, seconds, statuses, failed = run_phase(tool, daemon, scratch / tool / phase, packages)
                    rows.append((tool, phase, ok, seconds, statuses, failed))
            finally:
                daemon.stop()
                if args.log:
                    with args.log.open("a") as log:
                        log.write(f"--- {tool}\n" + "\n".join(daemon.log) + "\n")
    finally:
        if args.keep:
            print(f"scratch directory: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    print(f"\n{len(packages)} projects: {', '.join(packages)}\n")
    header = ["tool", "phase", "result", "wall", "requests", *STATUSES, "failed"]
    table = [header]
    bad = False
    for tool, phase, ok, seconds, statuses, failed in rows:
        total = sum(statuses.values())
        other = total - sum(statuses[s] for s in STATUSES)
        cells = [tool, phase, "ok" if ok else "FAILED", f"{seconds:.1f}s", str(total)]
        cells += [str(statuses[s]) for s in STATUSES]
        cells.append(str(failed + other))
        table.append(cells)
        warm_missed = phase == "warm" and any(statuses[s] for s in STATUSES if s != "HIT")
        bad = bad or not ok or failed > 0 or warm_missed
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for i, row in enumerate(table):
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")
        if i == 0:
            print("| " + " | ".join("-" * w for w in widths) + " |")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
