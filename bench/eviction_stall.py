"""
How long does a housekeeping pass over a large cache stall the event loop?

Fills a scratch cache with N small files, then measures how late a 5 ms
LoopingCall fires: first with the loop idle (the reference, same run, same
machine), then while a pass scans all N files in the worker thread and evicts
half of them. Prints both worst stalls and their ratio.

    .venv/bin/python bench/eviction_stall.py [--files 100000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred

from pypicached.base.disk import thread_runner
from pypicached.cache.housekeeping import Budget, Housekeeper

TICK = 0.005


def fill(root: Path, count: int, size: int) -> None:
    data = b"x" * size
    now = time.time()
    for i in range(count):
        directory = root / "packages" / f"{i % 256:02x}" / f"{i // 256:04x}"
        if i % 256 == 0 or not directory.exists():
            directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"pkg-{i}.whl"
        path.write_bytes(data)
        os.utime(path, (now - i, now - i))


class Lateness:
    """The worst delay of a periodic call past its due time."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._last = time.monotonic()

    def tick(self) -> None:
        now = time.monotonic()
        self.worst = max(self.worst, now - self._last - TICK)
        self._last = now


async def measure(root: Path, count: int, size: int) -> None:
    idle = Lateness()
    loop = task.LoopingCall(idle.tick)
    loop.start(TICK)
    await task.deferLater(reactor, 2.0, lambda: None)
    loop.stop()

    busy = Lateness()
    loop = task.LoopingCall(busy.tick)
    loop.start(TICK)
    keeper = Housekeeper(
        root=root,
        budget=Budget(max_size=count * size // 2, min_free=0, inactive=10**9),
        clock=reactor,
        run_in_thread=thread_runner(reactor),
    )
    started = time.monotonic()
    result = await keeper.run()
    elapsed = time.monotonic() - started
    loop.stop()

    print(f"files scanned:              {count}")
    print(f"evicted:                    {result.evicted} files, {result.evicted_bytes / 2**20:.1f} MiB")
    print(f"pass duration:              {elapsed:.2f} s (in the worker thread)")
    print(f"worst loop stall, idle:     {idle.worst * 1000:.1f} ms (reference)")
    print(f"worst loop stall, in pass:  {busy.worst * 1000:.1f} ms")
    print(f"ratio in pass / idle:       {busy.worst / max(idle.worst, 1e-4):.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="pypicached-bench-"))
    try:
        started = time.monotonic()
        fill(scratch / "files", args.files, args.size)
        print(f"filled {args.files} files in {time.monotonic() - started:.1f} s")
        done = ensureDeferred(measure(scratch, args.files, args.size))
        done.addBoth(lambda r: (reactor.stop(), r)[1])
        reactor.run()
        if hasattr(done.result, "raiseException"):
            done.result.raiseException()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
