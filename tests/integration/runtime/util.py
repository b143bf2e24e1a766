"""Small helpers shared by the runtime integration tests."""

from __future__ import annotations

from pathlib import Path

from cove.core.ports import ExecResult
from cove.runtime import cgroups
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


def cgroup_value(sandbox_id: str, v1: tuple[str, str], v2: str) -> str:
    """A sandbox cgroup file: ``v1`` is (controller, file); ``v2`` the unified file name."""
    if cgroups.mode() is cgroups.CgroupMode.UNIFIED:
        return (cgroups.controller_dir(sandbox_id, "") / v2).read_text().strip()
    controller, name = v1
    return (cgroups.controller_dir(sandbox_id, controller) / name).read_text().strip()


def init_pid(runtime: OciRuntime, sandbox_id: str) -> int:
    """Host pid of the sandbox's init."""
    state = runtime._crun.state(sandbox_id)
    assert state is not None
    return int(state["pid"])


def sandbox_dir(runtime: OciRuntime, sandbox_id: str) -> Path:
    return runtime._settings.data_dir / "sandboxes" / sandbox_id
