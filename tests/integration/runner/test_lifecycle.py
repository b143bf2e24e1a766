"""Create, start, stop, destroy: state on the host, idempotence and cleanup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from cove.core.ports import ContainerSpec, ContainerStatus, Resources
from cove.errors import RuntimeBackendError
from cove.runner.host import cgroups, disk, mounts
from cove.runner.layout import Metadata, SandboxPaths
from cove.runner.oci.runtime import OciRuntime
from cove.testing import SHARED_SNAPSHOTS
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import group, init_pid, ok, sandbox_dir

pytestmark = pytest.mark.integration


def test_files_survive_stop_and_start(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox()
    sid = box.sandbox_id
    ok(runtime, sid, "echo kept > /home/daytona/note && rm /etc/issue", user="root")
    runtime.stop(sid)
    assert runtime.status(sid) is ContainerStatus.STOPPED
    assert not mounts.mounted_under(sandbox_dir(runtime, sid))
    assert not cgroups.sandbox_dirs(group(runtime, sid))
    runtime.start(box)
    assert runtime.status(sid) is ContainerStatus.RUNNING
    assert ok(runtime, sid, "cat /home/daytona/note") == "kept\n"
    assert ok(runtime, sid, "test -e /etc/issue || echo gone") == "gone\n"


def test_stop_is_idempotent_and_start_too(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox()
    pid = init_pid(runtime, box.sandbox_id)
    runtime.start(box)  # already running: nothing happens
    assert init_pid(runtime, box.sandbox_id) == pid
    runtime.stop(box.sandbox_id, force=True)
    runtime.stop(box.sandbox_id)
    runtime.stop(box.sandbox_id, force=True)
    assert runtime.status(box.sandbox_id) is ContainerStatus.STOPPED


def test_stop_sends_sigterm_first(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox()
    sid = box.sandbox_id
    script = ("trap 'echo term > /home/daytona/got; exit 0' TERM; touch /home/daytona/ready; "
              "while :; do sleep 0.1; done")  # fmt: skip
    # (returns once the trap is set: a background shell may not have run a line yet)
    ok(runtime, sid, f'nohup sh -c "{script}" >/dev/null 2>&1 & '
                     "until [ -e /home/daytona/ready ]; do sleep 0.02; done")  # fmt: skip
    runtime.stop(sid)
    runtime.start(box)
    assert ok(runtime, sid, "cat /home/daytona/got") == "term\n"


def test_stop_kills_what_ignores_sigterm(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox()
    ok(runtime, box.sandbox_id, "nohup sh -c \"trap '' TERM; sleep 1000\" >/dev/null 2>&1 &")
    runtime.stop(box.sandbox_id)  # grace, then SIGKILL
    assert runtime.status(box.sandbox_id) is ContainerStatus.STOPPED


def test_stop_after_container_died(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox()
    runtime._crun.kill(box.sandbox_id, "KILL", all_processes=True)
    runtime.stop(box.sandbox_id)
    assert runtime.status(box.sandbox_id) is ContainerStatus.STOPPED
    runtime.start(box)
    assert ok(runtime, box.sandbox_id, "echo up") == "up\n"


def test_destroy_leaves_nothing(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox()
    sid = box.sandbox_id
    ok(runtime, sid, "sleep 1000 >/dev/null 2>&1 &")
    runtime.destroy(sid)
    assert runtime.status(sid) is ContainerStatus.ABSENT
    assert sid not in runtime.list_ids()
    assert not sandbox_dir(runtime, sid).exists()
    assert sid not in open("/proc/mounts").read()
    assert not cgroups.sandbox_dirs(group(runtime, sid))
    assert runtime._crun.state(sid) is None
    runtime.destroy(sid)  # again: nothing to do


def test_list_ids_and_status(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    running = make_sandbox()
    created = make_sandbox(start=False)
    assert runtime.status(running.sandbox_id) is ContainerStatus.RUNNING
    assert runtime.status(created.sandbox_id) is ContainerStatus.STOPPED
    assert runtime.status("it-never-made") is ContainerStatus.ABSENT
    assert {running.sandbox_id, created.sandbox_id} <= runtime.list_ids()
    stats = runtime.stats(running.sandbox_id)
    assert stats.pids >= 1 and stats.memory_bytes > 0 and stats.cpu_usage_ns > 0


def test_records_its_lower_dir(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox(start=False)
    meta = json.loads((sandbox_dir(runtime, box.sandbox_id) / "sandbox.json").read_text())
    assert meta["lower"].startswith(f"{SHARED_SNAPSHOTS}/cove-default/")
    assert "current" not in meta["lower"]


def test_container_outlives_the_process_that_started_it(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox(start=False)
    settings = runtime._settings
    code = f"""
from pathlib import Path
from cove.core.config import Settings
from cove.core.ports import ContainerSpec, Resources
from cove.runner.oci.runtime import OciRuntime
s = Settings(data_dir=Path({str(settings.data_dir)!r}),
             snapshot_dir=Path({str(settings.snapshot_dir)!r}),
             cgroup_parent={settings.cgroup_parent!r})
OciRuntime(s).start(ContainerSpec(sandbox_id={box.sandbox_id!r}, hostname="orphan",
    snapshot="cove-default", resources=Resources(1, 1, 3)))
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    assert runtime.status(box.sandbox_id) is ContainerStatus.RUNNING
    assert ok(runtime, box.sandbox_id, "hostname") == "orphan\n"


def test_failed_start_leaves_nothing(
    runtime: OciRuntime, make_sandbox: SandboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = make_sandbox(start=False)

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeBackendError("crun exploded")

    monkeypatch.setattr(runtime._crun, "run_detached", broken)
    with pytest.raises(RuntimeBackendError):
        runtime.start(box)
    monkeypatch.undo()
    assert not mounts.mounted_under(sandbox_dir(runtime, box.sandbox_id))
    assert runtime.status(box.sandbox_id) is ContainerStatus.STOPPED


def test_crun_failure_is_reported_and_cleaned(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox(start=False)
    bad = ContainerSpec(
        sandbox_id=box.sandbox_id, hostname="x" * 100, snapshot="cove-default",
        resources=Resources(1, 1, 3),
    )  # fmt: skip
    with pytest.raises(RuntimeBackendError):
        runtime.start(bad)  # hostname too long for sethostname
    assert not mounts.mounted_under(sandbox_dir(runtime, box.sandbox_id))
    assert not cgroups.sandbox_dirs(group(runtime, box.sandbox_id))


def test_failed_create_leaves_nothing(runtime: OciRuntime) -> None:
    sid = f"it-{uuid.uuid4().hex[:12]}"
    spec = ContainerSpec(sandbox_id=sid, hostname="h", snapshot="cove-default",
                         resources=Resources(1, 1, 1 << 20))  # fmt: skip
    with pytest.raises(RuntimeBackendError):
        runtime.create(spec)  # a 1 PiB image is more than ext4 can hold
    assert not sandbox_dir(runtime, sid).exists()
    missing = ContainerSpec(sandbox_id=sid, hostname="h", snapshot="no-such-snapshot",
                            resources=Resources(1, 1, 1))  # fmt: skip
    with pytest.raises(RuntimeBackendError):
        runtime.create(missing)
    assert not sandbox_dir(runtime, sid).exists()
    assert runtime.has_snapshot("cove-default")
    assert not runtime.has_snapshot("no-such-snapshot")


def test_concurrent_sandboxes(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    boxes = [make_sandbox(start=False) for _ in range(4)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(runtime.start, boxes))
        outs = list(pool.map(lambda b: ok(runtime, b.sandbox_id, "hostname"), boxes))
        assert outs == [f"{b.hostname}\n" for b in boxes]
        list(pool.map(runtime.stop, [b.sandbox_id for b in boxes]))
    assert all(runtime.status(b.sandbox_id) is ContainerStatus.STOPPED for b in boxes)


def test_stop_frees_the_image_while_another_sandbox_execs(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """No crun process (nor its private mount namespace) may pin another sandbox's mounts."""
    busy, other = make_sandbox(), make_sandbox()
    with ThreadPoolExecutor(max_workers=1) as pool:
        long_exec = pool.submit(ok, runtime, busy.sandbox_id, "sleep 3")
        time.sleep(0.5)
        runtime.stop(other.sandbox_id)
        image = sandbox_dir(runtime, other.sandbox_id) / "disk.img"
        loops = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True)
        assert loops.stdout == "", "image still attached after stop"
        runtime.resize(other.sandbox_id, Resources(1, 1, 4), live=False)
        long_exec.result()
    runtime.start(other)
    assert ok(runtime, other.sandbox_id, "df -k --output=size / | tail -1").strip() > "3900000"


def test_a_layer_written_before_user_namespaces_keeps_its_deletions(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """Writable layers from before sandboxes ran in user namespaces mark opaque
    directories with trusted.* xattrs; their next start converts them."""
    box = make_sandbox()
    sid = box.sandbox_id
    ok(runtime, sid, "rm -rf /usr/share/doc && mkdir /usr/share/doc && touch /usr/share/doc/new"
                     " && rm /etc/issue", user="root")  # fmt: skip
    runtime.stop(sid)
    paths = SandboxPaths.of(runtime._settings.data_dir, sid)
    disk.mount(paths.image, paths.disk)
    try:
        doc = paths.upper / "usr" / "share" / "doc"
        value = os.getxattr(doc, "user.overlay.opaque")
        os.removexattr(doc, "user.overlay.opaque")
        os.setxattr(doc, "trusted.overlay.opaque", value)
    finally:
        mounts.unmount(paths.disk)
    meta = paths.read_metadata()
    paths.write_metadata(Metadata(**{**meta.__dict__, "layer_xattrs": "trusted"}))
    runtime.start(box)
    assert ok(runtime, sid, "ls /usr/share/doc").split() == ["new"]
    assert ok(runtime, sid, "test -e /etc/issue || echo gone").strip() == "gone"
    assert paths.read_metadata().layer_xattrs == "user"
