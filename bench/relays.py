"""``exec("true")`` with relays and without, side by side in one run.

Two servers on fresh data directories, one with ``COVE_RELAYS=1`` and one with
``COVE_RELAYS=0``, a sandbox on each; their rounds alternate, so both see the same
moments of a noisy host. Each round times, per server: the HTTP floor (``GET
/api/health``), an ``exec`` right after another (back to back), and an ``exec`` after
a pause (every process it wakes has gone idle). Prints p50 and p95 of each.

    .venv/bin/python bench/relays.py [--rounds 8] [--n 100] [--pause-ms 10]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig

from cove.testing import ServerProcess

KEY = "bench-relays-key"


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--n", type=int, default=100, help="calls of each kind per round")
    parser.add_argument("--pause-ms", type=float, default=10.0)
    args = parser.parse_args()
    servers: list[tuple[ServerProcess, Path]] = []
    sides = []
    try:
        for setting in ("0", "1"):
            data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-relays-"))
            server = ServerProcess(data_dir, api_key=KEY, env={"COVE_RELAYS": setting})
            servers.append((server, data_dir))
            server.start()
            daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
            sandbox = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
            http = httpx.Client(base_url=server.api_url)
            sides.append((setting == "1", sandbox, http))
        figures: dict[tuple[bool, str], list[float]] = {}
        for _ in range(args.rounds):
            for relays, sandbox, http in sides:
                for _ in range(20):  # (warm: the relay made, caches filled)
                    sandbox.process.exec("true")
                floor = functools.partial(http.get, "/health")
                run = functools.partial(sandbox.process.exec, "true")
                for _ in range(args.n):
                    figures.setdefault((relays, "floor"), []).append(timed(floor))
                    run()
                    figures.setdefault((relays, "back to back"), []).append(timed(run))
                    time.sleep(args.pause_ms / 1000)
                    figures.setdefault((relays, "after a pause"), []).append(timed(run))
        print(f"times in ms; {args.rounds} rounds of {args.n}, alternated; "  # noqa: T201
              f"pause {args.pause_ms:g} ms")
        print(f"{'':28}{'relays off p50':>16}{'p95':>8}{'relays on p50':>16}{'p95':>8}")  # noqa: T201
        for kind in ("floor", "back to back", "after a pause"):
            row = f"{'exec(true) ' + kind if kind != 'floor' else 'HTTP floor':28}"
            for relays in (False, True):
                values = sorted(figures[(relays, kind)])
                row += f"{statistics.median(values):16.2f}{values[int(len(values) * .95)]:8.2f}"
            print(row)  # noqa: T201
        for relays in (False, True):
            base = statistics.median(figures[(relays, "floor")])
            over = statistics.median(figures[(relays, "back to back")]) - base
            print(f"relays {'on ' if relays else 'off'}: exec back to back over the floor "  # noqa: T201
                  f"+{over:.2f}")
    finally:
        for _relays, sandbox, http in sides:
            http.close()
            try:
                sandbox.delete()
            except Exception:  # noqa: BLE001 - the server cleans up what is left
                pass
        for server, data_dir in servers:
            server.delete_all_sandboxes()
            server.stop()
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
