"""Create -> first ``exec("true")`` through the official SDK: from the warm pool and
cold, against raw ``crun run`` of the same bundle.

Run as root after ``make setup``::

    .venv/bin/python bench/pool.py [--n 20]

Prints, from one run (times in ms, p50/p95): the SDK's create alone and create
followed by the first ``process.exec("true")``, each taken from a warm pool (the
pool is refilled before every create, so each one finds a started sandbox, and
the host is let settle, so no refill runs beside it) and cold (``COVE_POOL_SIZE=0``);
and the raw ``crun run --detach`` of the same bundle (see ``bench/lifecycle.py``)
as baseline. The pool's figures come twice, each beside a bare HTTP round trip
taken the same way: after the host sat idle (on a VM its CPUs then take a while
to wake) and with the server in use (woken by a few round trips just before).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import httpx
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig
from lifecycle import raw_crun, row  # bench/lifecycle.py

from cove.testing import ServerProcess

KEY = "bench-key"
POOL = 2
WAKE_ROUNDS = 5  # bare round trips that wake the host before an "awake" create


def pooled(server: ServerProcess) -> set[str]:
    """The started sandboxes waiting in the operator's pool."""
    with sqlite3.connect(server.data_dir / "cove.db") as db:
        return {r[0] for r in db.execute(
            "SELECT id FROM sandboxes WHERE organization_id IS NULL AND state = 'started' "
            "AND warm_pool_id = 'cove-operator-pool'")}  # fmt: skip


def unowned(server: ServerProcess) -> int:
    with sqlite3.connect(server.data_dir / "cove.db") as db:
        return int(db.execute(
            "SELECT count(*) FROM sandboxes WHERE organization_id IS NULL").fetchone()[0])


def wait_until(check, seconds: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError("the pool did not reach its size")
        time.sleep(0.02)


def cpu_idle(window: float = 0.05) -> float:
    """The host's share of idle CPU time over the next ``window`` seconds (/proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
        return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all

    idle0, all0 = sample()
    time.sleep(window)
    idle1, all1 = sample()
    return (idle1 - idle0) / max(1, all1 - all0)


def settled(seconds: float = 5) -> None:
    """Wait until the host is quiet (two windows in a row at least 85% idle): the
    refill that filled the pool has finished its work (its container's agent start,
    the keeper's bookkeeping), so the measured create does not share the CPU with it.
    Gives up after ``seconds`` (a busy host): the figure is then taken as it is."""
    deadline = time.monotonic() + seconds
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        quiet = quiet + 1 if cpu_idle() >= 0.85 else 0


def floor_ms(client: httpx.Client, url: str) -> float:
    """One bare HTTP round trip to the server (``GET /api/config``), in ms."""
    start = time.perf_counter()
    client.get(url).raise_for_status()
    return (time.perf_counter() - start) * 1000


def first_exec(daytona: Daytona, n: int, server: ServerProcess | None, *, awake: bool = False
               ) -> tuple[list[float], list[float], list[float]]:  # fmt: skip
    """(bare HTTP round trip ms, create ms, create + first exec ms) of ``n`` sandboxes;
    with ``server``, each from a full pool (checked) on a settled host.

    A host that has been idle answers its first requests slower (on this VM a bare
    round trip takes ~2 ms more: its CPUs wake up). With ``awake``, a few bare round
    trips just before each create wake it, the last one is the floor: a server in
    use. Without, the floor is one round trip on the same settled host."""
    floors, create_ms, exec_ms = [], [], []
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}) as client:
        for _ in range(n):
            ready: set[str] = set()
            if server is not None:
                url = f"{server.api_url}/config"
                wait_until(lambda: len(pooled(server)) >= POOL)
                settled()
                if awake:
                    for _ in range(WAKE_ROUNDS):
                        floor = floor_ms(client, url)
                else:
                    floor = floor_ms(client, url)
                    settled()
                floors.append(floor)
                ready = pooled(server)
            start = time.perf_counter()
            sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
            made = time.perf_counter()
            result = sb.process.exec("true")
            done = time.perf_counter()
            assert result.exit_code == 0
            assert server is None or sb.id in ready, "a create meant for the pool went cold"
            create_ms.append((made - start) * 1000)
            exec_ms.append((done - start) * 1000)
            sb.delete()
    return floors, create_ms, exec_ms


def without_pool(server: ServerProcess) -> None:
    """Restart ``server`` with no pool: it destroys the pooled sandboxes."""
    server.stop()
    server.extra_env["COVE_POOL_SIZE"] = "0"
    server.start()
    wait_until(lambda: unowned(server) == 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="sandboxes per figure")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-pool-"))
    server = ServerProcess(data_dir, api_key=KEY, env={"COVE_POOL_SIZE": str(POOL),
                                                     "COVE_POOL_ADAPTIVE_MAX": "0"})  # fixed
    server.start()
    try:
        daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
        first_exec(daytona, 2, server)  # warm the server's code paths
        idle = first_exec(daytona, args.n, server)
        awake = first_exec(daytona, args.n, server, awake=True)
        without_pool(server)  # the same server, cold
        daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
        first_exec(daytona, 2, None)
        _, *cold = first_exec(daytona, args.n, None)
        run_ms, _ = raw_crun(server, daytona, args.n)
    finally:
        if not server.running:
            server.start()
        server.delete_all_sandboxes()
        if unowned(server):
            without_pool(server)
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    base = sorted(run_ms)[len(run_ms) // 2]
    print(f"n={args.n} per figure; times in ms")  # noqa: T201
    print(f"{'':<36} {'p50':>9} {'p95':>9}  vs raw crun run")  # noqa: T201
    print(row("raw crun run --detach (baseline)", run_ms, base))  # noqa: T201
    print("from the pool, host idle before each create:")  # noqa: T201
    print(row("  bare HTTP round trip (floor)", idle[0], base))  # noqa: T201
    print(row("  SDK create (pool)", idle[1], base))  # noqa: T201
    print(row("  SDK create -> first exec (pool)", idle[2], base))  # noqa: T201
    print("from the pool, server in use (woken by round trips):")  # noqa: T201
    print(row("  bare HTTP round trip (floor)", awake[0], base))  # noqa: T201
    print(row("  SDK create (pool)", awake[1], base))  # noqa: T201
    print(row("  SDK create -> first exec (pool)", awake[2], base))  # noqa: T201
    print(row("SDK create (cold)", cold[0], base))  # noqa: T201
    print(row("SDK create -> first exec (cold)", cold[1], base))  # noqa: T201


if __name__ == "__main__":
    main()
