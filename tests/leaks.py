"""What tests may never leave on the host: mounts (incl. netns files), loop devices,
crun and runsc containers, gVisor views, cgroups, veths, nftables rules and host id
ranges of sandboxes that no longer exist.

Scoped to one data dir and its cgroup parent, so a developer's own running
server (or a concurrent test run) does not count as a leak; cgroups count when
no live container owns them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cove.runner.oci.runtime import OciRuntime
from cove.testing_remote import RunnerProcess

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _containers() -> list[dict]:
    """crun's containers, and those of Cove's runsc state root (gVisor tier)."""
    found = []
    for argv in (["crun", "list", "-f", "json"], _runsc_list()):
        if not argv:
            continue
        out = subprocess.run(argv, capture_output=True, text=True)
        found += json.loads(out.stdout or "[]") or [] if out.returncode == 0 else []
    return found


def _runsc_list() -> list[str]:
    from cove.runner.oci import runsc

    if not runsc.available() or not runsc.STATE_ROOT.is_dir():
        return []
    return runsc.Runsc(Path("/nonexistent")).argv("list", "--format", "json")


def cgroup_parents(parent: str) -> list[Path]:
    parents = [p for p in CGROUP_ROOT.glob(f"*/{parent}") if p.is_dir()]
    if (CGROUP_ROOT / parent).is_dir():
        parents.append(CGROUP_ROOT / parent)
    return parents


def leaks(data_dir: Path, cgroup_parent: str) -> list[str]:
    """Everything under ``data_dir`` still held on the host, and orphaned cgroups
    under ``cgroup_parent``."""
    where = str(data_dir)
    found = [
        f"mount {line.split()[1]} ({line.split()[2]})"
        for line in Path("/proc/mounts").read_text().splitlines()
        if where in line
    ]
    containers = _containers()
    found += [f"container {c['id']}" for c in containers if where in c.get("bundle", "")]
    alive = {c["id"] for c in containers}
    for parent in cgroup_parents(cgroup_parent):
        children = [p for p in parent.iterdir() if p.is_dir()]
        found += [f"cgroup {p}" for p in children if p.name not in alive]
        if not children and not alive:
            found.append(f"cgroup {parent}")
    losetup = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    # (blank disks mounted ahead are the runtime's own, held while it lives, see
    # runner/host/blank_disks.py; a sandbox's disk is in its own directory)
    blank = f"{data_dir}/blank-disks/"
    found += [f"loop {line}" for line in losetup.splitlines()
              if where in line and blank not in line]  # fmt: skip
    from cove.runner.host import idrange

    found += [f"host id range of {sid}" for sid in idrange.claims(data_dir)]
    return found + _view_leaks(data_dir) + _network_leaks(data_dir)


def _view_leaks(data_dir: Path) -> list[str]:
    """gVisor views of this data dir's sandboxes (and their binds), and the data
    dir's directory of views once it holds none."""
    from cove.runner.oci import gvisor_view

    views = gvisor_view.view_dir(data_dir, "x").parent
    where = str(views) + "/"
    found = [f"mount {line.split()[1]} (view)"
             for line in Path("/proc/mounts").read_text().splitlines()
             if line.split()[1].startswith(where)]  # fmt: skip
    found += [f"gVisor view of {sid}" for sid in sorted(gvisor_view.sandbox_ids(data_dir))]
    if views.exists() and not found:
        found.append(f"empty directory {views}")
    return found


def _network_leaks(data_dir: Path) -> list[str]:
    """nft chains/sets/elements and veths of this data dir's sandboxes (netns files
    are bind mounts under the data dir, so the mount check covers them), the data
    dir's shared set once no sandbox needs it, and an empty ``inet cove`` table."""
    from cove.runner.host.network import data_tag

    tag = data_tag(data_dir)
    found = []
    out = subprocess.run(["nft", "-j", "list", "table", "inet", "cove"], capture_output=True,
                         text=True)  # fmt: skip
    if out.returncode == 0:
        text = out.stdout
        found += [f"nft object of {tag}" for _ in range(text.count(f'"{tag} '))]
        if f'"{tag}"' in text and f'"{tag} ' not in text:
            found.append(f"nft set shared by the sandboxes of {tag}")
        if '"comment"' not in text:
            found.append("nft table inet cove (empty)")
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True,
                                      text=True).stdout or "[]")  # fmt: skip
    found += [f"veth {ln['ifname']}" for ln in links
              if str(ln.get("ifalias", "")).startswith(tag + ":")]  # fmt: skip
    return found


def assert_no_leaks(data_dir: Path, cgroup_parent: str) -> None:
    left = leaks(data_dir, cgroup_parent)
    assert not left, "left on the host: " + "; ".join(left)


def stop_runner_clean(proc: RunnerProcess) -> None:
    """Stop a test's ``cove runner`` (if running), destroy what it left, and fail if it
    left sandboxes or anything on the host."""
    if proc.proc is not None:
        proc.stop()
    runtime = OciRuntime(proc.settings)
    left = runtime.list_ids()
    for sandbox_id in left:
        runtime.destroy(sandbox_id)
    assert not left, f"sandboxes left on runner {proc.data_dir}: {left}"
    assert_no_leaks(proc.data_dir, proc.cgroup_parent)
