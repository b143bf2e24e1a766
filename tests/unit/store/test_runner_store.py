"""The runners registry: the embedded runner is there from the start, every sandbox
is on a runner (``local`` unless placed), and what placement reads adds up."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from cove.core.fleet import IN_ARCHIVE, Allocation, RunnerState, VolumeHome
from cove.core.ports import Capacity, Resources
from cove.core.sandbox import Sandbox, SandboxState, utcnow
from cove.core.volumes import Volume
from cove.errors import Conflict, NotFound
from cove.store.keys import SqlKeyStore
from cove.store.runners import SqlRunnerStore
from cove.store.sql import SqlSandboxStore
from cove.store.volumes import SqlVolumeStore


def _sandbox(org: str, sid: str, state: SandboxState, cpu: int = 1) -> Sandbox:
    return Sandbox(id=sid, organization_id=org, name=sid, snapshot="cove-default",
                   user="daytona", resources=Resources(cpu=cpu, memory=2, disk=3),
                   state=state)  # fmt: skip


def test_registry(db: Engine) -> None:
    store = SqlRunnerStore(db)
    (local,) = store.list()
    assert (local.id, local.name, local.url, local.state) == ("local", "local", None, "ready")
    r1 = store.add("r1", "https://10.0.0.5:3100")
    with pytest.raises(Conflict):
        store.add("r1", "https://10.0.0.6:3100")
    with pytest.raises(Conflict):
        store.add("r2", "https://10.0.0.5:3100")
    assert store.get("r1") == store.get(r1.id) == r1
    store.set_state(r1.id, RunnerState.CORDONED)
    store.set_reachable(r1.id, False)
    got = store.get("r1")
    assert got.state is RunnerState.CORDONED and got.shown_state is RunnerState.UNREACHABLE
    cap = Capacity(cpu=8, memory=2**34, memory_free=2**33, disk=2**40, disk_free=2**39,
                   sandboxes=3)  # fmt: skip
    store.heartbeat(r1.id, cap, utcnow())
    assert store.get("r1").capacity == cap and store.get("r1").last_heartbeat is not None
    store.remove(r1.id)
    with pytest.raises(NotFound):
        store.get("r1")


def test_sandboxes_and_allocations(db: Engine) -> None:
    org = SqlKeyStore(db).ensure_organization("o")
    sandboxes, store = SqlSandboxStore(db), SqlRunnerStore(db)
    r1 = store.add("r1", "https://10.0.0.5:3100")
    sandboxes.add(_sandbox(org, "a", SandboxState.STARTED, cpu=2))
    sandboxes.add(_sandbox(org, "b", SandboxState.STOPPED))
    sandboxes.add(_sandbox(org, "c", SandboxState.STARTED))
    assert store.runner_of("a") == "local"  # a record made without placement
    store.assign("c", r1.id)
    sandboxes.save(sandboxes.get_by_id("c"))  # a save leaves its runner alone
    assert store.runner_of("c") == r1.id
    assert store.sandboxes_on("local") == ["a", "b"]
    assert store.allocations() == {"local": Allocation(cpu=2, memory=2, disk=6, sandboxes=2),
                                   r1.id: Allocation(cpu=1, memory=2, disk=3, sandboxes=1)}
    with pytest.raises(Conflict):
        store.remove(r1.id)  # a sandbox is on it
    store.assign("c", None)
    assert store.runner_of("c") is None
    store.remove(r1.id)


def test_a_volume_is_bound_once(db: Engine) -> None:
    """Of two placements binding one volume at once, the first wins; a runner holding
    a volume's data stays registered."""
    org = SqlKeyStore(db).ensure_organization("o")
    volumes = SqlVolumeStore(db)
    volumes.add(Volume(id="v1", organization_id=org, name="a"))
    volumes.add(Volume(id="v2", organization_id=org, name="b", home="r9"))
    store = SqlRunnerStore(db)
    store.bind_volumes(["v1", "v2"], "r1")
    store.bind_volumes(["v1"], "r2")
    assert store.volume_homes(["v1", "v2", "nope"]) == {
        "v1": VolumeHome("a", "r1"), "v2": VolumeHome("b", "r9")}  # fmt: skip
    got = volumes.get(org, "a")
    got.home = None  # a record read before, saved after: the binding stays
    volumes.save(got)
    assert volumes.get(org, "a").home == "r1" and store.volumes_on("r1") == {"v1": "a"}
    assert not store.move_volume("v1", "r2", IN_ARCHIVE)  # not there: left as it is
    assert store.move_volume("v1", "r1", IN_ARCHIVE)
    r3 = store.add("r3", "https://10.0.0.7:3100")
    store.bind_volumes(["v1"], r3.id)  # out of the archive store: bound anew
    assert store.volume_homes(["v1"])["v1"].home == r3.id
    with pytest.raises(Conflict, match=r"volumes keep their data on the runner \(a\)"):
        store.remove(r3.id)
    volumes.remove("v1")
    store.remove(r3.id)
