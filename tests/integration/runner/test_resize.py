"""Live CPU/memory resize without restart; disk resize while stopped."""

from __future__ import annotations

import pytest

from cove.core.ports import Resources
from cove.errors import RuntimeBackendError
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import cgroup_value, group, init_pid, ok, sandbox_dir

pytestmark = pytest.mark.integration
GIB = 1 << 30


def _limits(runtime: OciRuntime, sid: str) -> tuple[str, int]:
    name = group(runtime, sid)
    quota = cgroup_value(name, ("cpu", "cpu.cfs_quota_us"), "cpu.max").split()[0]
    memory = int(cgroup_value(name, ("memory", "memory.limit_in_bytes"), "memory.max"))
    return quota, memory


def test_live_resize_changes_cgroup_without_restart(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox(cpu=1, memory=1)
    sid = box.sandbox_id
    pid = init_pid(runtime, sid)
    assert _limits(runtime, sid) == ("100000", 1 * GIB)
    runtime.resize(sid, Resources(cpu=2, memory=2, disk=3), live=True)
    assert _limits(runtime, sid) == ("200000", 2 * GIB)
    runtime.resize(sid, Resources(cpu=1, memory=1, disk=3), live=True)
    assert _limits(runtime, sid) == ("100000", 1 * GIB)
    assert init_pid(runtime, sid) == pid
    assert ok(runtime, sid, "echo same") == "same\n"


def _disk_kib(runtime: OciRuntime, sid: str) -> int:
    return int(ok(runtime, sid, "df -k --output=size / | tail -1").strip())


def test_disk_grows_and_refuses_to_shrink_below_data(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox(disk=1)
    sid = box.sandbox_id
    ok(runtime, sid, "head -c 700M /dev/zero > /home/daytona/big && sync")
    small = _disk_kib(runtime, sid)
    runtime.stop(sid)
    with pytest.raises(RuntimeBackendError):
        runtime.resize(sid, Resources(1, 1, 3), live=True)  # not running
    runtime.resize(sid, Resources(cpu=1, memory=1, disk=3), live=False)
    assert (sandbox_dir(runtime, sid) / "disk.img").stat().st_size == 3 * GIB
    runtime.start(box)
    assert _disk_kib(runtime, sid) > 2.5 * small
    ok(runtime, sid, "head -c 1500M /dev/zero > /home/daytona/more && sync")
    runtime.stop(sid)
    with pytest.raises(RuntimeBackendError):
        runtime.resize(sid, Resources(cpu=1, memory=1, disk=1), live=False)
    assert (sandbox_dir(runtime, sid) / "disk.img").stat().st_size == 3 * GIB
    runtime.start(box)
    assert ok(runtime, sid, "stat -c %s /home/daytona/more") == f"{1500 << 20}\n"
    ok(runtime, sid, "rm /home/daytona/more /home/daytona/big")
    runtime.stop(sid)
    runtime.resize(sid, Resources(cpu=1, memory=1, disk=2), live=False)
    runtime.start(box)
    assert _disk_kib(runtime, sid) < 2.1 * GIB / 1024


def test_resize_of_archived_sandbox_is_a_no_op(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox(start=False)
    runtime.archive(box.sandbox_id)
    runtime.resize(box.sandbox_id, Resources(cpu=2, memory=2, disk=5), live=False)
