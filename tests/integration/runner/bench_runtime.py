"""Latency figures of the real runtime (prints, asserts nothing).

Run as root: ``.venv/bin/python -m tests.integration.runner.bench_runtime [N]``.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cove.core.config import Settings
from cove.core.ports import ContainerSpec, Resources
from cove.runner.host import disk
from cove.runner.oci.runtime import OciRuntime
from cove.runner.storage.snapshot import ensure_default_snapshot

SNAPSHOTS = Path("/var/lib/cove/snapshots")


def timed(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return (time.perf_counter() - start) * 1000


def spec(sid: str) -> ContainerSpec:
    return ContainerSpec(sandbox_id=sid, hostname="bench", snapshot="cove-default",
                         resources=Resources(1, 1, 3))  # fmt: skip


def report(name: str, values: list[float]) -> None:
    values = sorted(values)
    p90 = values[min(len(values) - 1, int(len(values) * 0.9))]
    print(
        f"{name:28s} p50 {statistics.median(values):7.1f} ms   p90 {p90:7.1f} ms  (n={len(values)})"
    )


def one_round(rt: OciRuntime, tmp: Path, figures: dict[str, list[float]]) -> None:
    img = tmp / "mkfs.img"
    figures["mkfs (3 GiB sparse image)"].append(timed(disk.create_image, img, 3))
    img.unlink()
    sid = f"bench-{uuid.uuid4().hex[:8]}"
    c = timed(rt.create, spec(sid))
    s = timed(rt.start, spec(sid))
    figures["create"].append(c)
    figures["start"].append(s)
    figures["create+start"].append(c + s)
    figures["exec (true)"].append(timed(rt.exec, sid, ["true"]))
    # raw crun on the very same bundle (mounts kept), through the same wrapper
    rt._crun.delete(sid)
    bundle = tmp / "sandboxes" / sid / "bundle"
    raw = rt._crun.argv("run", "--detach", "--bundle", str(bundle), sid)
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL}
    figures["raw crun run -d"].append(timed(subprocess.run, raw, check=True, **quiet))
    figures["stop (graceful)"].append(timed(rt.stop, sid))
    rt.start(spec(sid))
    figures["stop (force)"].append(timed(rt.stop, sid, force=True))
    figures["destroy (stopped)"].append(timed(rt.destroy, sid))
    sid2 = f"bench-{uuid.uuid4().hex[:8]}"
    rt.create(spec(sid2))
    rt.start(spec(sid2))
    figures["destroy (running)"].append(timed(rt.destroy, sid2))


def main(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="cove-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), snapshot_dir=SNAPSHOTS)
        ensure_default_snapshot(settings)
        rt = OciRuntime(settings)
        rt.status("warm-up")  # compiles cove-init once
        figures: dict[str, list[float]] = {k: [] for k in (
            "mkfs (3 GiB sparse image)", "create", "start", "create+start", "raw crun run -d",
            "exec (true)", "stop (graceful)", "stop (force)", "destroy (stopped)",
            "destroy (running)",
        )}  # fmt: skip
        for _ in range(n):
            one_round(rt, Path(tmp), figures)
        for name, values in figures.items():
            report(name, values)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
