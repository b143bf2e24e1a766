"""Create throughput and the server's responsiveness under a burst of creates.

Run as root after ``make setup``::

    .venv/bin/python bench/throughput.py [--rounds 2] [--burst 100]

Prints, from one run, through the official async SDK (``AsyncDaytona``), every
sandbox new (cold, no pool):

- creates/s with 1, 10 and 50 concurrent clients (each client creates
  sandboxes one after another; the figure is sandboxes started per second of
  wall time), and the create-to-started p50/p95 a client saw;
- ``GET /api/health`` and ``process.exec("true")`` on a sandbox made beforehand:
  p50/p95 idle, then while ``--burst`` creates run at once (each probe sent one
  after another for as long as the burst lasts); and whether every create of the
  burst ended ``started`` (a create queues, it must not fail).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams, DaytonaConfig, DaytonaError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.nettools import sandbox_pool  # noqa: E402

from cove.testing import ServerProcess  # noqa: E402

KEY = "bench-key"
PARAMS = CreateSandboxFromSnapshotParams(auto_stop_interval=0)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def p50_p95(values: list[float]) -> str:
    if not values:
        return "      -         -"
    return f"{statistics.median(values):7.1f}  {pct(values, 0.95):8.1f}"


async def timed(coro: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = await coro  # type: ignore[misc]
    return (time.perf_counter() - start) * 1000, result


async def delete_all(daytona: AsyncDaytona, boxes: list) -> None:
    sem = asyncio.Semaphore(10)

    async def one(box: object) -> None:
        async with sem:
            await box.delete()  # type: ignore[attr-defined]

    await asyncio.gather(*(one(b) for b in boxes), return_exceptions=True)


async def creates_per_second(daytona: AsyncDaytona, clients: int, per_client: int
                             ) -> tuple[float, list[float], int]:  # fmt: skip
    """(sandboxes started per second, each create's ms, failures)."""
    made: list = []
    latencies: list[float] = []
    failures = 0

    async def client() -> None:
        nonlocal failures
        for _ in range(per_client):
            try:
                ms, box = await timed(daytona.create(PARAMS, timeout=300))
            except Exception:  # noqa: BLE001 - counted and shown
                failures += 1
                continue
            made.append(box)
            latencies.append(ms)

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - start
    await delete_all(daytona, made)
    return len(made) / wall, latencies, failures


async def probe(http: httpx.AsyncClient, box: object, until: asyncio.Event, n: int
                ) -> tuple[list[float], list[float]]:  # fmt: skip
    """Health and exec round trips, one after another: ``n`` of each, or (with
    ``until``) as many as fit before it is set."""
    health, execs = [], []
    while (not until.is_set()) if n == 0 else len(health) < n:
        ms, reply = await timed(http.get("/api/health"))
        assert reply.status_code == 200  # type: ignore[attr-defined]
        health.append(ms)
        try:
            ms, result = await timed(box.process.exec("true"))  # type: ignore[attr-defined]
        except DaytonaError as exc:  # shown, and the probe goes on
            print(f"  exec failed: {exc}"[:200])  # noqa: T201
            continue
        assert result.exit_code == 0  # type: ignore[attr-defined]
        execs.append(ms)
    return health, execs


async def burst(daytona: AsyncDaytona, http: httpx.AsyncClient, box: object, size: int
                ) -> tuple[list[float], list[float], float, int]:  # fmt: skip
    """Probe while ``size`` creates run at once: (health ms, exec ms, wall s, failed)."""
    done = asyncio.Event()
    prober = asyncio.ensure_future(probe(http, box, done, 0))
    start = time.perf_counter()
    results = await asyncio.gather(*(daytona.create(PARAMS, timeout=600) for _ in range(size)),
                                   return_exceptions=True)  # fmt: skip
    wall = time.perf_counter() - start
    done.set()
    health, execs = await prober
    made = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    for error in failed[:3]:
        print(f"  burst create failed: {error!r}"[:300])  # noqa: T201
    await delete_all(daytona, made)
    return health, execs, wall, len(failed)


async def run(server: ServerProcess, rounds: int, size: int, levels: list[int]) -> None:
    config = DaytonaConfig(api_key=KEY, api_url=server.api_url)
    async with AsyncDaytona(config) as daytona, httpx.AsyncClient(base_url=server.url) as http:
        await (await daytona.create(PARAMS)).delete()  # warm the server's code paths
        print(f"{'clients':>8} {'creates':>8} {'creates/s':>10} {'create p50':>11} "  # noqa: T201
              f"{'p95 (ms)':>9} {'failed':>7}")
        for clients in levels:
            per_client = max(rounds, 20 // clients) if clients < 50 else rounds
            rate, latencies, failed = await creates_per_second(daytona, clients, per_client)
            print(f"{clients:>8} {clients * per_client:>8} {rate:>10.1f} "  # noqa: T201
                  f"{statistics.median(latencies):>11.0f} {pct(latencies, 0.95):>9.0f} "
                  f"{failed:>7}")
        box = await daytona.create(PARAMS)
        try:
            health, execs = await probe(http, box, asyncio.Event(), 50)
            b_health, b_execs, wall, failed = await burst(daytona, http, box, size)
        finally:
            await box.delete()
    print(f"\n{'':<34} {'p50':>7}  {'p95 (ms)':>8}")  # noqa: T201
    print(f"{'GET /api/health, idle':<34} {p50_p95(health)}")  # noqa: T201
    print(f"{f'GET /api/health, {size} creates':<34} {p50_p95(b_health)}")  # noqa: T201
    print(f"{'exec(true), idle':<34} {p50_p95(execs)}")  # noqa: T201
    print(f"{f'exec(true), {size} creates':<34} {p50_p95(b_execs)}")  # noqa: T201
    print(f"{size} creates at once: all answered in {wall:.1f} s "  # noqa: T201
          f"({size / wall:.1f}/s), {failed} failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2,
                        help="creates per client at 50 clients (more at 1 and 10)")
    parser.add_argument("--burst", type=int, default=100, help="creates at once while probing")
    parser.add_argument("--clients", default="1,10,50",
                        help="comma-separated client counts for creates/s ('' skips)")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-data-"))
    server = ServerProcess(data_dir, api_key=KEY, env={"COVE_NETWORK_POOL": sandbox_pool(9)})
    server.start()
    try:
        levels = [int(c) for c in args.clients.split(",") if c]
        asyncio.run(run(server, args.rounds, args.burst, levels))
    finally:
        server.delete_all_sandboxes()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
