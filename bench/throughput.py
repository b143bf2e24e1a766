"""Create throughput and the server's responsiveness under a burst of creates.

Run as root after ``make setup``::

    .venv/bin/python bench/throughput.py [--rounds 2] [--burst 100] [--pool 100]

Prints, from one run, through the official async SDK (``AsyncDaytona``):

- the baseline: raw ``crun run --detach`` of cove-init in a plain bundle of the
  same snapshot (no user or network namespace, agent or Cove) per second, with
  1 and 10 at once;
- creates/s with 1, 10 and 50 concurrent clients (each client creates
  sandboxes one after another; the figure is sandboxes started per second of
  wall time), and the create-to-started p50/p95 a client saw; cold (no pool),
  then (``--pool N``) from a warm pool of N, filled again before each level so
  that every create of the level is served from it;
- ``GET /api/health``, ``GET /api/sandbox/{id}`` and ``process.exec("true")`` on a
  sandbox made beforehand: p50/p95 idle, then while ``--burst`` creates run at
  once (each probe sent one after another for as long as the burst lasts); and
  whether every create of the burst ended ``started`` (a create queues, it must
  not fail).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from daytona import (
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaError,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lifecycle import plain_bundle  # noqa: E402 (bench/lifecycle.py)
from tests.nettools import sandbox_pool  # noqa: E402

from cove.runner.host import cgroups  # noqa: E402
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


Probes = tuple[list[float], list[float], list[float]]  # health, get, exec ms


async def probe(http: httpx.AsyncClient, box: object, until: asyncio.Event, n: int) -> Probes:
    """Health, get and exec round trips, one after another: ``n`` of each, or (with
    ``until``) as many as fit before it is set."""
    health, gets, execs = [], [], []
    auth = {"Authorization": f"Bearer {KEY}"}
    while (not until.is_set()) if n == 0 else len(health) < n:
        ms, reply = await timed(http.get("/api/health"))
        assert reply.status_code == 200  # type: ignore[attr-defined]
        health.append(ms)
        ms, reply = await timed(http.get(f"/api/sandbox/{box.id}", headers=auth))  # type: ignore[attr-defined]
        assert reply.status_code == 200  # type: ignore[attr-defined]
        gets.append(ms)
        try:
            ms, result = await timed(box.process.exec("true"))  # type: ignore[attr-defined]
        except DaytonaError as exc:  # shown, and the probe goes on
            print(f"  exec failed: {exc}"[:200])  # noqa: T201
            continue
        assert result.exit_code == 0  # type: ignore[attr-defined]
        execs.append(ms)
    return health, gets, execs


async def burst(daytona: AsyncDaytona, http: httpx.AsyncClient, box: object, size: int
                ) -> tuple[Probes, float, int]:  # fmt: skip
    """Probe while ``size`` creates run at once: (probes, wall s, failed)."""
    done = asyncio.Event()
    prober = asyncio.ensure_future(probe(http, box, done, 0))
    start = time.perf_counter()
    results = await asyncio.gather(*(daytona.create(PARAMS, timeout=600) for _ in range(size)),
                                   return_exceptions=True)  # fmt: skip
    wall = time.perf_counter() - start
    done.set()
    probes = await prober
    made = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    for error in failed[:3]:
        print(f"  burst create failed: {error!r}"[:300])  # noqa: T201
    await delete_all(daytona, made)
    return probes, wall, len(failed)


def pooled(server: ServerProcess) -> int:
    """Started sandboxes waiting in the operator's pool."""
    with sqlite3.connect(server.data_dir / "cove.db") as db:
        return int(db.execute(
            "SELECT count(*) FROM sandboxes WHERE organization_id IS NULL AND state = 'started' "
            "AND warm_pool_id = 'cove-operator-pool'").fetchone()[0])  # fmt: skip


async def full_pool(server: ServerProcess | None, size: int) -> None:
    """Wait until the pool holds ``size`` started sandboxes (no pool: return)."""
    if server is None:
        return
    start = time.monotonic()
    while pooled(server) < size:
        if time.monotonic() - start > 60 + 10 * size:
            raise RuntimeError(f"the pool did not reach {size} (has {pooled(server)})")
        await asyncio.sleep(0.2)


async def run(server: ServerProcess, args: argparse.Namespace, pool: ServerProcess | None
              ) -> None:  # fmt: skip
    """Every figure against ``server``, its pool full before each level when ``pool``."""
    size, levels = args.burst, args.levels
    config = DaytonaConfig(api_key=KEY, api_url=server.api_url)
    where = f"from a pool of {args.pool}" if pool else "cold"
    async with AsyncDaytona(config) as daytona, httpx.AsyncClient(base_url=server.url) as http:
        await full_pool(pool, min(args.pool, 2))
        await (await daytona.create(PARAMS)).delete()  # warm the server's code paths
        print(f"\ncreates, {where}")  # noqa: T201
        print(f"{'clients':>8} {'creates':>8} {'creates/s':>10} {'create p50':>11} "  # noqa: T201
              f"{'p95 (ms)':>9} {'failed':>7}")
        for clients in levels:
            per_client = max(args.rounds, 20 // clients) if clients < 50 else args.rounds
            await full_pool(pool, min(args.pool, clients * per_client))
            rate, latencies, failed = await creates_per_second(daytona, clients, per_client)
            print(f"{clients:>8} {clients * per_client:>8} {rate:>10.1f} "  # noqa: T201
                  f"{statistics.median(latencies):>11.0f} {pct(latencies, 0.95):>9.0f} "
                  f"{failed:>7}", flush=True)
        if not size:
            return
        box = await daytona.create(PARAMS)
        try:
            idle = await probe(http, box, asyncio.Event(), 50)
            await full_pool(pool, min(args.pool, size))
            busy, wall, failed = await burst(daytona, http, box, size)
        finally:
            await box.delete()
    print(f"\n{'':<40} {'p50':>7}  {'p95 (ms)':>8}")  # noqa: T201
    for i, name in enumerate(("GET /api/health", "GET /api/sandbox/{id}", "exec(true)")):
        print(f"{f'{name}, idle':<40} {p50_p95(idle[i])}")  # noqa: T201
        print(f"{f'{name}, {size} creates ({where})':<40} {p50_p95(busy[i])}")  # noqa: T201
    print(f"{size} creates at once ({where}): all answered in {wall:.1f} s "  # noqa: T201
          f"({size / wall:.1f}/s), {failed} failed", flush=True)


def raw_rate(server: ServerProcess, n: int, workers: int) -> float:
    """Raw ``crun run --detach`` per second, ``workers`` at once (see bench/lifecycle.py)."""
    daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
    sb = daytona.create(PARAMS)
    ids = [f"bench-{workers}-{i}" for i in range(n)]
    try:
        with plain_bundle(server, sb) as (crun, work, config):
            for cid in ids:
                (work.parent / cid).mkdir()
                config["linux"]["cgroupsPath"] = f"/{server.cgroup_parent}/{cid}"
                (work.parent / cid / "config.json").write_text(json.dumps(config))
            try:
                start = time.perf_counter()
                with ThreadPoolExecutor(workers) as threads:
                    list(threads.map(
                        lambda c: crun.run_detached(c, work.parent / c, work / "log"), ids))
                wall = time.perf_counter() - start
            finally:
                for cid in ids:
                    crun.delete(cid)
                    cgroups.remove(f"{server.cgroup_parent}/{cid}")
                    shutil.rmtree(work.parent / cid, ignore_errors=True)
    finally:
        sb.delete()
    return n / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2,
                        help="creates per client at 50 clients (more at 1 and 10)")
    parser.add_argument("--burst", type=int, default=100, help="creates at once while probing")
    parser.add_argument("--clients", default="1,10,50",
                        help="comma-separated client counts for creates/s ('' skips)")
    parser.add_argument("--pool", type=int, default=0,
                        help="then the same from a warm pool of this size (0: cold only)")
    parser.add_argument("--cold", action=argparse.BooleanOptionalAction, default=True,
                        help="the cold figures (--no-cold: the pool's only)")
    args = parser.parse_args()
    args.levels = [int(c) for c in args.clients.split(",") if c]
    data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-data-"))
    server = ServerProcess(data_dir, api_key=KEY, env={"COVE_NETWORK_POOL": sandbox_pool(9),
                                                       "COVE_POOL_SIZE": "0"})  # fmt: skip
    server.start()
    try:
        print(f"load {os.getloadavg()[0]:.1f}; raw crun run --detach (baseline): "  # noqa: T201
              f"{raw_rate(server, 20, 1):.1f}/s one at a time, "
              f"{raw_rate(server, 40, 10):.1f}/s 10 at once", flush=True)
        if args.cold:
            asyncio.run(run(server, args, None))
        if args.pool:
            server.stop()
            server.extra_env["COVE_POOL_SIZE"] = str(args.pool)
            server.start()
            asyncio.run(run(server, args, server))
            print(f"load {os.getloadavg()[0]:.1f}")  # noqa: T201
    finally:
        server.delete_all_sandboxes()
        if server.extra_env["COVE_POOL_SIZE"] != "0":  # its restart destroys the pool
            server.stop()
            server.extra_env["COVE_POOL_SIZE"] = "0"
            server.start()
            while pooled(server):
                time.sleep(0.5)
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
