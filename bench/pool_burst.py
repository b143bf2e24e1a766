"""A second burst of creates, after a first one: served warm by a pool that grew with
demand, against a pool of fixed size.

Run as root after ``make setup``::

    .venv/bin/python bench/pool_burst.py [--burst 8] [--size 2] [--most 16]

For each pool (``COVE_POOL_ADAPTIVE_MAX`` = ``--most``, then 0: fixed at ``--size``):
a first burst of ``--burst`` creates (one after the other through the official SDK),
a pause until the pool's keeper is done (the pool as big as it will get and the host
settled), then a second burst. Prints, for the second burst, how many creates a
pooled sandbox served and their create p50/p95 (ms); the first burst's p50 beside it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig
from lifecycle import pct  # bench/lifecycle.py
from pool import KEY, pooled, settled, unowned, wait_until, without_pool  # bench/pool.py

from cove.testing import ServerProcess


def burst(daytona: Daytona, n: int) -> tuple[list[float], list[str]]:
    """``n`` creates one after the other: (create ms, ids)."""
    times, ids = [], []
    for _ in range(n):
        start = time.perf_counter()
        sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
        times.append((time.perf_counter() - start) * 1000)
        ids.append(sb.id)
    return times, ids


def steady(server: ServerProcess, seconds: float = 30) -> None:
    """Wait until the pool's size stopped changing (its keeper is done) and the host
    is quiet."""
    deadline = time.monotonic() + seconds
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(pooled(server))
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > 2:
            break
        time.sleep(0.1)
    settled()


def run(size: int, most: int, n: int) -> tuple[list[float], list[float], int, int]:
    """(first burst ms, second burst ms, pooled before the second, of it served warm)."""
    data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-burst-"))
    server = ServerProcess(data_dir, api_key=KEY, env={
        "COVE_POOL_SIZE": str(size), "COVE_POOL_ADAPTIVE_MAX": str(most)})  # fmt: skip
    server.start()
    try:
        daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
        wait_until(lambda: len(pooled(server)) >= size)
        steady(server)
        first, made = burst(daytona, n)
        steady(server)
        ready = pooled(server)
        second, ids = burst(daytona, n)
        for sandbox_id in made + ids:
            daytona.delete(daytona.get(sandbox_id))
        return first, second, len(ready), len(ready & set(ids))
    finally:
        server.delete_all_sandboxes()
        if unowned(server):
            without_pool(server)
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=8, help="creates per burst")
    parser.add_argument("--size", type=int, default=2, help="COVE_POOL_SIZE")
    parser.add_argument("--most", type=int, default=16, help="COVE_POOL_ADAPTIVE_MAX")
    args = parser.parse_args()
    rows = [(f"grows to {args.most}", run(args.size, args.most, args.burst)),
            (f"fixed at {args.size}", run(args.size, 0, args.burst))]
    print(f"pool of {args.size}, bursts of {args.burst} creates; times in ms")  # noqa: T201
    print(f"{'':<16} {'pooled':>7} {'warm':>5} {'p50':>8} {'p95':>8}  first burst p50")  # noqa: T201
    for name, (first, second, ready, warm) in rows:
        print(f"{name:<16} {ready:>7} {warm:>5} {statistics.median(second):8.1f} "  # noqa: T201
              f"{pct(second, 0.95):8.1f}  {statistics.median(first):8.1f}")


if __name__ == "__main__":
    main()
