"""Volume mount rules and the volume service, with fake file storage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from cove.core.config import Settings
from cove.core.coordination import LocalCoordination
from cove.core.lifecycle import LifecycleService
from cove.core.quotas import QuotaService
from cove.core.volumes import VolumeService, mount_path, subpath
from cove.errors import BadRequest, Conflict, NotFound
from cove.schemas.sandbox import SandboxCreate, VolumeMount
from cove.store.usage import SqlQuotaStore
from cove.store.volumes import SqlVolumeStore


class FakeRunner:
    """The runner's volume calls: the volumes whose data it was told to delete."""

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.deleting = asyncio.Event()  # set when a delete has begun
        self.go_on: asyncio.Event | None = None  # a delete waits for it (None: does not)

    async def delete_volume(self, volume_id: str) -> None:
        self.deleting.set()
        if self.go_on is not None:
            await self.go_on.wait()
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


class BusyOrganization(LocalCoordination):
    """Another replica holds the organization's lock until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    @asynccontextmanager
    async def _busy(self) -> AsyncIterator[None]:
        await self.release.wait()
        yield

    def lock(self, kind: str, name: str, *, wait: bool = True
             ) -> AbstractAsyncContextManager[None]:  # fmt: skip
        return self._busy()


@pytest.mark.parametrize("first", ["create", "delete"])
async def test_a_volume_deleted_during_a_create_mounting_it_is_not_mounted(
    engine, store, org, settings: Settings, lifecycle: LifecycleService, first: str,  # noqa: ANN001
) -> None:
    """A create finds its volumes, then waits for the organization's quota lock; a
    delete of the volume checks it is unused, then waits for its data to be removed.
    Either one in the other's wait must not leave a sandbox mounting a volume that is
    gone: its data would be made again where the sandbox boots, and kept with no volume
    naming it (no quota counts it, no delete removes it)."""
    runner = FakeRunner()
    volumes = VolumeService(store=SqlVolumeStore(engine), runner=runner,  # type: ignore[arg-type]
                            sandboxes=store, home="local")  # fmt: skip
    lifecycle.volumes = volumes
    await volumes.create(org, "data")
    quotas = lifecycle.creator.quotas = QuotaService(settings=settings,
                                                     store=SqlQuotaStore(engine))  # fmt: skip
    quotas.coordination = busy = BusyOrganization()
    req = SandboxCreate(volumes=[VolumeMount(volume_id="data", mount_path="/d")])
    if first == "delete":
        busy.release.set()
        runner.go_on = asyncio.Event()
        deleting = asyncio.ensure_future(volumes.delete(org, "data"))
        await runner.deleting.wait()
        creating = asyncio.ensure_future(lifecycle.create(organization_id=org, request=req))
        await asyncio.sleep(0.05)
        runner.go_on.set()
    else:
        creating = asyncio.ensure_future(lifecycle.create(organization_id=org, request=req))
        await asyncio.sleep(0.05)  # it waits for the organization's lock
        deleting = asyncio.ensure_future(volumes.delete(org, "data"))
        await asyncio.sleep(0.05)
        busy.release.set()
    results = await asyncio.gather(creating, deleting, return_exceptions=True)
    mounted = {b.volume_id for sb in store.all() for b in sb.volumes}
    assert mounted <= {v.id for v in volumes.list(org)}, results
