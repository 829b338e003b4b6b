"""
What HAProxy and a second node buy on one machine, measured against one node directly.

Starts, in a scratch directory and on loopback only: a static upstream index
(``python -m http.server``), two pypicached nodes (``twistd pypicached``) and Debian's HAProxy
with the shipped deploy/haproxy.cfg, its first two server lines pointed at the nodes' free ports
(``tests.haproxy_config.with_servers``, the one change the tests make too). It picks projects
that HAProxy hashes to each node, warms both nodes, then measures in the same run, through
HAProxy and against the first node directly (the reference, warmed with the same projects):

- warm index pages per second: wrk with pip's headers, over 16 project pages (8 per node);
- warm file throughput: 4 clients (curl) at once, each downloading its own 512 MB file, two
  files hashed to each node.

It prints both figures and their ratios, and the CPU each process used during each
measurement (cores used = CPU seconds / wall seconds): on a machine with few cores the gain is
bounded by the load generator and HAProxy sharing them with the nodes.

    make bench-cluster [BENCH_ARGS="--size-mb 512 --duration 10 --rounds 3"]

Run it as root (the shipped file switches HAProxy to the haproxy user). It needs about five
times ``--size-mb`` times 4 of scratch disk, under ``--dir`` (default: /var/tmp).
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.haproxy_config import BACKEND, SHIPPED, servers, with_servers

PIP_HEADERS = {
    "Accept": "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01",
    "Accept-Encoding": "gzip, deflate",
    "User-Agent": "pip/26.0 bench",
}
TICKS = os.sysconf("SC_CLK_TCK")
CHUNK = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A long-running child with its output in a log file, and the CPU it has used."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(log.parent))

    def cpu(self) -> float:
        """CPU seconds (user + system) so far, all threads."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise SystemExit(f"{self.name} exited ({self.popen.returncode}):\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


def wait_until(condition: Callable[[], bool], what: str, procs: list[Proc], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for proc in procs:
            proc.check()
        if condition():
            return
        time.sleep(0.1)
    raise SystemExit(f"gave up waiting for {what}")


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def node_states(sock: Path) -> dict[str, str]:
    """Each node's status in HAProxy's ``show stat``."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(sock))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
    except OSError:
        return {}
    lines = data.decode().lstrip("# ").splitlines()
    header = lines[0].split(",") if lines else []
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    return {
        r["svname"]: r["status"]
        for r in rows
        if r.get("pxname") == BACKEND and r["svname"] not in ("BACKEND", "FRONTEND")
    }


def get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], int]:
    """Status, headers (lower-case names) and body length of one request, body drained."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request(method, path, headers=PIP_HEADERS)
        response = conn.getresponse()
        size = 0
        while chunk := response.read(CHUNK):
            size += len(chunk)
        return response.status, {k.lower(): v for k, v in response.getheaders()}, size
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# The upstream


def write_file(path: Path, size: int, seed: str) -> str:
    """``size`` bytes (a random MiB, repeated), written and hashed as they go; the sha256."""
    block = random.Random(seed).randbytes(CHUNK)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        left = size
        while left:
            piece = block[: min(left, CHUNK)]
            out.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


def publish(root: Path, project: str, size: int) -> str:
    """A project with one wheel of ``size`` bytes in a static PEP 503 tree; the file's name."""
    filename = f"{project.replace('-', '_')}-1.0-py3-none-any.whl"
    (root / "files").mkdir(exist_ok=True)
    sha256 = write_file(root / "files" / filename, size, project)
    page = root / "simple" / project
    page.mkdir(parents=True, exist_ok=True)
    (page / "index.html").write_text(f'<a href="../../files/{filename}#sha256={sha256}">{filename}</a>\n')
    return filename


# --------------------------------------------------------------------------------------------
# Load


def wrk(port: int, paths: list[str], seconds: int, scratch: Path) -> float:
    """Requests per second wrk gets over ``paths`` in turn; fails on any error answer."""
    script = scratch / "paths.lua"
    lines = [f'wrk.headers["{k}"] = "{v}"' for k, v in PIP_HEADERS.items()]
    lines += ["local paths = {" + ", ".join(f'"{p}"' for p in paths) + "}", "local i = 0"]
    lines += ["request = function()", "  i = i % #paths + 1", '  return wrk.format("GET", paths[i])', "end"]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", str(script), f"http://127.0.0.1:{port}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    return float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec:")))


def downloads(port: int, paths: list[str], size: int) -> float:
    """Bytes per second of one curl per path, all at once, each checked for its full size."""
    started = time.monotonic()
    clients = [
        subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}", f"http://127.0.0.1:{port}{p}"],
                         stdout=subprocess.PIPE, text=True)
        for p in paths
    ]  # fmt: skip
    results = [c.communicate()[0] for c in clients]
    wall = time.monotonic() - started
    if any(r != f"200 {size}" for r in results):
        raise SystemExit(f"a download failed: {results}")
    return size * len(paths) / wall


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (every process, this benchmark's or not)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / TICKS


def measured(run: Callable[[], float], procs: list[Proc]) -> tuple[float, dict[str, float]]:
    """
    The figure ``run`` returns, and the cores each process, the load generator, and everything
    else on the machine (other users' work) used meanwhile.
    """
    before = {p.name: p.cpu() for p in procs}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = machine_busy()
    started = time.monotonic()
    figure = run()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cores = {p.name: (p.cpu() - before[p.name]) / wall for p in procs}
    cores["load generator"] = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) / wall
    cores["anything else"] = max(0.0, (machine_busy() - busy) / wall - sum(cores.values()))
    return figure, cores


# --------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=512, help="size of each of the 4 large files (MB)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per page-rate run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each measurement, in alternating order")
    parser.add_argument("--dir", default="/var/tmp", help="where the scratch directory goes")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the shipped haproxy.cfg switches HAProxy to the haproxy user")
    for tool in ("wrk", "curl", "haproxy"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: `make bench-cluster` installs wrk and haproxy")
    size = args.size_mb * 1000 * 1000
    scratch = Path(tempfile.mkdtemp(prefix="pypicached-bench-", dir=args.dir))
    procs: list[Proc] = []
    try:
        run(scratch, size, args, procs)
    finally:
        for proc in reversed(procs):
            proc.stop()
        shutil.rmtree(scratch, ignore_errors=True)


def run(scratch: Path, size: int, args: argparse.Namespace, procs: list[Proc]) -> None:
    upstream_root = scratch / "upstream"
    (upstream_root / "simple").mkdir(parents=True)
    upstream_port = free_port()
    procs.append(Proc("upstream", [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(upstream_root),
                                   str(upstream_port)], scratch / "upstream.log"))  # fmt: skip
    twistd = str(Path(sys.executable).with_name("twistd"))
    shipped = servers(SHIPPED.read_text())[:2]
    ports = [free_port() for _ in shipped]
    config = scratch / "haproxy.cfg"
    config.write_text(with_servers(SHIPPED.read_text(), [f"127.0.0.1:{p}" for p in ports]))
    nodes = {}
    for server, port in zip(shipped, ports):
        argv = [
            twistd,
            "--nodaemon",
            "--pidfile=",
            "pypicached",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--cache-dir",
            str(scratch / server.name),
            "--upstream",
            f"http://127.0.0.1:{upstream_port}/simple/",
        ]
        nodes[server.name] = port
        procs.append(Proc(server.name, argv, scratch / f"{server.name}.log"))
    frontend = free_port()
    sock = scratch / "admin.sock"
    env = {**os.environ, "PYPICACHED_FRONTEND": f"127.0.0.1:{frontend}", "PYPICACHED_HAPROXY_SOCKET": str(sock)}
    procs.append(Proc("haproxy", ["haproxy", "-db", "-f", str(config)], scratch / "haproxy.log", env=env))
    wait_until(lambda: all(listening(p) for p in [upstream_port, *ports]), "the upstream and the nodes", procs)
    wait_until(
        lambda: set(node_states(sock).values()) == {"UP"} and len(node_states(sock)) == 2, "both nodes UP", procs
    )

    # Projects HAProxy sends to each node: a non-normalized name gets its 301 from the node that
    # owns the project, without asking the upstream (X-Pypicached-Node says which).
    per_node: dict[str, list[str]] = {name: [] for name in nodes}
    for i in range(200):
        _, headers, _ = get(frontend, f"/simple/Bench_{i}/")
        owner = per_node[headers["x-pypicached-node"]]
        if len(owner) < 8:
            owner.append(f"bench-{i}")
        if all(len(names) == 8 for names in per_node.values()):
            break
    else:
        raise SystemExit(f"could not find 8 projects per node: {per_node}")
    print(f"Writing 4 files of {size / 1e6:.0f} MB and 12 small ones under {scratch} ...", flush=True)
    big: set[str] = set()  # the large files' names
    for names in per_node.values():
        for i, project in enumerate(names):
            filename = publish(upstream_root, project, size if i < 2 else 1000)
            if i < 2:
                big.add(filename)
    pages = [f"/simple/{p}/" for names in per_node.values() for p in names]

    print("Warming the nodes (through HAProxy, and the first node directly) ...", flush=True)
    direct = nodes[shipped[0].name]
    files: list[str] = []
    for port in (frontend, direct):
        for page in pages:
            status, _, body = get(port, page)
            assert status == 200, (page, status)
    # the file links, as the nodes serve them (relative, under /packages/+f/<key>/<file>)
    for page in pages:
        conn = http.client.HTTPConnection("127.0.0.1", frontend)
        conn.request("GET", page, headers={"Accept": "text/html"})
        text = conn.getresponse().read().decode()
        conn.close()
        href = text.split('href="', 1)[1].split('"', 1)[0].split("#", 1)[0]
        if href.rsplit("/", 1)[-1] in big:
            files.append("/" + href.replace("../", ""))
    assert len(files) == 4, files
    for port in (frontend, direct):
        for path in files:
            status, _, body = get(port, path)
            assert status == 200 and body == size, (path, status, body)
        for path in files + pages:
            status, headers, _ = get(port, path, "HEAD")
            assert status == 200 and headers.get("x-pypi-cache") == "HIT", (port, path, headers)

    running = [p for p in procs if p.name != "upstream"]
    results: dict[str, dict[str, list]] = {
        "pages": {"direct": [], "haproxy": []},
        "files": {"direct": [], "haproxy": []},
    }
    targets = [("direct", direct), ("haproxy", frontend)]
    for round_ in range(args.rounds):
        for target, port in targets if round_ % 2 == 0 else targets[::-1]:  # alternating, against drift
            print(f"Round {round_ + 1}: pages, {target} ...", flush=True)
            results["pages"][target].append(
                measured(lambda port=port: wrk(port, pages, args.duration, scratch), running)
            )
            print(f"Round {round_ + 1}: 4 x {size / 1e6:.0f} MB, {target} ...", flush=True)
            results["files"][target].append(measured(lambda port=port: downloads(port, files, size), running))
    report(results, args, size)


def report(results: dict[str, dict[str, list]], args: argparse.Namespace, size: int) -> None:
    print()
    print(f"Machine: {os.cpu_count()} cores; {args.rounds} rounds in alternating order; figures are the means.")
    print()
    print("| measurement | one node directly | HAProxy + 2 nodes | ratio |")
    print("| --- | --- | --- | --- |")
    rows = (("pages", "warm pages/s (wrk, 32 connections, 16 projects)", 1.0, "{:,.0f}"),
            ("files", f"warm {size / 1e6:.0f} MB files, 4 clients, MB/s", 1e-6, "{:,.0f}"))  # fmt: skip
    for key, label, scale, fmt in rows:
        direct = statistics.mean(f for f, _ in results[key]["direct"]) * scale
        through = statistics.mean(f for f, _ in results[key]["haproxy"]) * scale
        print(f"| {label} | {fmt.format(direct)} | {fmt.format(through)} | {through / direct:.2f} |")
    print()
    print("CPU cores used during each measurement (CPU seconds / wall seconds, mean over the rounds;")
    print("'anything else': the rest of the machine's work meanwhile, not this benchmark's):")
    print()
    names = ["node1", "node2", "haproxy", "load generator", "anything else"]
    print("| measurement | " + " | ".join(names) + " | this benchmark |")
    print("| --- |" + " --- |" * (len(names) + 1))
    for key in ("pages", "files"):
        for target in ("direct", "haproxy"):
            cores = {n: statistics.mean(c[n] for _, c in results[key][target]) for n in names}
            ours = sum(cores[n] for n in names[:-1])
            print(f"| {key}, {target} | " + " | ".join(f"{cores[n]:.2f}" for n in names) + f" | {ours:.2f} |")


if __name__ == "__main__":
    main()
