"""Toolbox figures through the official SDK, against a spawn inside the sandbox.

Run as root after ``make setup``::

    .venv/bin/python bench/toolbox.py [--n 100] [--big-mib 1024]

Prints, from one run: ``process.exec("true")``, ``process.exec("echo hello")`` (a
command with output) and ``code_interpreter.run_code("1+1")`` round trips (p50/p95)
beside two baselines, the HTTP floor and the in-sandbox spawn;
the CPU an ``exec("true")`` costs the client, the server and the sandbox side (and
how long the server, woken, waited for a CPU);
session log first-byte latency; upload and download MB/s for 100 MiB and a big file.

Each call is timed in two ways: one of each kind in turn (so each follows another kind
of call: the processes it wakes have just been idle, which costs more on a VM whose idle
vCPUs halt), and made twice in a row with the second one timed (as an agent's commands
follow each other), each against the floor timed the same way.

The HTTP floor is a bare round trip to the same server through the SDK's own HTTP
stack (the toolbox client's urllib3 pool, its headers, keep-alive): ``GET
/api/health``, which does no work. ``GET /api/sandbox/{id}`` (a key check, a
database read, the sandbox's DTO) is shown beside it. The floor, exec and run_code
are measured interleaved (one of each per round), so a busy host slows them alike;
"over floor" is the median of the per-round differences. ``run_code`` opens a
WebSocket per call (a new connection and an upgrade), so it is also shown over a
WebSocket floor: the same connect, frame and close, refused before the agent. The
spawn baseline is a fork+exec of ``/bin/true`` by a process already inside the
sandbox. The key is one made by ``cove keys create`` (checked against the database,
as users' keys are).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx_ws
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


def line(name: str, values: list[float], base: float, floor: list[float] | None = None) -> str:
    p50 = statistics.median(values)
    over = ""
    if floor is not None:
        over = f"  {statistics.median(v - f for v, f in zip(values, floor, strict=True)):+8.2f}"
    return f"{name:<34} {p50:8.2f} {pct(values, 0.95):8.2f}  {p50 / base:7.1f}x{over}"


def interleaved(calls: dict[str, object], n: int, *, twice: bool = False
                ) -> dict[str, list[float]]:  # fmt: skip
    """Each call's round trips in ms, one of each per round (after one warm-up round).
    With ``twice``, each call is made twice in a row and the second one timed: a call
    that follows one of its own (as an agent's commands follow each other), not one
    that follows another kind of call or an idle moment."""
    out: dict[str, list[float]] = {name: [] for name in calls}
    for round_ in range(n + 1):
        for name, fn in calls.items():
            if twice:
                fn()  # type: ignore[operator]
            start = time.perf_counter()
            fn()  # type: ignore[operator]
            if round_:
                out[name].append((time.perf_counter() - start) * 1000)
    return out


def ws_floor(sb):  # noqa: ANN001, ANN201
    """A WebSocket round trip the way run_code makes one (the SDK's client, URL and
    headers: connect, send a frame, get the close) that the server refuses at once,
    before any agent is involved (the frame is not a valid run)."""
    interpreter = sb.code_interpreter
    _, url, headers, *_ = interpreter._api_client._execute_interpreter_code_serialize(  # noqa: SLF001
        _request_auth=None, _content_type=None, _headers=None, _host_index=None)
    url = re.sub(r"^http", "ws", url)

    def exchange() -> None:
        with httpx_ws.connect_ws(url, interpreter._http_client, headers=headers) as ws:  # noqa: SLF001
            ws.send_text('{"code": 1}')
            try:
                event = ws.receive()
            except httpx_ws.WebSocketDisconnect as exc:
                assert exc.code == 1008, exc.code
            else:
                assert getattr(event, "code", None) == 1008, event

    return exchange


def http_floor(sb, url: str):  # noqa: ANN001, ANN201
    """A bare GET of ``url`` through the SDK's toolbox HTTP client (pool, headers)."""
    api = sb.process._api_client.api_client  # noqa: SLF001 - the SDK's own stack

    def get() -> None:
        response = api.call_api("GET", url, header_params=dict(api.default_headers))
        response.read()
        assert response.status == 200, response.status

    return get


def _host_busy() -> float:
    """Seconds of CPU the whole host spent busy (all but idle and iowait), /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    """Seconds of CPU of process ``pid`` (all its threads), /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runqueue_wait(pid: int) -> float:
    """Seconds the main thread of ``pid`` waited, runnable, for a CPU (schedstat)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9


def cpu_per_call(call, server_pid: int, n: int) -> dict[str, float]:  # noqa: ANN001
    """CPU in ms per call of ``call`` (``n`` back to back): the client (this process),
    the server, the rest of the host (the sandbox side: agent, spare, command, and
    the kernel's work for them, plus whatever else ran meanwhile), and all; and how
    long the server's event loop, woken, waited for a CPU."""
    mine, server, host = os.times(), _process_cpu(server_pid), _host_busy()
    waited = _runqueue_wait(server_pid)
    for _ in range(n):
        call()
    after = os.times()
    client = (after.user + after.system - mine.user - mine.system) * 1000 / n
    server_ms = (_process_cpu(server_pid) - server) * 1000 / n
    everything = (_host_busy() - host) * 1000 / n
    wait_ms = (_runqueue_wait(server_pid) - waited) * 1000 / n
    return {"client": client, "server": server_ms,
            "sandbox side": everything - client - server_ms, "all": everything,
            "server's wait for a CPU": wait_ms}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--exec-only", action="store_true", help="skip logs and transfers")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-data-"))
    scratch = Path(tempfile.mkdtemp(prefix="cove-bench-files-"))
    server = ServerProcess(data_dir, api_key=KEY)
    server.start()
    try:
        daytona = Daytona(DaytonaConfig(api_key=server.org_key("bench"), api_url=server.api_url))
        sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
        base = float(sb.process.exec(f"python3 -c '{SPAWN}'").result.strip())
        calls = {
            "floor": http_floor(sb, f"{server.api_url}/health"),
            "get": http_floor(sb, f"{server.api_url}/sandbox/{sb.id}"),
            "exec": lambda: sb.process.exec("true"),
            "echo": lambda: sb.process.exec("echo hello"),
            "code": lambda: sb.code_interpreter.run_code("1+1"),
            "ws": ws_floor(sb),
        }
        runs = interleaved(calls, args.n)
        again = interleaved({name: calls[name] for name in ("floor", "exec", "echo")}, args.n,
                            twice=True)  # fmt: skip
        assert server.proc is not None
        cpu = cpu_per_call(lambda: sb.process.exec("true"), server.proc.pid, max(args.n * 5, 1000))
        logs_ms = [] if args.exec_only else log_first_byte(sb, min(args.n, 30))
        sizes = () if args.exec_only else (100, args.big_mib)
        speeds = {size: transfer(sb, size, scratch) for size in sizes}
    finally:
        server.delete_all_sandboxes()  # (the bench key's organization's too)
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    floor = runs["floor"]
    print(f"times in ms; n={args.n}, interleaved")  # noqa: T201
    print(f"{'':<34} {'p50':>8} {'p95':>8}  {'/spawn':>8} {'over floor':>9}")  # noqa: T201
    print(f"{'spawn /bin/true inside (baseline)':<34} {base:8.2f}")  # noqa: T201
    print(line("HTTP floor: GET /api/health", floor, base))  # noqa: T201
    print(line("GET /api/sandbox/{id}", runs["get"], base, floor))  # noqa: T201
    print(line('SDK process.exec("true")', runs["exec"], base, floor))  # noqa: T201
    print(line('SDK process.exec("echo hello")', runs["echo"], base, floor))  # noqa: T201
    print(line('SDK run_code("1+1") (WebSocket)', runs["code"], base, floor))  # noqa: T201
    print(line("WebSocket floor (refused at once)", runs["ws"], base, floor))  # noqa: T201
    print(line("run_code over the WebSocket floor", runs["code"], base, runs["ws"]))  # noqa: T201
    print("each right after one of its own (made twice in a row, the second timed):")  # noqa: T201
    print(line("HTTP floor: GET /api/health", again["floor"], base))  # noqa: T201
    print(line('SDK process.exec("true")', again["exec"], base, again["floor"]))  # noqa: T201
    print(line('SDK process.exec("echo hello")', again["echo"], base, again["floor"]))  # noqa: T201
    print("CPU per exec(\"true\"), back to back, ms: "  # noqa: T201
          + ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items()))
    if logs_ms:
        print(line("session log first byte", logs_ms, base))  # noqa: T201
    for size, (up, down) in speeds.items():
        print(f"{size} MiB file: upload {up:7.1f} MB/s, download {down:7.1f} MB/s")  # noqa: T201


if __name__ == "__main__":
    main()
