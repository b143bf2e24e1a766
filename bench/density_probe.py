"""Measurements for bench/density.py: host memory, a sandbox's processes, its share of
host-wide limits, and the bare-crun baseline."""

from __future__ import annotations

import ipaddress
import json
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cove.core.config import Settings
from cove.runner.host import cgroups, idrange, mounts
from cove.runner.layout import SandboxPaths
from cove.runner.oci import spec
from cove.runner.oci.runtime import OciRuntime

MIB = 1024
MOUNTS_PER_SANDBOX = 7


class Meminfo(dict[str, int]):
    """/proc/meminfo in kB."""

    @classmethod
    def read(cls) -> Meminfo:
        info = cls()
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, value = line.split(":")
            info[key] = int(value.split()[0])
        return info

    def per(self, before: Meminfo, n: int) -> dict[str, float]:
        """Growth since ``before`` per sandbox (MemAvailable: what it lost)."""
        out = {k: (self[k] - before[k]) / max(n, 1) for k in self}
        out["MemAvailable"] = -out["MemAvailable"]
        return out


def smaps(pid: int) -> dict[str, int]:
    """Rss, Pss and Anonymous kB of a process (zeros when it is gone)."""
    found = {"Rss": 0, "Pss": 0, "Anonymous": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in found:
                found[key] = int(rest.split()[0])
    except OSError:
        pass
    return found


def host_tasks() -> int:
    """Threads on the host, kernel threads included."""
    total = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            total += len(os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
    return total


def agent_pids(runtime: OciRuntime, sandbox_id: str) -> list[int]:
    """Children of the sandbox's init (its agent, when it runs), as host pids."""
    state = runtime._crun.state(sandbox_id)
    pid = int(state.get("pid") or 0) if state else 0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [int(p) for p in children
                if Path(f"/proc/{p}/cmdline").read_bytes().startswith(b"/dev/.cove/py/")]
    except OSError:
        return []


def memcg_usage(runtime: OciRuntime, sandbox_id: str) -> int:
    """Bytes charged to the sandbox's memory cgroup (init, agent, workload, kernel)."""
    group = cgroups.group_of(runtime._settings.cgroup_parent, sandbox_id)
    directory = cgroups.controller_dir(group, "memory")
    for name in ("memory.usage_in_bytes", "memory.current"):
        if (directory / name).exists():
            return int((directory / name).read_text())
    return 0


def nft_objects(runtime: OciRuntime, sandbox_id: str) -> int:
    """Chains, sets, rules and map/set elements of one sandbox in ``inet cove``."""
    net = runtime._net
    link = net.link(SandboxPaths.of(runtime._settings.data_dir, sandbox_id)) if net else None
    if link is None:
        return 0
    key = link.key
    out = subprocess.run(["nft", "-j", "list", "table", "inet", "cove"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    count = 0
    for item in json.loads(out)["nftables"]:
        kind, body = next(iter(item.items()))
        if kind in ("chain", "set") and body.get("name", "").endswith(key):
            count += 1 + len(body.get("elem", []))
        elif kind == "rule" and body.get("chain", "").endswith(key):
            count += 1
        elif kind in ("map", "set"):
            count += sum(1 for e in body.get("elem", []) if link.veth in json.dumps(e)
                         or link.guest in json.dumps(e))  # fmt: skip
    return count


def _sysctl(name: str) -> int:
    return int(Path("/proc/sys", name.replace(".", "/")).read_text().split()[0])


def limits(runtime: OciRuntime, sandbox_id: str, *, per_kb: float, tasks: float,
           avail_kb: int, reserve_kb: float) -> list[tuple[str, int, str]]:  # fmt: skip
    """(limit, sandboxes it allows, why) for each host-wide resource a sandbox takes."""
    settings = runtime._settings
    pool = ipaddress.ip_network(settings.network_pool)
    pid_max, threads_max = _sysctl("kernel.pid_max"), _sysctl("kernel.threads-max")
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    userns = _sysctl("user.max_user_namespaces")
    return [
        ("memory", int((avail_kb - reserve_kb) / per_kb),
         f"(MemAvailable {avail_kb // MIB} MiB - reserve) / {per_kb:.0f} kB"),
        ("pids", int(min(pid_max, threads_max) / max(tasks, 0.01)),
         f"min(kernel.pid_max {pid_max}, threads-max {threads_max}) / {tasks:.2f} tasks"),
        ("server descriptors", soft // 2,
         f"server RLIMIT_NOFILE soft {soft} / 2 (DNS listener + agent channel)"),
        ("id ranges", idrange.COUNT, "host id ranges of 2^17 ids in [2^28, 2^31)"),
        ("network pool", pool.num_addresses // 2, f"/31 pairs in {pool} (COVE_NETWORK_POOL)"),
        ("user namespaces", userns // 2, f"user.max_user_namespaces {userns} / 2 per sandbox"),
        ("loop devices", (1 << 20) - 1, "1 per sandbox; loop minors (2^20)"),
        ("mounts", _sysctl("fs.mount-max") // MOUNTS_PER_SANDBOX,
         f"fs.mount-max {_sysctl('fs.mount-max')} per mount namespace / {MOUNTS_PER_SANDBOX}"
         " (disk, idmapped lower and disk, overlay, 3 namespace files; the host's and each"
         " crun call's)"),
    ]  # fmt: skip


class Baseline:
    """Bare ``crun run`` containers of the default snapshot running ``sleep``: each its
    own overlay over the same lower layer, no user or network namespace, no agent."""

    def __init__(self, runtime: OciRuntime, settings: Settings, n: int) -> None:
        self.runtime, self.settings, self.n = runtime, settings, n
        self.work = Path(tempfile.mkdtemp(prefix="base-", dir=settings.data_dir))
        self.made: list[str] = []
        self.per_available = self.per_anon = self.memcg = self.rss = self.anon = 0.0

    def measure(self) -> None:
        lower = (self.settings.snapshot_dir / "cove-default" / "current").resolve() / "rootfs"
        before = Meminfo.read()
        for i in range(self.n):
            self._run_one(lower, i)
        time.sleep(2)
        delta = Meminfo.read().per(before, self.n)
        self.per_available, self.per_anon = delta["MemAvailable"], delta["AnonPages"]
        usage, rss, anon = [], [], []
        for cid in self.made:
            directory = cgroups.controller_dir(f"{self.settings.cgroup_parent}/{cid}", "memory")
            name = "memory.usage_in_bytes" if cgroups.mode() is not cgroups.CgroupMode.UNIFIED \
                else "memory.current"
            usage.append(int((directory / name).read_text()) / 1024)
            state = self.runtime._crun.state(cid) or {}
            rollup = smaps(int(state.get("pid") or 0))
            rss.append(rollup["Rss"])
            anon.append(rollup["Anonymous"])
        self.memcg, self.rss, self.anon = (sum(v) / max(len(v), 1) for v in (usage, rss, anon))
        self.clean()

    def _run_one(self, lower: Path, i: int) -> None:
        cid = f"base-{self.settings.cgroup_parent}-{i}"
        bundle = self.work / cid
        for d in ("upper", "work", "rootfs"):
            (bundle / d).mkdir(parents=True)
        mounts.mount_overlay(lower, bundle / "upper", bundle / "work", bundle / "rootfs")
        self.made.append(cid)
        config = {
            "ociVersion": "1.0.2",
            "process": {"args": ["/bin/sleep", "infinity"], "cwd": "/", "user": {"uid": 0,
                        "gid": 0}, "env": ["PATH=" + spec.DEFAULT_PATH], "noNewPrivileges": True},
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                       {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                        "options": ["nosuid", "mode=755", "size=65536k"]}],
            "linux": {"namespaces": [{"type": t} for t in spec.NAMESPACES if t != "network"],
                      "cgroupsPath": f"/{self.settings.cgroup_parent}/{cid}"},
        }  # fmt: skip
        (bundle / "config.json").write_text(json.dumps(config))
        self.runtime._crun.run_detached(cid, bundle, bundle / "log")

    def clean(self) -> None:
        for cid in self.made:
            try:
                self.runtime._crun.delete(cid)
            except Exception as exc:  # noqa: BLE001 - clean up the rest
                print(f"deleting {cid}: {exc}")
            mounts.unmount(self.work / cid / "rootfs")
            cgroups.remove(f"{self.settings.cgroup_parent}/{cid}")
        self.made = []
        shutil.rmtree(self.work, ignore_errors=True)


class HostSide:
    """A memory cgroup (v1 hierarchy) this process runs in, so that what it and its
    helpers (nsexec, ip, nft, mkfs, crun) make for the sandboxes on the host side
    (network namespaces, veths, nft rules, mounts, page cache of the images) is
    charged apart from the rest of a shared host. None of it on a pure v2 host."""

    def __init__(self, parent: str) -> None:
        root = Path("/sys/fs/cgroup/memory")
        self.path = root / f"{parent}-host" if (root / "memory.stat").exists() else None
        if self.path is not None:
            self.path.mkdir()
            (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def charged(self) -> dict[str, int]:
        if self.path is None:
            return {}
        stat = dict(line.split() for line in (self.path / "memory.stat").read_text().splitlines())
        kmem = int((self.path / "memory.kmem.usage_in_bytes").read_text())
        return {"kernel": kmem, "cache": int(stat["total_cache"]), "rss": int(stat["total_rss"])}

    def per_sandbox(self, before: dict[str, int], n: int) -> dict[str, str]:
        now = self.charged()
        if not now:
            return {}
        d = {k: (now[k] - before[k]) / n / 1024 for k in now}
        return {"host side, kernel": f"{d['kernel']:8.0f}   (charged to the creating process: "
                                     "netns, veth, nft, mounts, namespaces)",
                "host side, cache": f"{d['cache']:8.0f}   (page cache: the images, reclaimable)",
                "host side, anon": f"{d['rss']:8.0f}   (this process and its helpers)"}

    def close(self) -> None:
        if self.path is not None:
            (self.path.parent / "cgroup.procs").write_text(str(os.getpid()))
            for _ in range(50):
                try:
                    self.path.rmdir()
                    return
                except OSError:
                    time.sleep(0.1)  # (charges move off an empty cgroup lazily)
