"""Noisy neighbours: the server's memory while sandboxes print a lot, and how a quiet
sandbox fares meanwhile.

Run as root after ``make setup``::

    .venv/bin/python bench/noisy.py [--n 50] [--flooders 20]

Prints, from one run: the server's RSS (baseline and peak growth) during one
``execute`` printing 1 GiB and during ``--flooders`` such calls at once, with
their wall time against the same print to /dev/null inside the sandbox
(baseline); and ``execute("true")`` p50/p95 on a quiet sandbox, alone and while
a neighbour floods.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from cove.testing import RssWatch, ServerProcess

KEY = "bench-key"
MiB = 1 << 20
PRINT = "head -c 1G /dev/zero | tr '\\0' x"


class Bench:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.http = httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=1800)

    def create(self) -> str:
        r = self.http.post(f"{self.server.api_url}/sandbox", json={"autoStopInterval": 0})
        r.raise_for_status()
        return str(r.json()["id"])

    def execute(self, sandbox_id: str, command: str) -> dict:
        r = self.http.post(f"{self.server.url}/toolbox/{sandbox_id}/process/execute",
                           json={"command": command})  # fmt: skip
        r.raise_for_status()
        return dict(r.json())

    def timed(self, sandbox_id: str, command: str) -> float:
        start = time.perf_counter()
        self.execute(sandbox_id, command)
        return time.perf_counter() - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def quiet_latency(bench: Bench, sandbox_id: str, n: int) -> list[float]:
    return [bench.timed(sandbox_id, "true") * 1000 for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--flooders", type=int, default=20)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-data-"))
    server = ServerProcess(data_dir, api_key=KEY)
    server.start()
    assert server.proc is not None
    try:
        bench = Bench(server)
        with ThreadPoolExecutor(4) as pool:
            ids = list(pool.map(lambda _: bench.create(), range(args.flooders + 1)))
        quiet, flooders = ids[0], ids[1:]
        raw = bench.timed(flooders[0], f"{PRINT} > /dev/null")
        with RssWatch(server.proc.pid) as one:
            single = bench.timed(flooders[0], PRINT)
        with RssWatch(server.proc.pid) as many, ThreadPoolExecutor(len(flooders)) as pool:
            start = time.perf_counter()
            list(pool.map(lambda sid: bench.execute(sid, PRINT), flooders))
            together = time.perf_counter() - start
        alone = quiet_latency(bench, quiet, args.n)
        stop = threading.Event()

        def flood() -> None:
            while not stop.is_set():
                bench.execute(flooders[0], PRINT)

        neighbour = threading.Thread(target=flood)
        neighbour.start()
        time.sleep(1)
        noisy = quiet_latency(bench, quiet, args.n)
        stop.set()
        neighbour.join()
    finally:
        server.delete_all_sandboxes()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"server RSS at rest: {one.base / MiB:.0f} MiB")  # noqa: T201
    print(f"print 1 GiB to /dev/null inside (baseline): {raw:6.2f} s")  # noqa: T201
    print(f"execute printing 1 GiB: {single:6.2f} s, "  # noqa: T201
          f"server RSS peak +{one.growth / MiB:.0f} MiB")
    print(f"{len(flooders)} executes printing 1 GiB at once: {together:6.2f} s, "  # noqa: T201
          f"server RSS peak +{many.growth / MiB:.0f} MiB")
    print(f"execute('true') on a quiet sandbox, n={args.n}: "  # noqa: T201
          f"alone p50 {statistics.median(alone):.1f} ms p95 {pct(alone, 0.95):.1f} ms; "
          f"neighbour flooding p50 {statistics.median(noisy):.1f} ms "
          f"p95 {pct(noisy, 0.95):.1f} ms")


if __name__ == "__main__":
    main()
