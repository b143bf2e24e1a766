"""Sandbox lifecycle figures through the official SDK, against raw ``crun run``.

Run as root after ``make setup``::

    .venv/bin/python bench/lifecycle.py [--n 20]

Prints, from one run: SDK create-to-started p50/p95 (cold: every sandbox is
new, no pool), the first ``exec("true")`` after it and the two together (create
to first command answered), stop, start, archive, restore (start of an archived sandbox)
and delete, and the raw ``crun run`` of the same bundle (same rootfs, same
config) as the baseline, with the ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig, Sandbox

from cove.runner.host import mounts
from cove.runner.oci import spec
from cove.runner.oci.crun import Crun
from cove.runner.oci.initbin import ensure_init_binary
from cove.testing import ServerProcess

KEY = "bench-key"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(name: str, values: list[float], baseline: float | None = None) -> str:
    p50, p95 = statistics.median(values), pct(values, 0.95)
    ratio = f"{p50 / baseline:6.1f}x" if baseline else ""
    return f"{name:<36} {p50:9.1f} {p95:9.1f}  {ratio}"


def sdk_figures(daytona: Daytona, n: int) -> dict[str, list[float]]:
    figures: dict[str, list[float]] = {k: [] for k in (
        "create", "first exec", "create+exec", "stop", "start", "archive", "restore", "delete")}
    daytona.create().delete()  # warm the server's code paths, not a pool
    for _ in range(n):
        box: list = []
        figures["create"].append(timed(lambda box=box: box.append(
            daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0)))))
        sb = box[0]
        figures["first exec"].append(timed(lambda sb=sb: sb.process.exec("true")))
        figures["create+exec"].append(figures["create"][-1] + figures["first exec"][-1])
        figures["stop"].append(timed(sb.stop))
        figures["start"].append(timed(sb.start))
        figures["archive"].append(timed(sb.archive))
        figures["restore"].append(timed(sb.start))
        figures["delete"].append(timed(sb.delete))
    return figures


def pause_figures(daytona: Daytona, n: int) -> dict[str, list[float]]:
    """Pause (SDK ``pause``) and resume (SDK ``start`` of a paused sandbox) of one
    sandbox with a Python process running in it."""
    figures: dict[str, list[float]] = {"pause": [], "resume": []}
    sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    try:
        sb.process.exec("setsid python3 -c 'import time\nwhile 1: time.sleep(0.01)' "
                        ">/dev/null 2>&1 </dev/null &")  # fmt: skip
        for _ in range(n):
            figures["pause"].append(timed(sb.pause))
            figures["resume"].append(timed(sb.start))
    finally:
        sb.delete()
    return figures


def archive_figures(daytona: Daytona, sizes_mb: list[int]) -> list[tuple[int, float, float]]:
    """Archive and restore of a sandbox holding ``size`` MB of random (incompressible)
    data: (size MB, archive ms, restore ms) per size."""
    out = []
    for size in sizes_mb:
        sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
        try:
            fill = f"head -c {size * 1_000_000} /dev/urandom > /home/daytona/blob"
            assert sb.process.exec(fill, timeout=600).exit_code == 0
            sb.stop()  # archive time without the stop
            archive_ms = timed(sb.archive)
            restore_ms = timed(lambda sb=sb: sb.start(timeout=900))
            out.append((size, archive_ms, restore_ms))
        finally:
            sb.delete()
    return out


@contextlib.contextmanager
def plain_bundle(server: ServerProcess, sb: Sandbox) -> Iterator[tuple[Crun, Path, dict]]:
    """Crun, a work dir and an OCI config of cove-init in a plain bundle: ``sb``'s own
    config without its user and network namespaces, agent and host-prepared mounts,
    over a plain overlay of the same snapshot (what a container costs without Cove).
    Each container's bundle goes next to ``work`` (``work.parent / id``), with its own
    ``cgroupsPath``; the overlay and ``work`` are removed afterwards."""
    crun = Crun(ensure_init_binary(server.data_dir))
    source = server.data_dir / "sandboxes" / sb.id
    # Next to the sandbox's own directory (on the same file system as a sandbox's).
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=source.parent))
    lower = json.loads((source / "sandbox.json").read_text())["lower"]
    for d in ("upper", "work", "rootfs"):
        (work / d).mkdir()
    mounts.mount_overlay(Path(lower), work / "upper", work / "work", work / "rootfs")
    try:
        config = json.loads((source / "bundle" / "config.json").read_text())
        config["root"]["path"] = str(work / "rootfs")
        config["process"]["args"] = ["/dev/.cove/init"]
        config["process"]["user"] = {"uid": 0, "gid": 0}
        config["linux"]["namespaces"] = [{"type": t} for t in spec.NAMESPACES]
        config["mounts"] = [m for m in config["mounts"]
                            if not m["source"].startswith(str(source))]  # fmt: skip
        yield crun, work, config
    finally:
        mounts.unmount(work / "rootfs")
        shutil.rmtree(work, ignore_errors=True)


def raw_crun(server: ServerProcess, daytona: Daytona, n: int) -> tuple[list[float], list[float]]:
    """``crun run --detach`` of cove-init in a plain bundle (see ``plain_bundle``)."""
    sb = daytona.create(CreateSandboxFromSnapshotParams(auto_stop_interval=0))
    run_ms, cycle_ms = [], []
    try:
        with plain_bundle(server, sb) as (crun, work, config):
            for i in range(n):
                cid = f"bench-{i}"
                bundle = work.parent / cid
                bundle.mkdir()
                config["linux"]["cgroupsPath"] = f"/{server.cgroup_parent}/{cid}"
                (bundle / "config.json").write_text(json.dumps(config))
                start = time.perf_counter()
                crun.run_detached(cid, bundle, work / "log")
                run_ms.append((time.perf_counter() - start) * 1000)
                crun.delete(cid)
                cycle_ms.append((time.perf_counter() - start) * 1000)
                shutil.rmtree(bundle, ignore_errors=True)
    finally:
        sb.delete()
    return run_ms, cycle_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="sandboxes per figure")
    parser.add_argument("--archive-mb", default="100,1074",
                        help="comma-separated sizes (MB) for archive throughput; '' skips")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="cove-bench-data-"))
    server = ServerProcess(data_dir, api_key=KEY)
    server.start()
    try:
        daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
        run_ms, cycle_ms = raw_crun(server, daytona, args.n)
        figures = sdk_figures(daytona, args.n)
        paused = pause_figures(daytona, args.n)
        sizes = [int(s) for s in args.archive_mb.split(",") if s]
        archives = archive_figures(daytona, sizes)
    finally:
        server.delete_all_sandboxes()
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    base = statistics.median(run_ms)
    print(f"n={args.n} per figure; times in ms")  # noqa: T201
    print(f"{'':<36} {'p50':>9} {'p95':>9}  vs raw crun run")  # noqa: T201
    print(row("raw crun run --detach (baseline)", run_ms, base))  # noqa: T201
    print(row("raw crun run + delete", cycle_ms))  # noqa: T201
    print(row("SDK create -> started (cold)", figures["create"], base))  # noqa: T201
    print(row("SDK first exec('true') after create", figures["first exec"]))  # noqa: T201
    print(row("SDK create -> first exec done (cold)", figures["create+exec"], base))  # noqa: T201
    for name in ("stop", "start", "archive", "restore", "delete"):
        print(row(f"SDK {name}", figures[name], base))  # noqa: T201
    print(row("SDK pause (running python)", paused["pause"]))  # noqa: T201
    print(row("SDK start of paused (resume)", paused["resume"]))  # noqa: T201
    for size, archive_ms, restore_ms in archives:
        print(f"archive {size} MB random data: {archive_ms:8.0f} ms "  # noqa: T201
              f"{size / archive_ms * 1000:7.1f} MB/s; restore+start {restore_ms:8.0f} ms "
              f"{size / restore_ms * 1000:7.1f} MB/s")  # fmt: skip


if __name__ == "__main__":
    main()
