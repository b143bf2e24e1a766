"""Create -> first ``exec("true")`` through the official SDK: from the warm pool and
cold, against raw ``crun run`` of the same bundle.

Run as root after ``make setup``::

    .venv/bin/python bench/pool.py [--n 20]

Prints, from one run (times in ms, p50/p95): the SDK's create alone and create
followed by the first ``process.exec("true")``, each taken from a warm pool (the
pool is refilled before every create, so each one finds a started sandbox and no
refill runs beside it) and cold (``COVE_POOL_SIZE=0``); and the raw
``crun run --detach`` of the same bundle (see ``bench/lifecycle.py``) as baseline.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig
from lifecycle import raw_crun, row  # bench/lifecycle.py

from cove.testing import ServerProcess

KEY = "bench-key"
POOL = 2


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


def first_exec(daytona: Daytona, n: int, server: ServerProcess | None
               ) -> tuple[list[float], list[float]]:  # fmt: skip
    """(create ms, create + first exec ms) of ``n`` sandboxes; with ``server``, each
    from a full pool (checked)."""
    create_ms, exec_ms = [], []
    for _ in range(n):
        ready: set[str] = set()
        if server is not None:
            wait_until(lambda: len(pooled(server)) >= POOL)
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
    return create_ms, exec_ms


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
    server = ServerProcess(data_dir, api_key=KEY, env={"COVE_POOL_SIZE": str(POOL)})
    server.start()
    try:
        daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
        first_exec(daytona, 2, server)  # warm the server's code paths
        warm = first_exec(daytona, args.n, server)
        without_pool(server)  # the same server, cold
        daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
        first_exec(daytona, 2, None)
        cold = first_exec(daytona, args.n, None)
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
    print(row("SDK create (pool)", warm[0], base))  # noqa: T201
    print(row("SDK create -> first exec (pool)", warm[1], base))  # noqa: T201
    print(row("SDK create (cold)", cold[0], base))  # noqa: T201
    print(row("SDK create -> first exec (cold)", cold[1], base))  # noqa: T201


if __name__ == "__main__":
    main()
