"""A running server's data dir is root's alone: an ordinary host user (nobody) can
neither list nor read anything in it, though the directory above it is open, and the
files have their modes (data dir 0700, database and secrets 0600, archives 0700); a
snapshot's directory is 0700 too, and a gVisor sandbox's view is not for others."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig, VolumeMount

from cove.runner.oci import gvisor_view, runsc
from tests.e2e.conftest import Server, running_server

pytestmark = pytest.mark.e2e
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# Run as nobody: for each path, whether it could be listed (a directory) or read.
PROBE = r"""
import json, os, sys
found = {}
for path in json.load(sys.stdin):
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").close()
        found[path] = True
    except OSError:
        found[path] = False
print(json.dumps(found))
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def as_nobody(paths: list[Path]) -> dict[str, bool]:
    """Which of ``paths`` the host user nobody can list or read."""
    out = subprocess.run([*NOBODY, "/usr/bin/python3", "-c", PROBE], check=True,
                         input=json.dumps([str(p) for p in paths]), capture_output=True,
                         text=True)  # fmt: skip
    return json.loads(out.stdout)


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A directory every host user may enter (unlike pytest's own temporary dirs)."""
    base = Path(tempfile.mkdtemp(prefix="cove-modes-", dir="/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def server(open_parent: Path) -> Iterator[Server]:
    data = open_parent / "data"
    data.mkdir(mode=0o755)  # there before Cove, too open: tightened at start
    with running_server(data, 4, {"COVE_NETWORK": "none"}, api_key=None) as srv:
        yield srv


def test_nobody_reads_nothing_of_the_data_dir(server: Server, open_parent: Path) -> None:
    # The key printed once by the first start works.
    daytona = Daytona(DaytonaConfig(api_key=server.api_key, api_url=server.api_url))
    archived = daytona.create()
    archived.archive()
    volume = daytona.volume.get("modes-vol", create=True)  # its data: at the first mount
    running = daytona.create(CreateSandboxFromSnapshotParams(
        volumes=[VolumeMount(volume_id=volume.id, mount_path="/data")]))  # fmt: skip
    running.create_snapshot("modes-snap", timeout=300)  # a capture on a loaded host
    snapshot = daytona.snapshot.get("modes-snap")
    gvisor = daytona.create(CreateSandboxFromSnapshotParams(
        labels={"cove.io/isolation": "gvisor"})) if runsc.available() else None  # fmt: skip
    data = server.data_dir
    db = data / "cove.db"
    try:
        assert mode(data) == 0o700
        for path in (db, db.with_name("cove.db-wal"), db.with_name("cove.db-shm"),
                     data / "preview.key", *(data / "archives").iterdir()):  # fmt: skip
            assert mode(path) == 0o600, path
        assert mode(data / "archives") == 0o700
        # Everything in the data dir, two levels deep (a running sandbox's root file
        # system is mounted further down).
        inside = [p for top in data.iterdir() for p in (top, *(top.iterdir() if top.is_dir()
                  and not top.is_symlink() else ()))]  # fmt: skip
        assert len(inside) > 8 and (data / "volumes") in inside
        # A snapshot is private even in a snapshot dir others may enter (here the
        # one the test servers share, which may itself sit in a private directory).
        snapshots = server.settings.snapshot_dir
        assert snapshots is not None and mode(snapshots / snapshot.id) == 0o700
        # A gVisor sandbox works with the data dir 0700; its view is not for others.
        views = []
        if gvisor is not None:
            assert gvisor.process.exec("echo up").result.strip() == "up"
            views = [gvisor_view.view_dir(data, gvisor.id),
                     gvisor_view.view_dir(data, gvisor.id) / "rootfs"]  # fmt: skip
            assert all(view.exists() for view in views)
        seen = as_nobody([open_parent, data, *inside, snapshots / snapshot.id, *views])
        assert seen.pop(str(open_parent)) is True  # the probe works
        assert [path for path, readable in seen.items() if readable] == []
    finally:
        archived.delete()
        running.delete()
        if gvisor is not None:
            gvisor.delete()
        daytona.snapshot.delete(snapshot)
