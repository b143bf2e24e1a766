"""Toolbox figures through the official SDK, against a spawn inside the sandbox.

Run as root after ``make setup``::

    .venv/bin/python bench/toolbox.py [--n 100] [--big-mib 1024]

Prints, from one run: ``process.exec("true")`` and ``run_code("1+1")`` round
trips (p50/p95), session log first-byte latency, upload and download MB/s for
100 MiB and a big file, and the baseline: a fork+exec of ``/bin/true`` by a
process already inside the sandbox, with the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig, SessionExecuteRequest

from cove.testing import ServerProcess

KEY = "bench-key"
SPAWN = """
import subprocess, time, statistics
t = []
for _ in range(300):
    s = time.perf_counter(); subprocess.run(["/bin/true"]); t.append(time.perf_counter() - s)
print(statistics.median(t) * 1000)
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timings(fn, n: int) -> list[float]:  # noqa: ANN001
    fn()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def log_first_byte(sb, n: int) -> list[float]:  # noqa: ANN001
    sb.process.create_session("bench")
    out = []
    for _ in range(n):
        first: list[float] = []
        start = time.perf_counter()
        cmd = sb.process.execute_session_command(
            "bench", SessionExecuteRequest(command="echo hi", run_async=True))

        def on_out(_chunk: str, first: list[float] = first, start: float = start) -> None:
            if not first:
                first.append((time.perf_counter() - start) * 1000)

        asyncio.run(sb.process.get_session_command_logs_async("bench", cmd.cmd_id, on_out,
                                                              lambda _c: None))
        out.extend(first[:1])
    return out


def transfer(sb, size_mib: int, scratch: Path) -> tuple[float, float]:  # noqa: ANN001
    src = scratch / f"up-{size_mib}"
    with src.open("wb") as f:
        for _ in range(size_mib):
            f.write(os.urandom(1 << 20))
    remote = f"/home/daytona/blob-{size_mib}"
    start = time.perf_counter()
    sb.fs.upload_file(str(src), remote)
    up = size_mib / (time.perf_counter() - start)
    dst = scratch / f"down-{size_mib}"
    start = time.perf_counter()
    sb.fs.download_file(remote, str(dst))
    down = size_mib / (time.perf_counter() - start)
    assert _sha(src) == _sha(dst), "download differs from upload"
    sb.process.exec(f"rm -f {remote}")
    src.unlink()
    dst.unlink()
    return up, down


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def line(name: str, values: list[float], base: float) -> str:
    p50 = statistics.median(values)
    return f"{name:<34} {p50:8.2f} {pct(values, 0.95):8.2f}  {p50 / base:7.1f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--big-mib", type=int, default=1024)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-data-"))
    scratch = Path(tempfile.mkdtemp(prefix="cove-bench-files-"))
    server = ServerProcess(data_dir, api_key=KEY)
    server.start()
    try:
        daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
        sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
        base = float(sb.process.exec(f"python3 -c '{SPAWN}'").result.strip())
        exec_ms = timings(lambda: sb.process.exec("true"), args.n)
        code_ms = timings(lambda: sb.code_interpreter.run_code("1+1"), args.n)
        logs_ms = log_first_byte(sb, min(args.n, 30))
        speeds = {size: transfer(sb, size, scratch) for size in (100, args.big_mib)}
        sb.delete()
    finally:
        server.delete_all_sandboxes()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"times in ms; n={args.n}")  # noqa: T201
    print(f"{'':<34} {'p50':>8} {'p95':>8}  vs in-sandbox spawn")  # noqa: T201
    print(f"{'spawn /bin/true inside (baseline)':<34} {base:8.2f}")  # noqa: T201
    print(line('SDK process.exec("true")', exec_ms, base))  # noqa: T201
    print(line('SDK run_code("1+1")', code_ms, base))  # noqa: T201
    print(line("session log first byte", logs_ms, base))  # noqa: T201
    for size, (up, down) in speeds.items():
        print(f"{size} MiB file: upload {up:7.1f} MB/s, download {down:7.1f} MB/s")  # noqa: T201


if __name__ == "__main__":
    main()
