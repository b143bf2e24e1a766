"""Remote runners against one host, through the official SDK, in the same run.

Run as root after ``make setup``::

    .venv/bin/python bench/remote.py [--n 100] [--creates 30] [--clients 6]

Starts, one after the other: a ``cove serve`` with its own runner (one host); a
``cove serve`` whose sandboxes run on one ``cove runner`` reached over mutual TLS on
loopback; and a ``cove serve`` with three ``cove runner`` processes, each in a
network namespace of its own (a veth to this host, its own address and nftables
ruleset) registered with ``cove runner add``. Prints for each: create-to-started,
create-to-first ``process.exec("true")`` and ``process.exec("true")`` (p50/p95),
and creates/s with ``--clients`` concurrent clients (``--creates`` in all), with
how the sandboxes spread over the runners.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig, Sandbox

from cove.testing import ServerProcess
from cove.testing_remote import NetnsHost, Pki, RunnerProcess, make_pki

KEY = "bench-key"
QUIET = {"COVE_POOL_SIZE": "0"}  # cold creates everywhere: the runners are compared


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


def _params() -> CreateSandboxFromSnapshotParams:
    return CreateSandboxFromSnapshotParams(auto_stop_interval=0)


def measure(server: ServerProcess, n: int, creates: int, clients: int
            ) -> tuple[dict[str, list[float]], float, dict[str, int]]:  # fmt: skip
    daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
    started: list[float] = []
    first_exec: list[float] = []
    for _ in range(5):
        start = time.perf_counter()
        sb = daytona.create(_params())
        started.append((time.perf_counter() - start) * 1000)
        sb.process.exec("true")
        first_exec.append((time.perf_counter() - start) * 1000)
        sb.delete()
    sb = daytona.create(_params())
    try:
        execs = timings(lambda: sb.process.exec("true"), n)
    finally:
        sb.delete()
    made: list[Sandbox] = []
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        made = list(pool.map(lambda _: daytona.create(_params()), range(creates)))
    rate = creates / (time.perf_counter() - start)
    placed = spread(server.data_dir)
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda sb: sb.delete(), made))
    return {"create to started": started, "create to first exec": first_exec,
            'process.exec("true")': execs}, rate, placed  # fmt: skip


def spread(data_dir: Path) -> dict[str, int]:
    """How many sandboxes each runner holds now (the API's registry)."""
    with sqlite3.connect(data_dir / "cove.db") as db:
        rows = db.execute("SELECT r.name, count(s.id) FROM runners r LEFT JOIN sandboxes s "
                          "ON s.runner_id = r.id GROUP BY r.name").fetchall()  # fmt: skip
    return {str(name): int(count) for name, count in rows}


def three_runners(tmp: Path, pki: Pki, stack: ExitStack) -> ServerProcess:
    base = (os.getpid() % 60) * 4
    api_dir = tmp / "api3"
    api_dir.mkdir()
    cert, key = pki.api
    env = {"COVE_RUNNER_CA": str(pki.ca), "COVE_RUNNER_CERT": str(cert),
           "COVE_RUNNER_KEY": str(key), **QUIET}  # fmt: skip
    for i in range(3):
        host = NetnsHost(f"cbr{os.getpid() % 1000}{i}", f"10.248.{base + i}")
        stack.callback(host.delete)
        host.create()
        (tmp / f"r{i}").mkdir()
        runner = RunnerProcess(tmp / f"r{i}", pki, {"COVE_NETWORK_POOL": f"198.18.{40 + i}.0/24"},
                               netns=host)  # fmt: skip
        stack.callback(runner.stop)
        runner.start()
        _cli(api_dir, env, "add", f"r{i + 1}", runner.url)
    _cli(api_dir, env, "remove", "local")
    return ServerProcess(api_dir, api_key=KEY, env=env)


def _cli(data_dir: Path, env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "cove.cli.main", "runner", *args, "--data-dir",
                    str(data_dir)], env={**os.environ, **env}, check=True,
                   capture_output=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--creates", type=int, default=30)
    parser.add_argument("--clients", type=int, default=6)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cove-bench-remote-"))
    results: dict[str, dict[str, list[float]]] = {}
    rates: dict[str, float] = {}
    spreads: dict[str, dict[str, int]] = {}

    def run(where: str, api: ServerProcess) -> None:
        api.start()
        try:
            results[where], rates[where], spreads[where] = measure(api, args.n, args.creates,
                                                                   args.clients)  # fmt: skip
        finally:
            api.delete_all_sandboxes()
            api.stop()

    try:
        (tmp / "local").mkdir()
        run("one host", ServerProcess(tmp / "local", api_key=KEY, env=QUIET))
        pki = make_pki(tmp / "pki")
        with ExitStack() as stack:
            (tmp / "runner").mkdir()
            runner = RunnerProcess(tmp / "runner", pki)
            stack.callback(runner.stop)
            runner.start()
            (tmp / "api").mkdir()
            run("remote runner (mTLS)",
                ServerProcess(tmp / "api", api_key=KEY, env={**pki.api_env(runner.url), **QUIET}))
        with ExitStack() as stack:
            run("3 runners (netns)", three_runners(tmp, pki, stack))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"times in ms; exec n={args.n}, creates n=5 (sequential); creates/s: "  # noqa: T201
          f"{args.creates} creates by {args.clients} clients; cold (no warm pool)")
    print(f"{'':<22} {'':<22} {'p50':>8} {'p95':>8}")  # noqa: T201
    for where, figures in results.items():
        for name, values in figures.items():
            print(f"{where:<22} {name:<22} {statistics.median(values):8.2f} "  # noqa: T201
                  f"{pct(values, 0.95):8.2f}")
        print(f"{where:<22} {'creates/s':<22} {rates[where]:8.2f}")  # noqa: T201
    for where, counts in spreads.items():
        print(f"{where}: sandboxes per runner after the creates/s run: {counts}")  # noqa: T201


if __name__ == "__main__":
    main()
