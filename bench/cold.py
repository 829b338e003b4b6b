"""
The cold path: what a big project page costs the proxy on its first request (issue #23).

One nginx (Debian's) is both the upstream and the yardstick. As upstream it serves
project pages from files (bench/cold_pages.py makes them: 1, 6 and 20 MB, each in
HTML and in JSON, shaped like the public index's), with its own ETags and 304s; as
yardstick it serves, in the same run, the very bytes the proxy answered. A page
fetched cold through the proxy (one daemon of this checkout, a fresh name per round
so the cache is cold each time) against the same bytes straight from nginx gives
the time the proxy adds, and per MB of the answer; the target is 15 ms/MB + 20 ms.
What each fetch added to the daemon's peak RSS (its VmHWM, reset by /proc/PID/clear_refs,
less its RSS before: the pages fetched before stay in the records it keeps in memory)
is given too. With --reference REV the pages are measured for that revision's code
too, first, in the same run (its tree exported with git archive).

While each 20 MB page is fetched cold, a second client asks for a small warm page
over and over: its slowest answer bounds how long the event loop was held (target
50 ms). Then one revalidation of a changed page (a file appended upstream), and
pip (the pinned pip of .venv-tools/pip, isolated as the tests run it) downloading
one wheel from each of 40 projects whose JSON pages are 0.5-6 MB: through a fresh
proxy against straight at nginx (target: at most 1.2 times).

    .venv/bin/python bench/cold.py [--rounds 3] [--no-pip] [--no-install]
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from cold_pages import HTML_TYPE, JSON_TYPE, MB, anchor, entry, page_of_size, real_entry
from page_memory import Code, Daemon, current_code
from page_rps import Nginx, ensure_tools, load_average, tool_version

from tests.installers import clean_env
from tests.wheels import build_wheel

SIZES = (1, 6, 20)
PER_MB, FIXED = 15.0, 20.0
STALL_TARGET = 50.0
PIP_RATIO = 1.2
PIP_PROJECTS = 40
TTL = 2.0
REPO = Path(__file__).resolve().parent.parent


def page_name(size: int, as_json: bool) -> str:
    return f"{'j' if as_json else 'h'}{size}"


_LOCATIONS = f"""
        location ~ ^/simple/(h[0-9]+)(?:-[a-z]+[0-9]+)?/$ {{ default_type {HTML_TYPE}; try_files /up/$1.html =404; }}
        location ~ ^/simple/([jp][0-9]+)(?:-[a-z]+[0-9]+)?/$ {{ default_type {JSON_TYPE}; try_files /up/$1.json =404; }}
        location /ref/ {{ default_type application/octet-stream; }}
        location /packages/ {{ default_type application/octet-stream; }}
"""


def get(
    port: int, path: str, accept: str, connection: http.client.HTTPConnection | None = None
) -> tuple[float, bytes, str]:
    """Seconds to the last byte, the body and the cache's verdict, for one GET (on ``connection`` if given)."""
    conn = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    conn.request("GET", path, headers={"Accept": accept, "Accept-Encoding": "identity"})
    response = conn.getresponse()
    body = response.read()
    took = time.perf_counter() - started
    if connection is None:
        conn.close()
    if response.status != 200:
        raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
    return took, body, response.getheader("X-Pypi-Cache") or ""


class Prober(threading.Thread):
    """A client asking for a small warm page over and over, keeping each answer's time."""

    def __init__(self, port: int, path: str) -> None:
        super().__init__(daemon=True)
        self._port, self._path = port, path
        self.times: list[float] = []
        self._done = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self._port, timeout=60)
        while not self._done.is_set():
            self.times.append(get(self._port, self._path, JSON_TYPE, conn)[0])

    def stop(self) -> list[float]:
        self._done.set()
        self.join(60)
        return self.times


def peak_rss_mb(daemon: Daemon) -> float:
    return daemon.kb("VmHWM") * 1024 / MB


def reset_peak(daemon: Daemon) -> None:
    with contextlib.suppress(OSError):  # "5" resets VmHWM to the current RSS
        Path(f"/proc/{daemon.pid}/clear_refs").write_text("5")


def settle(daemon: Daemon, project: str) -> None:
    """Until the page's record is stored (the work after the answer counts in its peak RSS)."""
    deadline = time.monotonic() + 30
    while not list((daemon.log_path.parent / "cache").glob(f"pages/*/simple/{project}.json")):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{project}'s record was never stored:\n{daemon.log_tail()}")
        time.sleep(0.02)


def cold_page(daemon: Daemon, web: Nginx, name: str, alias: str, as_json: bool) -> dict[str, float]:
    """One cold fetch through the proxy, and the same bytes from nginx."""
    accept = JSON_TYPE if as_json else HTML_TYPE
    reset_peak(daemon)
    before = daemon.kb("VmRSS") * 1024 / MB
    took, body, verdict = get(daemon.port, f"/simple/{alias}/", accept)
    if verdict != "MISS":
        raise RuntimeError(f"{alias}: X-Pypi-Cache {verdict}, not a cold fetch")
    settle(daemon, alias)
    rss = peak_rss_mb(daemon) - before  # what this page added: earlier pages stay in the records kept in memory
    ref = web.dir / "root" / "ref" / alias
    ref.write_bytes(body)
    ref.chmod(0o644)
    direct, same, _ = get(web.port, f"/ref/{alias}", accept)
    assert same == body
    return {"proxy": took, "nginx": direct, "mb": len(body) / MB, "rss": rss}


def measure_pages(daemon: Daemon, web: Nginx, rounds: int, tag: str = "r") -> dict[str, list[dict[str, float]]]:
    results: dict[str, list[dict[str, float]]] = {}
    get(daemon.port, "/simple/p0/", JSON_TYPE)  # the prober's warm page
    for round_number in range(rounds):
        for size in SIZES:
            for as_json in (False, True):
                name = page_name(size, as_json)
                prober = Prober(daemon.port, "/simple/p0/") if size == max(SIZES) else None
                if prober:
                    prober.start()
                    time.sleep(0.2)
                run = cold_page(daemon, web, name, f"{name}-{tag}{round_number}", as_json)
                if prober:
                    times = prober.stop()
                    run["stall"] = max(times) * 1000
                    run["idle"] = statistics.median(times) * 1000
                results.setdefault(name, []).append(run)
                print(
                    f"  round {round_number + 1}: {name:4} {run['mb']:5.1f} MB  proxy {run['proxy'] * 1000:7.0f} ms"
                    f"  nginx {run['nginx'] * 1000:5.1f} ms  peak RSS +{run['rss']:4.0f} MB"
                    + (f"  slowest warm answer meanwhile {run['stall']:.0f} ms" if "stall" in run else ""),
                    flush=True,
                )
    return results


def revalidate(daemon: Daemon, web: Nginx, name: str, as_json: bool) -> dict[str, float]:
    """A page cached, then changed upstream (a file appended): the proxy's revalidation against nginx."""
    accept = JSON_TYPE if as_json else HTML_TYPE
    alias = f"{name}-r99"
    get(daemon.port, f"/simple/{alias}/", accept)
    upstream = web.dir / "root" / "up" / f"{name}.{'json' if as_json else 'html'}"
    old = upstream.read_bytes()
    try:
        added = entry(name, 10_000_001)
        if as_json:
            document = json.loads(old)
            document["files"].append(added)
            new = json.dumps(document, separators=(",", ":")).encode()
        else:
            new = old.replace(b"  </body>", anchor(added).encode() + b"  </body>", 1)
        temporary = upstream.with_suffix(".new")
        temporary.write_bytes(new)
        temporary.chmod(0o644)
        os.replace(temporary, upstream)
        time.sleep(TTL + 0.3)
        run = cold_page_expired(daemon, web, alias, accept)
    finally:
        upstream.write_bytes(old)
    return run


def cold_page_expired(daemon: Daemon, web: Nginx, alias: str, accept: str) -> dict[str, float]:
    took, body, verdict = get(daemon.port, f"/simple/{alias}/", accept)
    if verdict not in ("EXPIRED", "MISS"):
        raise RuntimeError(f"{alias}: X-Pypi-Cache {verdict} on the changed page")
    ref = web.dir / "root" / "ref" / f"{alias}-changed"
    ref.write_bytes(body)
    ref.chmod(0o644)
    direct, _, _ = get(web.port, f"/ref/{alias}-changed", accept)
    return {"proxy": took, "nginx": direct, "mb": len(body) / MB}


def pip_files(scratch: Path) -> tuple[dict[str, bytes], list[str]]:
    """40 projects' JSON pages of 0.5 to 6 MB, each with one real wheel, newest, that pip downloads."""
    files: dict[str, bytes] = {}
    names = []
    for i in range(PIP_PROJECTS):
        name = f"p{i}"
        size = 0.5 * MB + 5.5 * MB * (i / (PIP_PROJECTS - 1)) ** 2
        wheel = build_wheel(name, "9999.0", requires_python=">=3.8")
        path = f"/packages/{name}/{wheel.filename}"
        files[path] = wheel.data
        files[f"up/{name}.json"] = page_of_size(name, size, True, [real_entry(wheel.filename, wheel.data, path)])
        names.append(name)
    return files, names


def run_pip(index: str, names: list[str], scratch: Path) -> float:
    """Seconds for the pinned pip to download one wheel of each project, isolated, caches off."""
    pip = REPO / ".venv-tools" / "pip" / "bin" / "pip"
    target = Path(tempfile.mkdtemp(dir=scratch, prefix="pip-"))
    argv = [
        str(pip),
        "download",
        "--isolated",
        "--no-input",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--progress-bar=off",
        "--no-deps",
        "--only-binary=:all:",
        "--index-url",
        index,
        "-d",
        str(target),
        *names,
    ]
    started = time.perf_counter()
    done = subprocess.run(argv, env=clean_env(scratch / "home"), capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - started
    if done.returncode != 0 or len(list(target.iterdir())) != len(names):
        raise RuntimeError(f"pip failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return took


def report(results: dict[str, list[dict[str, float]]], revalidated: dict[str, dict[str, float]]) -> bool:
    """The table, medians over the rounds; whether every target was met."""
    met = True
    print("\npage  MB     proxy ms  nginx ms  added ms  added ms/MB  target ms  peak RSS added MB")
    for name, runs in results.items():
        mb = statistics.median(r["mb"] for r in runs)
        added = statistics.median((r["proxy"] - r["nginx"]) * 1000 for r in runs)
        target = PER_MB * mb + FIXED
        ok = added <= target
        if int(name[1:]) >= 6:
            met &= ok
        print(
            f"{name:5} {mb:5.1f} {statistics.median(r['proxy'] for r in runs) * 1000:9.0f}"
            f" {statistics.median(r['nginx'] for r in runs) * 1000:9.1f} {added:9.0f} {added / mb:12.1f}"
            f" {target:10.0f}{'' if ok else ' (over)':7} {max(r['rss'] for r in runs):8.0f}"
        )
    stalls = [r["stall"] for runs in results.values() for r in runs if "stall" in r]
    if stalls:
        idle = statistics.median(r["idle"] for runs in results.values() for r in runs if "idle" in r)
        print(
            f"slowest warm answer during a 20 MB cold page: {max(stalls):.0f} ms"
            f" (median {idle:.1f} ms; target {STALL_TARGET:.0f})"
        )
        met &= max(stalls) <= STALL_TARGET
    for name, run in revalidated.items():
        added = (run["proxy"] - run["nginx"]) * 1000
        print(
            f"revalidation of {name} changed upstream ({run['mb']:.1f} MB): proxy {run['proxy'] * 1000:.0f} ms,"
            f" added {added:.0f} ms, {added / run['mb']:.1f} ms/MB"
        )
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="cold fetches of each page [%(default)s]")
    parser.add_argument("--no-pip", action="store_true", help="leave out the pip runs")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install nginx if missing")
    parser.add_argument("--python", default=sys.executable, help="the daemon's interpreter [this one]")
    parser.add_argument("--reference", metavar="REV", help="also measure the pages with this git revision's code")
    args = parser.parse_args()
    tools = ensure_tools(not args.no_install)
    print(
        f"{tool_version([tools['nginx'], '-v'])}; Python {sys.version.split()[0]};"
        f" load average before: {load_average()}",
        flush=True,
    )
    scratch = Path(tempfile.mkdtemp(prefix="pypicached-cold-"))
    scratch.chmod(0o755)
    try:
        files: dict[str, bytes] = {}
        for size in SIZES:
            for as_json in (False, True):
                name = page_name(size, as_json)
                files[f"up/{name}.{'json' if as_json else 'html'}"] = page_of_size(name, size * MB, as_json)
        pip_pages, names = pip_files(scratch) if not args.no_pip else ({}, [])
        files.update(pip_pages or {"up/p0.json": page_of_size("p0", 10_000, True)})
        files["ref/.keep"] = b""
        with contextlib.ExitStack() as stack:
            web = Nginx(tools["nginx"], scratch / "nginx", files, _LOCATIONS, None, False)
            stack.callback(web.stop)
            upstream = f"http://127.0.0.1:{web.port}/simple/"
            started = lambda n, code=None: start_daemon(  # noqa: E731
                args.python, upstream, scratch / f"daemon-{n}", stack, code
            )
            if args.reference:
                print(f"\nreference {args.reference}:", flush=True)
                old = started("reference", reference_tree(args.reference, scratch))
                report(measure_pages(old, web, args.rounds, "ref"), {})
                old.stop()
                print(f"\n{current_code().label}:", flush=True)
            daemon = started(0)
            results = measure_pages(daemon, web, args.rounds)
            revalidated = {page_name(6, j): revalidate(daemon, web, page_name(6, j), j) for j in (False, True)}
            met = report(results, revalidated)
            if names:
                through = run_pip(f"http://127.0.0.1:{started(1).port}/simple/", names, scratch)
                direct = run_pip(upstream, names, scratch)
                print(
                    f"pip, {len(names)} projects of 0.5-6 MB, cold: through the proxy {through:.1f} s, "
                    f"straight at the upstream {direct:.1f} s: {through / direct:.2f}x (target {PIP_RATIO}x)"
                )
                met &= through / direct <= PIP_RATIO
        print(f"every target {'met' if met else 'NOT met'}; load average after: {load_average()}")
    finally:
        subprocess.run(["rm", "-rf", str(scratch)])


def start_daemon(
    python: str, upstream: str, scratch: Path, stack: contextlib.ExitStack, code: Code | None = None
) -> Daemon:
    scratch.mkdir()
    daemon = Daemon(python, code or current_code(), upstream, scratch, "--index-ttl", str(TTL), "--stale-if-slow", "0")
    stack.callback(daemon.stop)
    daemon.wait_ready()
    return daemon


def reference_tree(rev: str, scratch: Path) -> Code:
    """``rev``'s tree, exported (no worktree: this checkout's git bookkeeping is left alone)."""
    path = scratch / "reference"
    path.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(path)], input=archive, check=True)
    return Code(f"reference {rev}", path)


if __name__ == "__main__":
    main()
