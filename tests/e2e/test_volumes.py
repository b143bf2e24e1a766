"""Volumes through the official daytona SDK against a real server."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from daytona import (
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaConflictError,
    DaytonaError,
    DaytonaNotFoundError,
    VolumeMount,
)

from tests.e2e.conftest import KEY, Server, run_ok

pytestmark = pytest.mark.e2e


def _mounting(volume_id: str, path: str = "/data", subpath: str | None = None):
    mount = VolumeMount(volume_id=volume_id, mount_path=path, subpath=subpath)
    return CreateSandboxFromSnapshotParams(volumes=[mount])


def test_volume_is_shared_and_outlives_its_sandboxes(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    vol = daytona.volume.create("e2e-shared")
    assert vol.state == "ready" and vol.name == "e2e-shared"
    assert daytona.volume.get("e2e-shared").id == vol.id
    assert vol.id in [v.id for v in daytona.volume.list()]

    writer = daytona.create(_mounting(vol.id))
    sandboxes.append(writer)
    run_ok(writer, "echo hello > /data/note.txt && mkdir -p /data/sub && echo s > /data/sub/x")
    # by name, and a subpath
    reader = daytona.create(_mounting("e2e-shared", "/home/daytona/vol"))
    sandboxes.append(reader)
    assert run_ok(reader, "cat /home/daytona/vol/note.txt") == "hello\n"
    run_ok(reader, "echo back >> /home/daytona/vol/note.txt")
    assert run_ok(writer, "cat /data/note.txt") == "hello\nback\n"
    sub = daytona.create(_mounting(vol.id, "/work", subpath="sub"))
    sandboxes.append(sub)
    assert run_ok(sub, "cat /work/x; ls /work") == "s\nx\n"

    with pytest.raises(DaytonaConflictError):
        daytona.volume.delete(vol)
    writer.stop()  # stopped still counts as mounted
    with pytest.raises(DaytonaConflictError):
        daytona.volume.delete(vol)
    for sb in (writer, reader, sub):
        sb.delete()
        sandboxes.remove(sb)

    again = daytona.create(_mounting(vol.id, "/again"))
    sandboxes.append(again)
    assert run_ok(again, "cat /again/note.txt") == "hello\nback\n"
    again.delete()
    sandboxes.remove(again)
    daytona.volume.delete(vol)
    with pytest.raises(DaytonaNotFoundError):
        daytona.volume.get("e2e-shared")
    assert not (server.data_dir / "volumes" / vol.id).exists()


def test_a_volume_holds_its_size_and_no_more(
    server: Server, daytona: Daytona, sandboxes: list
) -> None:
    """COVE_VOLUME_SIZE_GB (1 here): a sandbox filling a volume gets "no space left",
    as on its own disk; the host's disk is not the limit. A deleted volume leaves no
    mount or image on the host."""
    vol = daytona.volume.create("e2e-bounded")
    sb = daytona.create(_mounting(vol.id))
    sandboxes.append(sb)
    filled = sb.process.exec("dd if=/dev/zero of=/data/zeros bs=1M count=1500 2>&1; "
                             "echo exit=$?; df -k --output=size /data | tail -1")  # fmt: skip
    assert "No space left on device" in filled.result and "exit=1" in filled.result
    assert 900_000 < int(filled.result.split()[-1]) <= 1_048_576  # (KiB)
    run_ok(sb, "rm /data/zeros && echo fits > /data/note")
    sb.delete()
    sandboxes.remove(sb)
    host = server.data_dir / "volumes" / vol.id
    assert (host / "note").read_text() == "fits\n"
    daytona.volume.delete(vol)
    for _ in range(100):
        if not (host.parent / f"{vol.id}.img").exists():
            break
        time.sleep(0.1)
    assert not host.exists() and not (host.parent / f"{vol.id}.img").exists()
    assert str(host) not in Path("/proc/self/mountinfo").read_text()


@pytest.mark.parametrize(
    ("path", "subpath"),
    [("/", None), ("relative/path", None), ("/a/../etc", None), ("/proc/x", None),
     ("/data", "../.."), ("/data", "/abs")],
)  # fmt: skip
def test_bad_mounts_are_rejected(daytona: Daytona, path: str, subpath: str | None) -> None:
    vol = daytona.volume.get("e2e-bad-mounts", create=True)
    with pytest.raises(DaytonaError, match="mount|subpath|volume"):
        daytona.create(_mounting(vol.id, path, subpath))


def test_symlink_in_volume_does_not_escape(daytona: Daytona, sandboxes: list) -> None:
    vol = daytona.volume.get("e2e-symlink", create=True)
    sb = daytona.create(_mounting(vol.id))
    sandboxes.append(sb)
    run_ok(sb, "ln -s /etc /data/escape")
    with pytest.raises(DaytonaError):
        sandboxes.append(daytona.create(_mounting(vol.id, "/x", subpath="escape")))


def test_other_organization_cannot_see_or_mount(server: Server, daytona: Daytona) -> None:
    vol = daytona.volume.get("e2e-private", create=True)
    key = server.org_key("vol-other")
    other = Daytona(DaytonaConfig(api_key=key, api_url=server.api_url))
    with pytest.raises(DaytonaNotFoundError):
        other.volume.get("e2e-private")
    assert other.volume.list() == []
    with pytest.raises(DaytonaNotFoundError):
        other.create(_mounting(vol.id))
    r = httpx.delete(f"{server.api_url}/volumes/{vol.id}",
                     headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert r.status_code == 404
    r = httpx.delete(f"{server.api_url}/volumes/{vol.id}",
                     headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
    assert r.status_code == 200
