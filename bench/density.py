"""Idle started sandboxes per host: memory per sandbox, how many fit, what stops first.

Run as root after ``make setup``::

    .venv/bin/python bench/density.py [--max 1000] [--idle 2] [--reserve-gib 2]

Starts idle sandboxes of the default snapshot (1 vCPU, 1 GiB, 3 GiB disk, with
networking) one after the other, each serving one ``exec("true")`` (so its agent
ran), until ``--max`` or until MemAvailable falls below ``--reserve-gib``; waits
until their agents exited idle (``COVE_AGENT_IDLE_SECONDS`` = ``--idle``), then
prints the memory per sandbox (the host's MemAvailable delta, the honest figure,
and its parts), the agent's own cost while it runs, the first call after an
idle exit, and the extrapolation to this host with each limit found by reading
the kernel's settings and measuring what one sandbox takes of it.

It drives the runtime (``OciRuntime``) in this process, not the server over HTTP:
a create through the API costs the same on the host (the server adds a database
row and two descriptors per started sandbox, counted in the limits) and 1000
SDK round trips would only make the run longer. The baseline beside it: bare
``crun run`` containers of the same snapshot running ``sleep`` (own overlay,
no user or network namespace, no agent). Everything it made is removed at the
end, also on ^C.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import signal
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from density_probe import (
    Baseline,
    HostSide,
    Meminfo,
    agent_pids,
    host_tasks,
    limits,
    memcg_usage,
    nft_objects,
    smaps,
)

from cove.core.config import Settings
from cove.core.ports import ContainerSpec, NetworkPolicy, Resources
from cove.hostfiles import private_dir
from cove.runner.oci.runtime import OciRuntime
from cove.testing import SHARED_SNAPSHOTS

MIB = 1024


def spec_of(sandbox_id: str) -> ContainerSpec:
    return ContainerSpec(
        sandbox_id=sandbox_id, hostname=sandbox_id, snapshot="cove-default",
        resources=Resources(cpu=1, memory=1, disk=3), env={}, network=NetworkPolicy(),
        volumes=(), isolation="crun",
    )  # fmt: skip


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return (time.perf_counter() - start) * 1000


def profiled(fn: object, n: int) -> float:
    """``timed``, printing where the time went (cProfile: Cove's functions)."""
    profile = cProfile.Profile()
    ms = timed(lambda: profile.runcall(fn))  # type: ignore[arg-type]
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats("cove", 16)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()][4:22]
    print(f"  start of sandbox {n}: {ms:.0f} ms; Cove's functions by cumulative time:\n    "
          + "\n    ".join(lines), flush=True)
    return ms


class Run:
    """The sandboxes of one run, and what was measured on them."""

    def __init__(self, runtime: OciRuntime, args: argparse.Namespace) -> None:
        self.runtime = runtime
        self.args = args
        self.ids: list[str] = []
        self.agent_rollups: list[dict[str, int]] = []
        self.start_ms: list[float] = []

    def fill(self) -> None:
        """Start sandboxes until --max, the memory reserve or ^C (then what was reached
        is measured; a second ^C only cleans up)."""
        reserve = self.args.reserve_gib * 1024 * MIB
        try:
            self._fill(reserve)
        except KeyboardInterrupt:
            print(f"  ^C: measuring the {len(self.ids)} started", flush=True)

    def _fill(self, reserve: float) -> None:
        while len(self.ids) < self.args.max and Meminfo.read()["MemAvailable"] > reserve:
            sid = f"dn-{uuid.uuid4().hex[:10]}"
            self.ids.append(sid)
            if len(self.ids) in self.args.profile_at:
                self.start_ms.append(profiled(lambda sid=sid: self._start(sid), len(self.ids)))
            else:
                self.start_ms.append(timed(lambda sid=sid: self._start(sid)))
            self.runtime.exec(sid, ["true"], user="root")
            if len(self.agent_rollups) < self.args.sample:
                self.agent_rollups += [smaps(pid) for pid in agent_pids(self.runtime, sid)]
            if len(self.ids) % 100 == 0:
                avail = Meminfo.read()["MemAvailable"] // MIB
                last = statistics.median(self.start_ms[-100:])
                fds = len(os.listdir("/proc/self/fd"))
                with open("/proc/self/mounts") as f:
                    mounted = sum(1 for _ in f)
                print(f"  {len(self.ids)} started (create+start p50 of the last 100: {last:.0f}"
                      f" ms), MemAvailable {avail} MiB, host tasks {host_tasks()}, this"
                      f" process's fds {fds}, mounts {mounted}, load"
                      f" {os.getloadavg()[0]:.1f}", flush=True)

    def _start(self, sandbox_id: str) -> None:
        spec = spec_of(sandbox_id)
        self.runtime.create(spec)
        self.runtime.start(spec)

    def init_pid(self, sandbox_id: str) -> int:
        state = self.runtime._crun.state(sandbox_id)
        return int(state.get("pid") or 0) if state else 0

    def wait_idle(self) -> int:
        """Wait until every agent exited idle (at most --idle + 60 s); how many did."""
        deadline = time.monotonic() + self.args.idle + 60
        while time.monotonic() < deadline:
            alive = sum(1 for sid in self.ids if agent_pids(self.runtime, sid))
            if alive == 0:
                break
            time.sleep(1)
        return sum(1 for sid in self.ids if not agent_pids(self.runtime, sid))

    def first_calls(self, n: int) -> tuple[list[float], list[float]]:
        """exec("true") on idle sandboxes (their agent starts), then again (warm)."""
        cold, warm = [], []
        for sid in self.ids[:n]:
            cold.append(timed(lambda sid=sid: self.runtime.exec(sid, ["true"], user="root")))
            warm.append(timed(lambda sid=sid: self.runtime.exec(sid, ["true"], user="root")))
        return cold, warm

    def parts(self) -> dict[str, str]:
        """Per-sandbox figures read on the sandboxes themselves (before any first call)."""
        sample = self.ids[:50]
        memcg = statistics.mean(memcg_usage(self.runtime, sid) for sid in sample) / 1024
        inits = [smaps(pid) for pid in map(self.init_pid, sample) if pid]
        mean = {k: statistics.mean(r[k] for r in inits) for k in ("Rss", "Pss", "Anonymous")}
        return {
            "sandbox memcg usage": f"{memcg:8.0f}   (what the sandbox's cgroup is charged)",
            "init": f"Rss {mean['Rss']:.0f}, Pss {mean['Pss']:.0f}, Anonymous "
                    f"{mean['Anonymous']:.0f}",
            "nft objects": f"{nft_objects(self.runtime, self.ids[0]):8d}   (chains, sets, "
                           "rules, map elements)",
        }  # fmt: skip

    def destroy(self) -> None:
        def one(sid: str) -> None:
            try:
                self.runtime.destroy(sid)
            except Exception as exc:  # noqa: BLE001 - clean up the rest
                print(f"destroying {sid}: {exc}")

        print(f"destroying {len(self.ids)} sandboxes", flush=True)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(one, self.ids))


def report(run: Run, before: Meminfo, after: Meminfo, tasks: float, baseline: Baseline,
           idle_now: int, calls: tuple[list[float], list[float]], parts: dict[str, str],
           own: float) -> None:  # fmt: skip
    n = len(run.ids)
    delta = after.per(before, n)
    print(f"\n{n} idle started sandboxes ({idle_now} with their agent exited idle); "
          f"start p50 {statistics.median(run.start_ms):.0f} ms")
    print("memory per sandbox, kB (the host's /proc/meminfo delta / n):")
    print(f"  MemAvailable        {delta['MemAvailable']:8.0f}   <- the honest figure")
    for key in ("AnonPages", "SUnreclaim", "SReclaimable", "KernelStack", "PageTables",
                "Cached", "Buffers", "Shmem"):  # fmt: skip
        print(f"  {key:<19} {delta[key]:8.0f}")
    print(f"  this process (the server's part: DNS listeners, ...) {own:8.0f}   (Anonymous,"
          " counted in AnonPages)")
    for key, value in parts.items():
        print(f"  {key:<19} {value}")
    if run.agent_rollups:
        agent = {k: statistics.mean(r[k] for r in run.agent_rollups) for k in run.agent_rollups[0]}
        print(f"agent while it runs: Rss {agent['Rss']:.0f} kB, Pss {agent['Pss']:.0f} kB, "
              f"Anonymous {agent['Anonymous']:.0f} kB (mean of {len(run.agent_rollups)})")
    cold, warm = calls
    if cold:
        print(f"exec('true') on an idle sandbox (agent starts) p50 {statistics.median(cold):.0f}"
              f" ms, then warm p50 {statistics.median(warm):.1f} ms (own connection each)")
    print(f"baseline, bare crun run of sleep (n={baseline.n}, per container): MemAvailable "
          f"{baseline.per_available:.0f} kB, AnonPages {baseline.per_anon:.0f} kB, memcg usage "
          f"{baseline.memcg:.0f} kB, sleep Rss {baseline.rss:.0f} kB, Anonymous "
          f"{baseline.anon:.0f} kB")
    per = max(delta["MemAvailable"], 1.0)
    print("\nwhat limits idle started sandboxes on this host:")
    rows = limits(run.runtime, run.ids[0], per_kb=per, tasks=tasks,
                  avail_kb=before["MemAvailable"], reserve_kb=run.args.reserve_gib * 1024 * MIB)
    for name, count, why in sorted(rows, key=lambda r: r[1]):
        print(f"  {name:<22} {count:>10,}  {why}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max", type=int, default=1000, help="sandboxes to start at most")
    parser.add_argument("--idle", type=float, default=2.0, help="COVE_AGENT_IDLE_SECONDS")
    parser.add_argument("--reserve-gib", type=float, default=2.0,
                        help="stop when MemAvailable falls below this")
    parser.add_argument("--baseline", type=int, default=20, help="bare crun containers")
    parser.add_argument("--sample", type=int, default=10, help="agents measured while alive")
    parser.add_argument("--pool", default="100.96.0.0/16", help="sandbox addresses")
    parser.add_argument("--profile-at", default="100,300,1000",
                        help="profile the start of these sandboxes (comma-separated)")
    args = parser.parse_args()
    args.profile_at = {int(n) for n in args.profile_at.split(",") if n}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (ignored in a background job)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    data_dir = private_dir(Path(tempfile.mkdtemp(prefix="cove-density-")), tighten=True)
    settings = Settings(
        data_dir=data_dir, snapshot_dir=SHARED_SNAPSHOTS, network_pool=args.pool,
        agent_idle_seconds=args.idle, stop_grace_seconds=1.0,
        cgroup_parent=f"cove-density-{uuid.uuid4().hex[:6]}",
    )  # fmt: skip
    runtime = OciRuntime(settings)
    run = Run(runtime, args)
    baseline = Baseline(runtime, settings, args.baseline)
    host = HostSide(settings.cgroup_parent)
    try:
        baseline.measure()
        before, tasks0, own0 = Meminfo.read(), host_tasks(), smaps(os.getpid())["Anonymous"]
        charged0 = host.charged()
        run.fill()
        idle_now = run.wait_idle()
        time.sleep(2)
        n = max(len(run.ids), 1)
        after, tasks = Meminfo.read(), (host_tasks() - tasks0) / n
        own = (smaps(os.getpid())["Anonymous"] - own0) / n
        parts = run.parts()
        parts.update(host.per_sandbox(charged0, n))
        calls = run.first_calls(min(10, len(run.ids)))
        report(run, before, after, tasks, baseline, idle_now, calls, parts, own)
    except KeyboardInterrupt:
        print("interrupted: cleaning up")
    finally:
        baseline.clean()
        run.destroy()
        host.close()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
