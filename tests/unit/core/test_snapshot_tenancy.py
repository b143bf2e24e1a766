"""A snapshot is usable only by its organization, unless it is the default or one the
operator made public; another organization's snapshot, though on this host, is answered
as if it did not exist, and nothing is created."""

from __future__ import annotations

import inspect

import pytest
from sqlalchemy import Engine

from cove.core.lifecycle import LifecycleService
from cove.core.snapshots import SnapshotService
from cove.errors import BadRequest, Conflict, CoveError, NotFound
from cove.runner.fake import FakeRuntime
from cove.runner.local import LocalRunner
from cove.schemas.sandbox import BuildInfoCreate, SandboxCreate
from cove.store.keys import SqlKeyStore
from cove.store.snapshots import SqlSnapshotStore
from cove.store.sql import SqlSandboxStore

HANDMADE = "handmade"  # a snapshot placed on the host by hand


@pytest.fixture
def snapshots(engine: Engine, store: SqlSandboxStore, runtime: FakeRuntime,
              lifecycle: LifecycleService) -> SnapshotService:  # fmt: skip
    runtime.snapshots.add(HANDMADE)
    service = SnapshotService(store=SqlSnapshotStore(engine), runner=LocalRunner(runtime),
        sandboxes=store,
                              default_name="cove-default", public=["shared"])  # fmt: skip
    lifecycle.snapshots = service
    return service


@pytest.fixture
def other(engine: Engine) -> str:
    return SqlKeyStore(engine).ensure_organization("other")


async def _snapshot_of(lifecycle: LifecycleService, snapshots: SnapshotService, org: str):
    sb = await lifecycle.create(organization_id=org, request=SandboxCreate(name="src"))
    return await snapshots.create_from_sandbox(lifecycle.ops, org, sb.id, "secret-files")


async def _error(call) -> CoveError:  # noqa: ANN001
    with pytest.raises(CoveError) as info:
        result = call()
        if inspect.isawaitable(result):
            await result
    return info.value


async def _create_error(lifecycle: LifecycleService, org: str, **fields: object) -> CoveError:
    with pytest.raises(CoveError) as info:
        await lifecycle.create(organization_id=org, request=SandboxCreate(**fields))
    return info.value


def _from(image: str) -> dict:
    return {"build_info": BuildInfoCreate(dockerfile_content=f"FROM {image}\n")}


async def test_another_organizations_snapshot_is_not_usable(
    lifecycle: LifecycleService, snapshots: SnapshotService, runtime: FakeRuntime, org: str,
    other: str,
) -> None:  # fmt: skip
    snap = await _snapshot_of(lifecycle, snapshots, org)
    assert runtime.has_snapshot(snap.id)  # on this host, under its id
    before = lifecycle.store.all()
    for ref in (snap.id, snap.name):
        for make in (lambda r: {"snapshot": r}, _from):
            mine = await _create_error(lifecycle, other, **make(ref))
            absent = await _create_error(lifecycle, other, **make("no-such"))
            assert isinstance(mine, BadRequest)  # the same answer as for no snapshot at all
            assert mine.message == absent.message.replace("no-such", ref)
        assert isinstance(await _error(lambda r=ref: snapshots.get(other, r)), NotFound)
        assert isinstance(await _error(lambda r=ref: snapshots.delete(other, r)), NotFound)
        assert isinstance(await _error(lambda r=ref: snapshots.activate(other, r)), NotFound)
    assert lifecycle.store.all() == before  # nothing created
    assert [s.name for s in snapshots.list(other)] == ["cove-default"]
    assert runtime.has_snapshot(snap.id)
    # Its own organization still uses it, by id and by name.
    for ref in (snap.id, snap.name):
        sb = await lifecycle.create(organization_id=org, request=SandboxCreate(snapshot=ref))
        assert sb.snapshot == snap.id


async def test_snapshot_placed_by_hand_is_usable_only_when_public(
    lifecycle: LifecycleService, snapshots: SnapshotService, runtime: FakeRuntime, org: str,
) -> None:  # fmt: skip
    for fields in ({"snapshot": HANDMADE}, _from(HANDMADE)):
        assert isinstance(await _create_error(lifecycle, org, **fields), BadRequest)
    assert lifecycle.store.all() == []
    assert "shared" not in [s.name for s in snapshots.list(org)]  # not on this host yet
    runtime.snapshots.add("shared")
    sb = await lifecycle.create(organization_id=org, request=SandboxCreate(snapshot="shared"))
    assert sb.snapshot == "shared"
    built = await lifecycle.create(organization_id=org, request=SandboxCreate(**_from("shared")))
    assert built.snapshot == "shared"
    listed = snapshots.list(org)
    assert [(s.name, s.general) for s in listed] == [("cove-default", True), ("shared", True)]
    with pytest.raises(BadRequest):
        await snapshots.delete(org, "shared")
    with pytest.raises(Conflict):
        await snapshots.create_from_image(org, "shared", "tiny:v1")


async def test_public_snapshots_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, settings, store, runtime: FakeRuntime, events, org: str,
) -> None:  # fmt: skip
    runtime.snapshots.add(HANDMADE)
    monkeypatch.setenv("COVE_PUBLIC_SNAPSHOTS", f"{HANDMADE}, other-one")
    from cove.core.config import Settings

    configured = Settings(data_dir=settings.data_dir, runtime="fake")
    assert configured.public_snapshots == [HANDMADE, "other-one"]
    service = LifecycleService(
        settings=configured, store=store, runner=LocalRunner(runtime), events=events
    )
    sb = await service.create(organization_id=org, request=SandboxCreate(snapshot=HANDMADE))
    assert sb.snapshot == HANDMADE
    with pytest.raises(BadRequest, match="not found"):  # listed, but not on this host
        await service.create(organization_id=org, request=SandboxCreate(snapshot="other-one"))
