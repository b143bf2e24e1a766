"""What a test may never leave on the host: our mounts, cgroups, containers, loops."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def leaks(marker: str = "cove") -> list[str]:
    """Everything of ours still on the host (mounts, cgroups, crun containers)."""
    found: list[str] = []
    for line in Path("/proc/mounts").read_text().splitlines():
        source, target, fstype = line.split()[:3]
        if (fstype == "overlay" and marker in line) or marker in target:
            found.append(f"mount {target} ({fstype})")
    for depth in ("*", "*/*", "*/*/*"):
        for path in Path("/sys/fs/cgroup").glob(depth):
            if marker in path.name.lower() and path.is_dir():
                found.append(f"cgroup {path}")
    out = subprocess.run(["crun", "list", "-f", "json"], capture_output=True, text=True)
    for c in json.loads(out.stdout or "[]") if out.returncode == 0 else []:
        if marker in c.get("bundle", ""):
            found.append(f"crun container {c['id']} ({c['status']})")
    losetup = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    found += [f"loop {line}" for line in losetup.splitlines() if marker in line]
    return found


def assert_no_leaks() -> None:
    left = leaks()
    assert not left, "left on the host: " + "; ".join(left)
