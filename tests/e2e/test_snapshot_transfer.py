"""Snapshots travel between runners through the shared object store: three ``cove
runner`` processes, each in a network namespace of its own with a snapshot dir of its
own (separate hosts), sharing an S3 store (moto). A snapshot imported on one runner,
and one built from a Dockerfile over it, start on another runner once their own is
cordoned (fetched from the store, with their files); deleting them removes them from
the store and from every runner."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from daytona import (
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaNotFoundError,
    Image,
    Sandbox,
)

from tests.e2e.conftest import KEY
from tests.e2e.test_snapshots import _tiny_layout
from tests.netns_runners import NAMES, Fleet, s3_fleet, wait_for

pytestmark = pytest.mark.e2e
BUCKET = "cove-snapshots"
TAG = f"st{os.getpid() % 1000}"  # namespaces of this run (several runs may share a host)
WAIT = 240  # seconds an SDK call may wait (a fetch on a loaded machine)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with s3_fleet(tmp_path_factory, TAG, "10.246", 51, BUCKET, own_snapshots=True) as fleet:
        yield fleet


def _holders(fleet: Fleet, ref: str) -> set[str]:
    """The runners whose snapshot dir holds snapshot ``ref``."""
    dirs = {name: proc.settings.snapshot_dir for name, proc in fleet.runners.items()}
    return {name for name, found in dirs.items() if found and (found / ref).exists()}


def _cordon(fleet: Fleet, names: set[str]) -> None:
    for name in names:
        done = fleet.cli("cordon", name)
        assert done.returncode == 0, done.stderr


def _uncordon(fleet: Fleet) -> None:
    for name in NAMES:
        fleet.cli("uncordon", name)


def test_a_snapshot_made_on_one_runner_starts_on_another(fleet: Fleet) -> None:
    daytona = Daytona(DaytonaConfig(api_key=KEY, api_url=fleet.api.api_url))
    layouts = fleet.runners["r1"].settings.oci_layout_dir
    assert layouts is not None
    layout = _tiny_layout(layouts)  # on r1's host alone (the others cannot import it)
    made: list[Sandbox] = []
    names: list[str] = []
    try:
        tiny = daytona.snapshot.create(CreateSnapshotParams(name="xfer-tiny",
                                                           image=f"oci:{layout}:v1"))
        names.append(tiny.name)
        assert _holders(fleet, tiny.id) == {"r1"}
        assert f"snapshots/{tiny.id}.tar.zst" in fleet.objects("snapshots/")

        # A Dockerfile over it, built where placement puts its build sandbox.
        image = Image.base("xfer-tiny").run_commands("echo built-here > /etc/built")
        made.append(daytona.create(CreateSandboxFromImageParams(image=image), timeout=300))
        made[0].refresh_data()  # (the create answered while the build was pending)
        built = daytona.snapshot.get(made[0].snapshot)
        assert built.id != tiny.id
        names.append(built.name)
        holders = _holders(fleet, built.id)
        assert len(holders) == 1
        assert f"snapshots/{built.id}.tar.zst" in fleet.objects("snapshots/")

        # Its runner takes no new sandbox: one of the others fetches the snapshot.
        _cordon(fleet, holders)
        sb = daytona.create(CreateSandboxFromSnapshotParams(snapshot=built.name,
                                                            auto_stop_interval=0),
                            timeout=WAIT)  # fmt: skip
        made.append(sb)
        elsewhere = fleet.runner_of(sb.id)
        assert elsewhere is not None and elsewhere not in holders
        assert elsewhere in _holders(fleet, built.id)
        assert sb.fs.download_file("/etc/built") == b"built-here\n"
        assert sb.fs.download_file("/etc/marker") == b"from-oci-image\n"
        assert sb.process.exec("cat /etc/built").result.strip() == "built-here"
        # the store's credentials stay the runner's: nothing of them in the sandbox
        seen = sb.process.exec("env; cat /proc/1/environ | tr '\\0' '\\n'").result
        assert "AWS_" not in seen and "testing" not in seen and BUCKET not in seen

        # Stopped and archived off its runner, it comes back on yet another runner
        # (which fetches the snapshot too: its lower layer).
        sb.stop(timeout=WAIT)
        sb.archive()
        _cordon(fleet, {elsewhere})
        wait_for("archived", lambda: _state(sb) == "archived")
        fleet.cli("drain", elsewhere)
        wait_for("off its runner", lambda: fleet.runner_of(sb.id) is None)
        sb.start(timeout=WAIT)
        third = fleet.runner_of(sb.id)
        assert third is not None and third not in holders | {elsewhere}
        assert sb.fs.download_file("/etc/built") == b"built-here\n"
    finally:
        _uncordon(fleet)
        for sb in made:
            sb.delete()
        for name in reversed(names):
            snap = daytona.snapshot.get(name)
            daytona.snapshot.delete(snap)
            with pytest.raises(DaytonaNotFoundError):
                daytona.snapshot.get(name)
            assert _holders(fleet, snap.id) == set()
        assert fleet.objects("snapshots/") == []
        if layouts is not None:
            for made_dir in ("tiny", "files"):
                shutil.rmtree(layouts / made_dir, ignore_errors=True)


def _state(sb: Sandbox) -> str:
    sb.refresh_data()
    return str(sb.state.value)
