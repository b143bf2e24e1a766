"""Create and exec cost of the isolation tiers, against raw runtimes, in one run.

Run as root after ``make setup`` (runsc installed for the gVisor rows)::

    .venv/bin/python bench/isolation.py [--n 20]

Prints create-to-started, exec (a ``true``) and delete p50/p95 for:

- raw ``crun run --detach`` of a plain bundle (the snapshot's rootfs, read-only,
  new pid/ipc/uts/mount/network namespaces, ``sleep``): the baseline;
- the same bundle with a user namespace (ids mapped far above the host's);
- Cove's crun tier, through the official SDK (create answers ``started``, its
  toolbox agent up; exec through the agent);
- raw ``runsc run --detach`` of the plain bundle (``--network=none``, its own
  state root);
- Cove's gVisor tier, through the SDK (label ``cove.io/isolation: gvisor``).

Raw exec is ``crun exec`` / ``runsc exec``; Cove's is ``sandbox.process.exec``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig

from cove.runner.host import cgroups, mountapi, mounts
from cove.runner.oci import runsc
from cove.runner.oci.crun import Crun
from cove.runner.oci.initbin import ensure_init_binary
from cove.testing import ServerProcess

KEY = "bench-key"
SNAPSHOT = Path("/var/lib/cove/snapshots/cove-default/current/rootfs")
FAR_IDS = 0x90000000  # a user namespace's ids on the host: above every Cove range
PARENT = "cove-bench-iso"
Figures = dict[str, list[float]]


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def plain_config(cid: str, rootfs: Path, *, userns: bool) -> dict:
    """A minimal OCI config: ``rootfs`` read-only, ``sleep``, its own namespaces."""
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")]
    config = {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "cwd": "/",
                    "args": ["/bin/sleep", "3600"], "env": ["PATH=/usr/bin:/bin"],
                    "noNewPrivileges": True},
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": cid,
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "mode=755"]}],
        "linux": {"namespaces": namespaces, "cgroupsPath": f"/{PARENT}/{cid}"},
    }  # fmt: skip
    if userns:
        namespaces.append({"type": "user"})
        mapping = [{"containerID": 0, "hostID": FAR_IDS, "size": 65536}]
        config["linux"]["uidMappings"] = config["linux"]["gidMappings"] = mapping
    return config


def raw(kind: str, n: int, work: Path) -> Figures:
    """Create, exec and delete of plain bundles with raw crun or runsc."""
    figures: Figures = {"create": [], "exec": [], "delete": []}
    helper = ensure_init_binary(work / "data")
    crun = Crun(helper)
    state = work / "runsc-state"
    rsc = ["runsc", "--root", str(state), "--network=none"]
    for i in range(n):
        cid = f"bench-{kind}-{i}"
        bundle = work / cid
        bundle.mkdir()
        config = plain_config(cid, work / "rootfs", userns=kind == "userns")
        (bundle / "config.json").write_text(json.dumps(config))
        if kind == "runsc":
            figures["create"].append(timed(lambda b=bundle, c=cid: _check(
                rsc + ["run", "--detach", "--bundle", str(b), c])))
            figures["exec"].append(timed(lambda c=cid: _check(rsc + ["exec", c, "/bin/true"])))
            figures["delete"].append(timed(lambda c=cid: _check(rsc + ["delete", "--force", c])))
        else:
            figures["create"].append(timed(lambda b=bundle, c=cid: crun.run_detached(
                c, b, work / "log")))
            figures["exec"].append(timed(lambda c=cid: _check(
                crun.argv("exec", c, "/bin/true"))))
            figures["delete"].append(timed(lambda c=cid: crun.delete(c)))
        cgroups.remove(f"{PARENT}/{cid}")
        shutil.rmtree(bundle)
    return figures


def cove(daytona: Daytona, n: int, tier: str) -> Figures:
    """Create (to started), exec and delete of Cove sandboxes through the SDK."""
    figures: Figures = {"create": [], "exec": [], "delete": []}
    params = CreateSandboxFromSnapshotParams(labels={"cove.io/isolation": tier},
                                             auto_stop_interval=0)  # fmt: skip
    daytona.create(params).delete()  # warm the server's code paths (no pool)
    for _ in range(n):
        box: list = []
        figures["create"].append(timed(lambda box=box: box.append(daytona.create(params))))
        sb = box[0]
        for _ in range(3):
            figures["exec"].append(timed(lambda sb=sb: sb.process.exec("true")))
        figures["delete"].append(timed(sb.delete))
    return figures


def _check(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)  # fmt: skip


def report(rows: dict[str, Figures]) -> None:
    base = {k: statistics.median(v) for k, v in rows["raw crun run"].items()}
    print(f"{'':<34} {'create p50':>10} {'p95':>8}  {'exec p50':>9} {'p95':>8}  "  # noqa: T201
          f"{'delete p50':>10} {'p95':>8}   (ms; x raw crun)")
    for name, figures in rows.items():
        cells = []
        for key in ("create", "exec", "delete"):
            p50, p95 = statistics.median(figures[key]), pct(figures[key], 0.95)
            cells.append(f"{p50:8.1f} {p95:8.1f} {p50 / base[key]:5.1f}x")
        print(f"{name:<34} " + "  ".join(cells))  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="sandboxes per row")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cove-bench-iso-"))
    # The snapshot, bound where a user namespace's root can reach it (the snapshot
    # dir may sit in a data dir that is root's alone).
    work.chmod(0o711)
    (work / "rootfs").mkdir()
    mountapi.bind(SNAPSHOT, work / "rootfs", flags=mountapi.ATTR_RDONLY)
    rows: dict[str, Figures] = {}
    try:
        rows["raw crun run"] = raw("crun", args.n, work)
        rows["raw crun run, user namespace"] = raw("userns", args.n, work)
        if runsc.available():
            rows["raw runsc run"] = raw("runsc", args.n, work)
        (work / "server").mkdir()
        server = ServerProcess(work / "server", api_key=KEY)
        server.start()
        try:
            daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url))
            rows["Cove crun tier (SDK)"] = cove(daytona, args.n, "crun")
            if runsc.available():
                rows["Cove gVisor tier (SDK)"] = cove(daytona, args.n, "gvisor")
        finally:
            server.delete_all_sandboxes()
            server.stop()
    finally:
        cgroups.remove_empty_parents(PARENT)
        mounts.unmount(work / "rootfs")
        shutil.rmtree(work, ignore_errors=True)
    report(rows)


if __name__ == "__main__":
    main()
