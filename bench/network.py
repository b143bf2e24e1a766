"""Sandbox networking figures through the official SDK.

Run as root after ``make setup``::

    .venv/bin/python bench/network.py [--n 10]

Prints: create-to-started p50/p95 with networking (``COVE_NETWORK=nat``) and
without (``COVE_NETWORK=none``, loopback only); then TCP throughput (one
stream, 256 MiB) and request/response latency (1-byte echo, 2000 round trips)
to a server in a test network namespace (198.18.x, routed via the host), once
from the host and once from inside a sandbox (veth, forward, nftables, NAT).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from daytona import Daytona, DaytonaConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.nettools import R1, R1_NET, Remote, sandbox_pool  # noqa: E402

from cove.testing import ServerProcess  # noqa: E402

KEY = "bench-key"
SINK_PORT, ECHO_PORT = 9100, 9101
SERVER = r"""
import socket, sys, threading
addr = sys.argv[1]
def sink(c):
    while c.recv(1 << 20): pass
    c.sendall(b"k"); c.close()
def echo(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while (d := c.recv(64)): c.sendall(d)
def serve(port, fn):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(16)
    while True:
        c, _ = s.accept(); threading.Thread(target=fn, args=(c,), daemon=True).start()
threading.Thread(target=serve, args=(9100, sink), daemon=True).start()
serve(9101, echo)
"""
CLIENT = r"""
import json, socket, sys, time
addr = sys.argv[1]; total = 256 << 20; buf = b"x" * (1 << 20)
s = socket.create_connection((addr, 9100)); t = time.perf_counter()
for _ in range(total // len(buf)): s.sendall(buf)
s.shutdown(socket.SHUT_WR); s.recv(1); mbps = total * 8 / (time.perf_counter() - t) / 1e6
e = socket.create_connection((addr, 9101)); e.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for _ in range(2000):
    t = time.perf_counter(); e.sendall(b"p"); e.recv(1)
    rtts.append((time.perf_counter() - t) * 1e6)
rtts.sort()
print(json.dumps({"mbps": mbps, "p50_us": rtts[1000], "p99_us": rtts[1980]}))
"""


def create_times(network: str, n: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="cove-bench-net-") as tmp:
        env = {"COVE_NETWORK": network, "COVE_NETWORK_POOL": sandbox_pool(5)}
        srv = ServerProcess(Path(tmp), api_key=KEY, env=env)
        srv.start()
        try:
            daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=srv.api_url))
            daytona.delete(daytona.create())  # warm caches
            times, made = [], []
            for _ in range(n):
                t = time.perf_counter()
                made.append(daytona.create())
                times.append((time.perf_counter() - t) * 1000)
            for sb in made:
                sb.delete()
            return times
        finally:
            srv.stop()


def transfer_figures(n: int) -> tuple[dict, dict]:
    remote = Remote(R1_NET).start()
    server = subprocess.Popen(["ip", "netns", "exec", remote.netns, sys.executable, "-c", SERVER,
                               R1], start_new_session=True)  # fmt: skip
    time.sleep(0.5)
    try:
        host = json.loads(subprocess.check_output([sys.executable, "-c", CLIENT, R1]))
        with tempfile.TemporaryDirectory(prefix="cove-bench-net-") as tmp:
            srv = ServerProcess(Path(tmp), api_key=KEY, env={"COVE_NETWORK_POOL": sandbox_pool(5)})
            srv.start()
            try:
                daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=srv.api_url))
                sb = daytona.create()
                try:
                    sb.fs.upload_file(CLIENT.encode(), "/tmp/client.py")
                    out = sb.process.exec(f"python3 /tmp/client.py {R1}", timeout=120).result
                    inside = json.loads(out.strip().splitlines()[-1])
                finally:
                    sb.delete()
            finally:
                srv.stop()
        return host, inside
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        remote.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10)
    n = parser.parse_args().n
    nat, none = create_times("nat", n), create_times("none", n)
    print(f"{'create to started (ms)':<34} {'p50':>8} {'p95':>8}")  # noqa: T201
    for name, values in (("COVE_NETWORK=nat", nat), ("COVE_NETWORK=none", none)):
        p95 = sorted(values)[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
        print(f"{name:<34} {statistics.median(values):8.1f} {p95:8.1f}")  # noqa: T201
    host, inside = transfer_figures(n)
    print(f"\n{'to a server at ' + R1:<34} {'Mbit/s':>8} {'RTT p50':>8} {'RTT p99':>8} (us)")  # noqa: T201
    for name, fig in (("from the host", host), ("from inside a sandbox", inside)):
        print(f"{name:<34} {fig['mbps']:8.0f} {fig['p50_us']:8.1f} {fig['p99_us']:8.1f}")  # noqa: T201


if __name__ == "__main__":
    main()
