"""Snapshots through the official daytona SDK against a real server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from daytona import (
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    Daytona,
    DaytonaConflictError,
    DaytonaError,
    DaytonaNotFoundError,
)
from daytona.common.sandbox import SandboxState

from tests.e2e.conftest import Server, run_ok

pytestmark = pytest.mark.e2e


def test_default_snapshot_is_listed(daytona: Daytona) -> None:
    page = daytona.snapshot.list()
    default = next(s for s in page.items if s.name == "cove-default")
    assert default.general and default.state == "active"
    assert daytona.snapshot.get("cove-default").id == default.id
    with pytest.raises(DaytonaNotFoundError):
        daytona.snapshot.get("no-such-snapshot")


def test_snapshot_of_a_sandbox_starts_new_sandboxes(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    sb = daytona.create(CreateSandboxFromSnapshotParams())
    sandboxes.append(sb)
    run_ok(sb, "echo from-source > /home/daytona/kept.txt && sudo true 2>/dev/null; rm -f x")
    server.runtime().exec(sb.id, ["rm", "/etc/issue"], user="root")
    sb.create_snapshot("e2e-snap", timeout=300)  # a capture on a loaded host
    assert sb.state == SandboxState.STARTED
    assert daytona.get(sb.id).state == SandboxState.STARTED
    snap = daytona.snapshot.get("e2e-snap")
    assert snap.state == "active" and snap.source_sandbox_id == sb.id
    assert "e2e-snap" in [s.name for s in daytona.snapshot.list().items]
    with pytest.raises(DaytonaError):
        sb.create_snapshot("e2e-snap")  # the name is taken

    child = daytona.create(CreateSandboxFromSnapshotParams(snapshot="e2e-snap"))
    sandboxes.append(child)
    assert run_ok(child, "cat /home/daytona/kept.txt") == "from-source\n"
    assert run_ok(child, "test -e /etc/issue || echo gone").strip() == "gone"
    with pytest.raises(DaytonaConflictError):
        daytona.snapshot.delete(snap)  # a sandbox was made from it
    child.delete()
    sandboxes.remove(child)

    sb.stop()
    sb.create_snapshot("e2e-snap-stopped", timeout=300)  # from a stopped sandbox too
    assert daytona.get(sb.id).state == SandboxState.STOPPED
    for name in ("e2e-snap", "e2e-snap-stopped"):
        daytona.snapshot.delete(daytona.snapshot.get(name))
        with pytest.raises(DaytonaNotFoundError):
            daytona.snapshot.get(name)


def _tiny_layout(tmp: Path) -> Path:
    """An OCI layout ``tiny:v1`` holding busybox, a passwd with daytona and a marker file."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox-static is not installed: run scripts/install")
    root = tmp / "files"
    for d in ("bin", "etc", "tmp", "home/daytona", "root"):
        (root / d).mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    for tool in ("sh", "cat", "ls", "id", "echo", "test"):
        (root / "bin" / tool).symlink_to("busybox")
    (root / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\ndaytona:x:1000:1000::/home/daytona:/bin/sh\n"
    )
    (root / "etc" / "group").write_text("root:x:0:\ndaytona:x:1000:\n")
    (root / "etc" / "marker").write_text("from-oci-image\n")
    layout = tmp / "tiny"
    for argv in (["umoci", "init", "--layout", str(layout)],
                 ["umoci", "new", "--image", f"{layout}:v1"],
                 ["umoci", "insert", "--image", f"{layout}:v1", str(root), "/"]):  # fmt: skip
        subprocess.run(argv, check=True, capture_output=True)
    subprocess.run(["chown", "-R", "1000:1000", str(root / "home/daytona")], check=True)
    return layout


def test_snapshot_from_a_local_oci_image(
    server: Server, daytona: Daytona, sandboxes: list, oci_layouts: Path
) -> None:
    layout = _tiny_layout(oci_layouts)
    snap = daytona.snapshot.create(CreateSnapshotParams(name="e2e-tiny", image=f"oci:{layout}:v1"))
    assert snap.state == "active"
    sb = daytona.create(CreateSandboxFromSnapshotParams(snapshot="e2e-tiny"))
    sandboxes.append(sb)
    out = server.runtime().exec(sb.id, ["/bin/cat", "/etc/marker"], user="root")
    assert out.stdout == b"from-oci-image\n"
    sb.delete()
    sandboxes.remove(sb)
    daytona.snapshot.delete(snap)


@pytest.mark.parametrize("image", ["python:3.12-slim", "oci:/nonexistent/layout:v1",
                                   "oci:/var/lib/dpkg:v1"])  # a host path outside the layout dir
def test_unresolvable_image_fails_clearly_and_builds_nothing(
    server: Server, daytona: Daytona, image: str
) -> None:
    before = _kept(server)
    with pytest.raises(DaytonaError, match="cannot be built|not allowed"):
        daytona.snapshot.create(CreateSnapshotParams(name="e2e-broken", image=image))
    with pytest.raises(DaytonaNotFoundError):
        daytona.snapshot.get("e2e-broken")
    assert _kept(server) == before


def _kept(server: Server) -> set[Path]:
    """The snapshot dir's entries but the ``.trash-*`` ones: snapshots deleted earlier
    are removed from there in the background, whenever (one went mid-test in a run)."""
    entries = server.settings.snapshot_dir.iterdir()  # type: ignore[union-attr]
    return {entry for entry in entries if not entry.name.startswith(".trash-")}
