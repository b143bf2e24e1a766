"""A remote runner against one host, through the official SDK, in the same run.

Run as root after ``make setup``::

    .venv/bin/python bench/remote.py [--n 100]

Starts a ``cove serve`` with its own runner (one host) and a ``cove serve`` whose
sandboxes run on a ``cove runner`` reached over mutual TLS on loopback (two
processes, their own data dirs), and prints for each: create-to-started and
``process.exec("true")`` (p50/p95).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig

from cove.testing import ServerProcess
from cove.testing_remote import RunnerProcess, make_pki

KEY = "bench-key"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timings(fn: Callable[[], object], n: int) -> list[float]:
    fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def measure(server: ServerProcess, n: int) -> dict[str, list[float]]:
    daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
    creates: list[float] = []
    for _ in range(5):
        start = time.perf_counter()
        sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
        creates.append((time.perf_counter() - start) * 1000)
        sb.process.exec("true")
        sb.delete()
    sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    try:
        execs = timings(lambda: sb.process.exec("true"), n)
    finally:
        sb.delete()
    return {"create to started": creates, 'process.exec("true")': execs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cove-bench-remote-"))
    results: dict[str, dict[str, list[float]]] = {}
    runner = None
    try:
        (tmp / "local").mkdir()
        local = ServerProcess(tmp / "local", api_key=KEY)
        local.start()
        try:
            results["one host"] = measure(local, args.n)
        finally:
            local.delete_all_sandboxes()
            local.stop()
        pki = make_pki(tmp / "pki")
        (tmp / "runner").mkdir()
        runner = RunnerProcess(tmp / "runner", pki)
        runner.start()
        (tmp / "api").mkdir()
        api = ServerProcess(tmp / "api", api_key=KEY, env=pki.api_env(runner.url))
        api.start()
        try:
            results["remote runner (mTLS)"] = measure(api, args.n)
        finally:
            api.delete_all_sandboxes()
            api.stop()
    finally:
        if runner is not None:
            runner.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"times in ms; exec n={args.n}, creates n=5")  # noqa: T201
    print(f"{'':<22} {'':<22} {'p50':>8} {'p95':>8}")  # noqa: T201
    for where, figures in results.items():
        for name, values in figures.items():
            print(f"{where:<22} {name:<22} {statistics.median(values):8.2f} "  # noqa: T201
                  f"{pct(values, 0.95):8.2f}")


if __name__ == "__main__":
    main()
