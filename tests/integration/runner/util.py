"""Small helpers shared by the runtime integration tests."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from cove.core.ports import ExecResult
from cove.runner.host import cgroups
from cove.runner.host.firewall import Link
from cove.runner.layout import SandboxPaths
from cove.runner.oci import runsc
from cove.runner.oci.runtime import OciRuntime

TIERS = ("crun", pytest.param("gvisor", marks=pytest.mark.skipif(
    not runsc.available(), reason="runsc (gVisor) is not installed")))


@pytest.fixture(params=TIERS)
def both_tiers(request: pytest.FixtureRequest) -> str:
    """Import as ``tier`` to run a module's tests on both isolation tiers."""
    return request.param


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
    """Host pid of the sandbox's init (on gVisor: of its sentry, which runs it)."""
    state = runtime._client_of(tier_of(runtime, sandbox_id)).state(sandbox_id)
    assert state is not None
    return int(state["pid"])


def tier_of(runtime: OciRuntime, sandbox_id: str) -> str:
    """The sandbox's isolation tier."""
    return runtime._tier(SandboxPaths.of(runtime._settings.data_dir, sandbox_id))


def inside_as_host(runtime: OciRuntime, sandbox_id: str, script: str) -> str:
    """(gVisor) Run ``script`` in the sandbox with ``runsc exec``, as root of gVisor
    itself (not through the agent, as the host would); returns its stdout."""
    argv = runtime._runsc.argv("exec", sandbox_id, "/bin/sh", "-c", script)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done
    return done.stdout


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


def agent_pids(runtime: OciRuntime, sandbox_id: str) -> list[int]:
    """Host pids of the toolbox agent of a crun sandbox while it runs: init's children
    that run the agent's runtime (init started it, or a pre-started agent entered the
    sandbox and became init's child; init's other children are orphans of the
    workload, and a child the agent forks is the agent's)."""
    init = init_pid(runtime, sandbox_id)
    found = []
    for pid in Path(f"/proc/{init}/task/{init}/children").read_text().split():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"/dev/.cove/py/"):
                found.append(int(pid))
        except OSError:
            continue  # (gone meanwhile)
    return sorted(found)
