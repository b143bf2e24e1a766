"""Volume mount rules and the volume service, with fake file storage."""

from __future__ import annotations

import pytest

from cove.core.lifecycle import LifecycleService
from cove.core.volumes import VolumeService, mount_path, subpath
from cove.errors import BadRequest, Conflict, NotFound
from cove.schemas.sandbox import SandboxCreate, VolumeMount
from cove.store.volumes import SqlVolumeStore


class FakeRunner:
    """The runner's volume calls: the volumes whose data it was told to delete."""

    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def delete_volume(self, volume_id: str) -> None:
        self.deleted.append(volume_id)


@pytest.mark.parametrize("path", ["/", "//", "rel", "/a/../b", "/proc", "/dev/x", "/sys", ""])
def test_bad_mount_paths(path: str) -> None:
    with pytest.raises(BadRequest):
        mount_path(path)


def test_mount_paths_are_normalized() -> None:
    assert mount_path("/home/daytona//data/") == "/home/daytona/data"
    assert subpath("a/./b/") == "a/b" and subpath(None) == subpath(".") == ""
    for bad in ("../x", "/abs", "a/../../b"):
        with pytest.raises(BadRequest):
            subpath(bad)


async def test_create_mount_and_delete(engine, store, org, lifecycle: LifecycleService) -> None:
    runner = FakeRunner()
    volumes = VolumeService(store=SqlVolumeStore(engine), runner=runner,  # type: ignore[arg-type]
                            sandboxes=store, home="local")  # fmt: skip
    lifecycle.volumes = volumes
    vol = await volumes.create(org, "data")
    assert vol.home == "local" and volumes.get(org, "data").home == "local"
    with pytest.raises(Conflict):
        await volumes.create(org, "data")
    with pytest.raises(BadRequest):
        await volumes.create(org, "../evil")
    req = SandboxCreate(volumes=[VolumeMount(volume_id="data", mount_path="/d", subpath="s")])
    sb = await lifecycle.create(organization_id=org, request=req)
    assert [(b.volume_id, b.mount_path, b.subpath) for b in sb.volumes] == [(vol.id, "/d", "s")]
    assert volumes.get(org, vol.id).last_used_at is not None
    twice = [VolumeMount(volume_id=vol.id, mount_path="/d")] * 2
    with pytest.raises(BadRequest, match="two volumes"):
        await lifecycle.create(organization_id=org, request=SandboxCreate(volumes=twice))
    with pytest.raises(NotFound):
        await lifecycle.create(organization_id=org, request=SandboxCreate(
            volumes=[VolumeMount(volume_id="nope", mount_path="/d")]))  # fmt: skip
    with pytest.raises(Conflict, match="in use"):
        await volumes.delete(org, "data")
    assert runner.deleted == []
    await lifecycle.destroy(org, sb.id)
    await volumes.delete(org, "data")
    assert runner.deleted == [vol.id] and volumes.list(org) == []


async def test_without_a_volume_service_mounts_are_refused(
    lifecycle: LifecycleService, org: str
) -> None:
    req = SandboxCreate(volumes=[VolumeMount(volume_id="v", mount_path="/d")])
    with pytest.raises(BadRequest, match="not supported"):
        await lifecycle.create(organization_id=org, request=req)
