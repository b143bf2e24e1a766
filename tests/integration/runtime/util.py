"""Small helpers shared by the runtime integration tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from cove.core.ports import ExecResult
from cove.runtime import cgroups
from cove.runtime.firewall import Link
from cove.runtime.layout import SandboxPaths
from cove.runtime.oci import OciRuntime


def sh(
    runtime: OciRuntime, sandbox_id: str, script: str, *, user: str = "root",
    timeout: float | None = 60,
) -> ExecResult:  # fmt: skip
    """Run a shell script in the sandbox."""
    return runtime.exec(sandbox_id, ["/bin/sh", "-c", script], user=user, timeout=timeout)


def ok(runtime: OciRuntime, sandbox_id: str, script: str, *, user: str = "root") -> str:
    """Run a script that must succeed; return its stdout."""
    res = sh(runtime, sandbox_id, script, user=user)
    assert res.exit_code == 0, (res.exit_code, res.stdout, res.stderr)
    return res.stdout.decode()


def group(runtime: OciRuntime, sandbox_id: str) -> str:
    """The sandbox's cgroup group."""
    return cgroups.group_of(runtime._settings.cgroup_parent, sandbox_id)


def cgroup_value(group: str, v1: tuple[str, str], v2: str, *, work: bool = True) -> str:
    """A sandbox cgroup file (of its workload's cgroup unless ``work`` is False): ``v1``
    is (controller, file); ``v2`` the unified file name."""
    if work:
        group = f"{group}/work"
    if cgroups.mode() is cgroups.CgroupMode.UNIFIED:
        return (cgroups.controller_dir(group, "") / v2).read_text().strip()
    controller, name = v1
    return (cgroups.controller_dir(group, controller) / name).read_text().strip()


def init_pid(runtime: OciRuntime, sandbox_id: str) -> int:
    """Host pid of the sandbox's init."""
    state = runtime._crun.state(sandbox_id)
    assert state is not None
    return int(state["pid"])


def sandbox_dir(runtime: OciRuntime, sandbox_id: str) -> Path:
    return runtime._settings.data_dir / "sandboxes" / sandbox_id


def py(runtime: OciRuntime, sid: str, script: str, *args: str, user: str = "daytona") -> str:
    """Run a Python script in the sandbox; it must succeed. Returns its stdout."""
    res = runtime.exec(sid, ["python3", "-c", textwrap.dedent(script), *args], user=user,
                       timeout=60)  # fmt: skip
    assert res.exit_code == 0, (res.stdout, res.stderr)
    return res.stdout.decode()


def link(runtime: OciRuntime, sid: str) -> Link:
    """The host's view of the sandbox's network connection."""
    net = runtime._net
    assert net is not None
    found = net.link(SandboxPaths.of(runtime._settings.data_dir, sid))
    assert found is not None
    return found
