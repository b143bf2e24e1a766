"""The gVisor tier's views (``runner/oci/gvisor_view.py``): runsc is given only binds in
a directory of the sandbox's own, the data dir stays root's alone (0700), and
neither a sandbox nor another sandbox's host uid reaches anything else of the host
through them. Attacks are tried from inside (as the sandbox user and its root) and
as the host uids gVisor runs sandboxes as (what an escape from gVisor would be)."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from cove.core.ports import ContainerStatus
from cove.runner.host import idrange, mounts
from cove.runner.layout import SandboxPaths
from cove.runner.oci import gvisor_view, runsc
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import init_pid, ok, py, sandbox_dir

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not runsc.available(), reason="runsc (gVisor) is not installed"),
]
USERS = ("daytona", "root")


@pytest.fixture
def tier() -> str:
    return "gvisor"


def view_of(runtime: OciRuntime, sid: str) -> Path:
    return gvisor_view.view_dir(runtime._settings.data_dir, sid)


def host_ids(runtime: OciRuntime, sid: str) -> idrange.IdRange:
    ids = idrange.current(sandbox_dir(runtime, sid))
    assert ids is not None
    return ids


def test_runsc_is_given_only_binds_in_the_sandboxs_view(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    sid = make_sandbox().sandbox_id
    data, view = runtime._settings.data_dir, view_of(runtime, sid)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700  # root's alone, and the sandbox runs
    assert ok(runtime, sid, "echo up", user="daytona").strip() == "up"
    info = view.stat()  # its root may search it, not change it
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (
        0o710, 0, host_ids(runtime, sid).base)
    for parent in (view.parent, view.parent.parent):
        info = parent.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o711, 0, 0)
    config = json.loads((SandboxPaths.of(data, sid).bundle / "config.json").read_text())
    named = [config["root"]["path"], *(m["source"] for m in config["mounts"]
                                       if m["type"] == "bind")]  # fmt: skip
    assert len(named) > 5
    assert [p for p in named if not p.startswith(f"{view}/")] == []
    mounted = {line.split()[1]: line.split()[3].split(",")
               for line in Path("/proc/mounts").read_text().splitlines()}  # fmt: skip
    for entry in view.iterdir():  # every entry is a bind, nosuid and nodev
        assert {"nosuid", "nodev"} <= set(mounted[str(entry)]), entry


# Run as a host uid: for each path, the errno of opening it (0: it opened).
PROBE = r"""
import json, os, sys
found = {}
for path in json.load(sys.stdin):
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        if os.path.isdir(path):
            os.listdir(path)
        found[path] = 0
    except OSError as exc:
        found[path] = exc.errno
print(json.dumps(found))
"""


def probe_as(uid: int, paths: list[Path], *, own_userns: bool = False) -> dict[str, int]:
    """Open ``paths`` as host uid (and gid) ``uid``; with ``own_userns``, as root of a
    user namespace of its own mapped to it (as gVisor's gofer runs)."""
    argv = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    if own_userns:
        argv += ["unshare", "--user", "--map-root-user"]
    done = subprocess.run([*argv, "/usr/bin/python3", "-c", PROBE], check=True,
                          input=json.dumps([str(p) for p in paths]), capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    return json.loads(done.stdout)


@pytest.mark.parametrize("own_userns", [False, True])
def test_another_sandboxs_host_uid_cannot_enter_a_view(
    runtime: OciRuntime, make_sandbox: SandboxFactory, own_userns: bool
) -> None:
    """B's host uid (what B's gofer runs as, or an escape from B's gVisor) opens A's
    view, A's files through it and through A's sentry, the data dir and the database:
    all refused. It does reach its own view (the probe works)."""
    a, b = make_sandbox().sandbox_id, make_sandbox().sandbox_id
    data = runtime._settings.data_dir
    ok(runtime, a, "echo secret > /tmp/a-secret", user="daytona")
    view_a, view_b = view_of(runtime, a), view_of(runtime, b)
    targets = [view_a, view_a / "rootfs", view_a / "rootfs" / "tmp" / "a-secret",
               view_a / "chan", Path(f"/proc/{init_pid(runtime, a)}/root"),
               data, data / "cove.db", sandbox_dir(runtime, a), view_a.parent]
    seen = probe_as(host_ids(runtime, b).base, [view_b / "rootfs", *targets],
                    own_userns=own_userns)  # fmt: skip
    assert seen.pop(str(view_b / "rootfs")) == 0  # its own view: the probe works
    assert {p: e for p, e in seen.items() if e not in (errno.EACCES, errno.EPERM)} == {}


def test_a_sandboxs_host_uid_reaches_only_its_view(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """A's own host uid (a gVisor escape of A) gets nothing of the data dir, the
    database, A's directory in it or another sandbox's view."""
    a, b = make_sandbox().sandbox_id, make_sandbox().sandbox_id
    data = runtime._settings.data_dir
    targets = [data, data / "cove.db", sandbox_dir(runtime, a), sandbox_dir(runtime, a) / "disk",
               view_of(runtime, b), view_of(runtime, b) / "rootfs"]  # fmt: skip
    seen = probe_as(host_ids(runtime, a).base, [view_of(runtime, a) / "rootfs", *targets])
    assert seen.pop(str(view_of(runtime, a) / "rootfs")) == 0
    assert {p: e for p, e in seen.items() if e != errno.EACCES} == {}


# Run as a host uid: change the view given in argv (plant a symlink, move a bind
# away); prints the errno of each attempt.
CHANGE = r"""
import os, sys
view = sys.argv[1]
for attempt in (lambda: os.symlink("/", view + "/planted"),
                lambda: os.rename(view + "/chan", view + "/moved")):
    try:
        attempt()
        print(0)
    except OSError as exc:
        print(exc.errno)
"""


def test_a_sandboxs_host_uid_cannot_change_its_view(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """What Cove mounts on and unmounts in a view cannot be swapped for a symlink by
    the sandbox's own host uid."""
    sid = make_sandbox().sandbox_id
    view = view_of(runtime, sid)
    argv = ["setpriv", f"--reuid={host_ids(runtime, sid).base}",
            f"--regid={host_ids(runtime, sid).base}", "--clear-groups"]  # fmt: skip
    done = subprocess.run([*argv, "/usr/bin/python3", "-c", CHANGE, str(view)], check=True,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.stdout.split() == [str(errno.EACCES)] * 2
    assert sorted(p.name for p in view.iterdir()) == sorted(
        ["rootfs", "init", "cove", "etc", "chan", "ro-0", "ro-1", "ro-2"])


# Run in a sandbox: which of the given paths open, which marker names a walk of the
# whole file system finds, and whether mountinfo names any of the given strings.
INSIDE = r"""
import json, os, sys
paths, markers, words = json.loads(sys.argv[1])
opened = []
for path in paths:
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        opened.append(path)
    except OSError:
        pass
found = []
for top, dirs, files in os.walk("/"):
    if top == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys")]
    found += [os.path.join(top, n) for n in dirs + files if n in markers]
info = open("/proc/self/mountinfo").read() + open("/proc/self/mounts").read()
print(json.dumps([opened, found, [w for w in words if w in info]]))
"""


@pytest.mark.parametrize("user", USERS)
def test_nothing_of_the_host_is_reachable_from_inside(
    runtime: OciRuntime, make_sandbox: SandboxFactory, user: str
) -> None:
    """From inside A: not the data dir, a file in it, the database, B's view or B's
    files, A's own view, nor the views' root; no mount names them. A file A wrote
    itself is found (the walk works)."""
    a, b = make_sandbox().sandbox_id, make_sandbox().sandbox_id
    data = runtime._settings.data_dir
    tag = uuid.uuid4().hex[:8]
    host_marker, b_marker, a_marker = f"host-{tag}", f"b-{tag}", f"a-{tag}"
    (data / host_marker).write_text("host")
    try:
        ok(runtime, b, f"echo b > /tmp/{b_marker}", user="daytona")
        ok(runtime, a, f"echo a > /tmp/{a_marker}", user="daytona")
        paths = [data, data / host_marker, data / "cove.db", sandbox_dir(runtime, b),
                 view_of(runtime, b), view_of(runtime, b) / "rootfs" / "tmp" / b_marker,
                 view_of(runtime, a), gvisor_view.ROOT]  # fmt: skip
        words = [str(data), str(gvisor_view.ROOT), b]  # (gVisor's cgroups name A itself)
        arg = json.dumps([[str(p) for p in paths], [host_marker, b_marker, a_marker], words])
        opened, found, named = json.loads(py(runtime, a, INSIDE, arg, user=user))
    finally:
        os.unlink(data / host_marker)
    assert opened == [] and named == []
    assert found == [f"/tmp/{a_marker}"]  # only its own


def test_stop_and_destroy_remove_the_view(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox()
    sid, view = box.sandbox_id, view_of(runtime, box.sandbox_id)
    assert (view / "rootfs" / "etc").is_dir()
    runtime.stop(sid)
    assert not view.exists() and not mounts.mounted_under(view)
    runtime.start(box)  # a fresh one
    assert ok(runtime, sid, "echo up") == "up\n" and (view / "rootfs" / "etc").is_dir()
    runtime.destroy(sid)
    assert not view.exists() and not mounts.mounted_under(view)
    assert sid not in gvisor_view.sandbox_ids(runtime._settings.data_dir)


def test_the_view_of_a_dead_sandbox_is_removed_by_reconciliations_stop(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """The sentry dies (say, the host's OOM killer): its view stays until the stop
    that reconciliation makes of every sandbox that no longer runs."""
    sid = make_sandbox().sandbox_id
    os.kill(init_pid(runtime, sid), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while runtime.status(sid) is ContainerStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.status(sid) is ContainerStatus.STOPPED
    runtime.stop(sid, force=True)
    assert not view_of(runtime, sid).exists()


def test_destroying_an_orphan_removes_its_gvisor_sandbox_and_view(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """A running gVisor sandbox whose metadata is gone (what reconciliation removes as
    an orphan) is found by runsc, killed, and its view removed."""
    sid = make_sandbox().sandbox_id
    SandboxPaths.of(runtime._settings.data_dir, sid).metadata.unlink()
    assert sid in runtime.list_ids()
    runtime.destroy(sid)
    assert runtime._runsc.state(sid) is None
    assert not view_of(runtime, sid).exists() and not sandbox_dir(runtime, sid).exists()
    assert sid not in runtime.list_ids()
