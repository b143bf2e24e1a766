"""What tests may never leave on the host: mounts, loop devices, crun containers
and cgroups of sandboxes that no longer exist.

Scoped to one data dir, so a developer's own running server (or a concurrent
test run) does not count as a leak; cgroups count when no live container owns them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _containers() -> list[dict]:
    out = subprocess.run(["crun", "list", "-f", "json"], capture_output=True, text=True)
    return json.loads(out.stdout or "[]") or [] if out.returncode == 0 else []


def _cove_cgroup_parents() -> list[Path]:
    parents = [p for p in CGROUP_ROOT.glob("*/cove") if p.is_dir()]
    if (CGROUP_ROOT / "cove").is_dir():
        parents.append(CGROUP_ROOT / "cove")
    return parents


def leaks(data_dir: Path) -> list[str]:
    """Everything under ``data_dir`` still held on the host, and orphaned cgroups."""
    where = str(data_dir)
    found = [
        f"mount {line.split()[1]} ({line.split()[2]})"
        for line in Path("/proc/mounts").read_text().splitlines()
        if where in line
    ]
    containers = _containers()
    found += [f"crun container {c['id']}" for c in containers if where in c.get("bundle", "")]
    alive = {c["id"] for c in containers}
    for parent in _cove_cgroup_parents():
        children = [p for p in parent.iterdir() if p.is_dir()]
        found += [f"cgroup {p}" for p in children if p.name not in alive]
        if not children and not alive:
            found.append(f"cgroup {parent}")
    losetup = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    found += [f"loop {line}" for line in losetup.splitlines() if where in line]
    return found


def assert_no_leaks(data_dir: Path) -> None:
    left = leaks(data_dir)
    assert not left, "left on the host: " + "; ".join(left)
