"""Archive and restore keep files, deletions (whiteouts) and opaque directories."""

from __future__ import annotations

import pytest

from cove.core.ports import ContainerStatus
from cove.errors import RuntimeBackendError
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import ok, sandbox_dir

pytestmark = pytest.mark.integration

CHANGES = """
set -e
echo data > /home/daytona/file
mkdir -p /home/daytona/dir/sub && echo deep > /home/daytona/dir/sub/f
ln -s file /home/daytona/link
chown 1000:1000 /home/daytona/file
chmod 0640 /home/daytona/file
setfattr_py() { python3 -c "import os; os.setxattr('$1', 'user.cove', b'x')"; }
setfattr_py /home/daytona/file
rm /etc/issue                       # whiteout over a lower file
rm -rf /usr/share/doc && mkdir /usr/share/doc && echo new > /usr/share/doc/only  # opaque dir
"""
CHECK = """
cat /home/daytona/file /home/daytona/dir/sub/f
readlink /home/daytona/link
stat -c '%u:%g %a' /home/daytona/file
python3 -c "import os; print(os.getxattr('/home/daytona/file', 'user.cove'))"
test -e /etc/issue && echo issue-back || echo issue-gone
ls /usr/share/doc
"""
EXPECTED = "data\ndeep\nfile\n1000:1000 640\nb'x'\nissue-gone\nonly\n"


def test_archive_and_restore_keep_everything(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox()
    sid = box.sandbox_id
    ok(runtime, sid, CHANGES)
    assert ok(runtime, sid, CHECK) == EXPECTED
    runtime.stop(sid)
    size = runtime.archive(sid)
    archive = runtime._settings.archive_dir / f"{sid}.tar.zst"  # type: ignore[operator]
    assert size == archive.stat().st_size > 0
    assert runtime.status(sid) is ContainerStatus.ARCHIVED
    assert not (sandbox_dir(runtime, sid) / "disk.img").exists()
    assert runtime.archive(sid) == size  # idempotent
    assert sid in runtime.list_ids()
    runtime.restore(box)
    assert runtime.status(sid) is ContainerStatus.STOPPED
    assert not archive.exists()
    runtime.start(box)
    assert ok(runtime, sid, CHECK) == EXPECTED


def test_archive_refuses_a_running_sandbox(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox()
    with pytest.raises(RuntimeBackendError):
        runtime.archive(box.sandbox_id)
    assert runtime.status(box.sandbox_id) is ContainerStatus.RUNNING


def test_corrupt_archive_is_refused_and_kept(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox()
    sid = box.sandbox_id
    ok(runtime, sid, "head -c 2000000 /dev/urandom > /home/daytona/noise")
    runtime.stop(sid)
    runtime.archive(sid)
    archive = runtime._settings.archive_dir / f"{sid}.tar.zst"  # type: ignore[operator]
    blob = bytearray(archive.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    archive.write_bytes(bytes(blob))
    with pytest.raises(RuntimeBackendError):
        runtime.restore(box)
    assert archive.read_bytes() == bytes(blob)
    assert runtime.status(sid) is ContainerStatus.ARCHIVED
    archive.write_bytes(bytes(blob[: len(blob) // 3]))  # truncated
    with pytest.raises(RuntimeBackendError):
        runtime.restore(box)
    assert runtime.status(sid) is ContainerStatus.ARCHIVED


def test_destroy_removes_the_archive(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox(start=False)
    runtime.archive(box.sandbox_id)
    runtime.destroy(box.sandbox_id)
    assert runtime.status(box.sandbox_id) is ContainerStatus.ABSENT
    assert box.sandbox_id not in runtime.list_ids()


def test_tidy_removes_what_a_killed_archive_or_restore_left(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox()
    sid = box.sandbox_id
    runtime.stop(sid)
    runtime.archive(sid)
    archives = runtime._settings.archive_dir
    assert archives is not None
    half_archive = archives / f".{sid}.tar.zst.4242.tmp"  # a killed re-archive's
    half_archive.write_bytes(b"half")
    half_image = sandbox_dir(runtime, sid) / "disk.img.restore"  # a killed restore's
    half_image.write_bytes(b"half")
    runtime.tidy(sid)
    assert not half_archive.exists() and not half_image.exists()
    assert runtime.status(sid) is ContainerStatus.ARCHIVED  # the archive itself is kept
    runtime.restore(box)
    (archives / f"{sid}.tar.zst").write_bytes(b"stale")  # restored, not yet deleted: killed
    runtime.tidy(sid)
    assert runtime.status(sid) is ContainerStatus.STOPPED
    assert not (archives / f"{sid}.tar.zst").exists()


DEEP = "/home/daytona/" + "d/" * 1500  # (a path of some 3000 bytes: 1500 levels)


def test_a_sandbox_restored_on_another_runner_starts_however_deep_its_tree(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """A runner that never had the sandbox (a drain moved it) restores its layer as one
    written before user namespaces and converts it at the start, walking the whole tree
    the sandbox made: 1500 levels of it are walked, not a RecursionError."""
    box = make_sandbox()
    sid = box.sandbox_id
    ok(runtime, sid, f"mkdir -p {DEEP} && printf deep > {DEEP}f")
    runtime.stop(sid)
    runtime.archive(sid)
    (sandbox_dir(runtime, sid) / "sandbox.json").unlink()  # as on a runner it was never on
    runtime.restore(box)
    runtime.start(box)
    assert ok(runtime, sid, f"cat {DEEP}f") == "deep"
