"""The host settings a sandbox's start applies (runner/host/hostprep.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.runner.host import mounts
from cove.runner.host.hostprep import cgroup2_mount
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import ok


def test_a_start_sets_favordynmods_on_the_cgroup2_root(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    if "favordynmods" not in Path("/sys/kernel/cgroup/features").read_text().split():
        pytest.skip("the kernel has no favordynmods")
    sid = make_sandbox().sandbox_id
    found = cgroup2_mount(mounts.mount_table())
    if found is None:
        pytest.skip("no cgroup2 mount on this host")
    assert "favordynmods" in found.options
    # commands, each in a cgroup of its own joined by a spare process, run back to back
    assert [ok(runtime, sid, f"echo {i}") for i in range(5)] == [f"{i}\n" for i in range(5)]
