"""Volumes when sandboxes run on remote runners: three ``cove runner`` processes, each
in a network namespace of its own acting as a separate host, behind one API whose
own host runs no sandbox. Through the official SDK: a volume's data lives on the
runner that first mounts it, sandboxes mounting it are placed there, deleting the
volume deletes its data there; runners sharing one volumes dir (COVE_VOLUMES_DIR,
NFS in production) serve a volume's sandboxes on any of them. Attacks: another
organization's key, and symlinks planted in a volume by a sandbox on a runner. A
drained runner's volumes move through the shared S3 archive store to the runner
their next sandbox is placed on."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from daytona import (
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
    Sandbox,
    VolumeMount,
)

from tests.e2e.conftest import KEY, run_ok
from tests.netns_runners import NAMES, Fleet, runners_listed, s3_fleet, wait_for

pytestmark = pytest.mark.e2e
TAG = f"fv{os.getpid() % 1000}"  # namespaces of this run (several runs may share a host)
SHARING = ("r1", "r2")  # the runners whose COVE_VOLUMES_DIR is the one shared dir
BUCKET = "cove-fleet-volumes"  # the shared archive store (drains move volumes through it)


@pytest.fixture(scope="module")
def shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The volumes dir r1 and r2 share (one file system: as an NFS export would be)."""
    return tmp_path_factory.mktemp("shared-volumes")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Iterator[Fleet]:
    env_of = {name: {"COVE_VOLUMES_DIR": str(shared_dir)} for name in SHARING}
    with s3_fleet(tmp_path_factory, TAG, "10.247", 41, BUCKET, env_of=env_of) as fleet:
        yield fleet


@pytest.fixture
def daytona(fleet: Fleet) -> Daytona:
    return Daytona(DaytonaConfig(api_key=KEY, api_url=fleet.api.api_url))


@pytest.fixture
def sandboxes(fleet: Fleet, daytona: Daytona) -> Iterator[list[Sandbox]]:
    """Sandboxes a test made; afterwards (also when it failed) every runner is
    uncordoned and every sandbox deleted (those whose create failed too)."""
    made: list[Sandbox] = []
    yield made
    for name in NAMES:
        fleet.cli("uncordon", name)
    _delete_all(daytona)


def _delete_all(daytona: Daytona) -> None:
    """Delete every sandbox of the organization (so that its volumes may go)."""
    for sb in list(daytona.list()):
        with contextlib.suppress(DaytonaNotFoundError):
            sb.delete()


def _mounting(volume: str, path: str = "/data", subpath: str | None = None
              ) -> CreateSandboxFromSnapshotParams:  # fmt: skip
    return CreateSandboxFromSnapshotParams(
        volumes=[VolumeMount(volume_id=volume, mount_path=path, subpath=subpath)],
        auto_stop_interval=0)  # fmt: skip


def _only(fleet: Fleet, *names: str) -> None:
    """Cordon every runner but ``names`` (placement then has no other choice)."""
    for name in NAMES:
        done = fleet.cli("uncordon" if name in names else "cordon", name)
        assert done.returncode == 0, done.stderr


def _data(fleet: Fleet, name: str, volume_id: str) -> Path:
    """Where runner ``name`` keeps the volume's data on its host (its own volumes dir)."""
    return fleet.runners[name].data_dir / "volumes" / volume_id


def _volume_usage(fleet: Fleet) -> int:
    """The organization's volume count, as its usage overview shows it."""
    headers = {"Authorization": f"Bearer {KEY}"}
    (org,) = httpx.get(f"{fleet.api.api_url}/organizations", headers=headers, timeout=30).json()
    usage = httpx.get(f"{fleet.api.api_url}/organizations/{org['id']}/usage", headers=headers,
                      timeout=30).json()  # fmt: skip
    return int(usage["currentVolumeUsage"])


def test_a_volume_s_sandboxes_go_to_the_runner_holding_its_data(
        fleet: Fleet, daytona: Daytona, sandboxes: list[Sandbox]) -> None:  # fmt: skip
    vol = daytona.volume.create("fleet-own")
    _only(fleet, "r3")  # r3 keeps volume data in its own data dir
    writer = daytona.create(_mounting(vol.id))
    sandboxes.append(writer)
    assert fleet.runner_of(writer.id) == "r3"
    run_ok(writer, "echo hello > /data/note.txt")
    assert (_data(fleet, "r3", vol.id) / "note.txt").read_text() == "hello\n"
    listed = {r["name"]: r["volumes"] for r in runners_listed(fleet.cli)}
    assert listed == {"r1": 0, "r2": 0, "r3": 1}
    assert _volume_usage(fleet) == 1  # the organization's quota counts it, wherever it is

    _only(fleet, *NAMES)  # every runner takes sandboxes: the volume decides
    for _ in NAMES:
        reader = daytona.create(_mounting(vol.name, "/home/daytona/vol"))
        sandboxes.append(reader)
        assert fleet.runner_of(reader.id) == "r3"
        assert run_ok(reader, "cat /home/daytona/vol/note.txt") == "hello\n"

    _only(fleet, "r1", "r2")  # its runner takes no new sandbox: a clear error
    with pytest.raises(DaytonaError, match="r3.*cordoned"):
        sandboxes.append(daytona.create(_mounting(vol.id)))

    _only(fleet, *NAMES)
    _delete_all(daytona)
    done = fleet.cli("remove", "r3")  # a runner holding volume data stays registered
    assert done.returncode != 0 and "fleet-own" in done.stderr, done.stderr
    daytona.volume.delete(vol)
    assert not _data(fleet, "r3", vol.id).exists()  # its data went with it
    assert _volume_usage(fleet) == 0


def test_runners_sharing_a_volumes_dir_serve_a_volume_on_any_of_them(
        fleet: Fleet, daytona: Daytona, sandboxes: list[Sandbox], shared_dir: Path,
        ) -> None:  # fmt: skip
    vol = daytona.volume.create("fleet-shared")
    _only(fleet, "r1")
    writer = daytona.create(_mounting(vol.id))
    sandboxes.append(writer)
    assert fleet.runner_of(writer.id) == "r1"
    run_ok(writer, "echo shared > /data/note.txt")
    assert (shared_dir / vol.id / "note.txt").read_text() == "shared\n"

    _only(fleet, "r2")  # the other runner of the shared dir
    reader = daytona.create(_mounting(vol.id))
    sandboxes.append(reader)
    assert fleet.runner_of(reader.id) == "r2"
    assert run_ok(reader, "cat /data/note.txt") == "shared\n"
    _only(fleet, "r3")  # not one of them: refused
    with pytest.raises(DaytonaError, match="volume"):
        sandboxes.append(daytona.create(_mounting(vol.id)))

    _only(fleet, *NAMES)
    _delete_all(daytona)
    daytona.volume.delete(vol)
    assert not (shared_dir / vol.id).exists()


def test_another_organization_cannot_mount_or_delete_a_volume_on_a_runner(
        fleet: Fleet, daytona: Daytona, sandboxes: list[Sandbox]) -> None:  # fmt: skip
    vol = daytona.volume.create("fleet-private")
    _only(fleet, "r3")
    owner = daytona.create(_mounting(vol.id))
    sandboxes.append(owner)
    run_ok(owner, "echo mine > /data/secret.txt")
    _only(fleet, *NAMES)
    key = fleet.api.org_key("fleet-vol-other")
    other = Daytona(DaytonaConfig(api_key=key, api_url=fleet.api.api_url))
    with pytest.raises(DaytonaNotFoundError):
        other.create(_mounting(vol.id))
    with pytest.raises(DaytonaNotFoundError):
        other.create(_mounting(vol.name))
    r = httpx.delete(f"{fleet.api.api_url}/volumes/{vol.id}",
                     headers={"Authorization": f"Bearer {key}"}, timeout=30)  # fmt: skip
    assert r.status_code == 404
    assert (_data(fleet, "r3", vol.id) / "secret.txt").read_text() == "mine\n"
    _delete_all(daytona)
    daytona.volume.delete(vol)


def test_symlinks_in_a_volume_on_a_runner_lead_nowhere(
        fleet: Fleet, daytona: Daytona, sandboxes: list[Sandbox]) -> None:  # fmt: skip
    mine = daytona.volume.create("fleet-link-a")
    theirs = daytona.volume.create("fleet-link-b")
    _only(fleet, "r3")
    holder = daytona.create(_mounting(theirs.id))
    sandboxes.append(holder)
    run_ok(holder, "echo private > /data/private.txt")
    planter = daytona.create(_mounting(mine.id))
    sandboxes.append(planter)
    # Links to the other volume's directory on the runner, by relative and absolute
    # path, and to the host's /etc; then to a link planted deeper.
    target = _data(fleet, "r3", theirs.id)
    run_ok(planter, f"ln -s ../{theirs.id} /data/rel && ln -s {target} /data/abs && "
                    "ln -s /etc /data/etc && mkdir /data/d && ln -s ../rel /data/d/up")
    for sub in ("rel", "abs", "etc", "d/up", "d/up/x"):
        with pytest.raises(DaytonaError, match="symlink|subpath"):
            sandboxes.append(daytona.create(_mounting(mine.id, "/x", subpath=sub)))
    _only(fleet, *NAMES)
    _delete_all(daytona)
    daytona.volume.delete(mine)
    daytona.volume.delete(theirs)


def test_a_drained_runner_s_volume_follows_its_sandbox_through_the_archive_store(
        fleet: Fleet, daytona: Daytona, sandboxes: list[Sandbox], shared_dir: Path,
        ) -> None:  # fmt: skip
    vol = daytona.volume.create("fleet-moved")
    _only(fleet, "r3")  # its own volumes dir
    sb = daytona.create(_mounting(vol.id))
    sandboxes.append(sb)
    data = os.urandom(128 * 1024).hex()
    sb.fs.upload_file(data.encode(), "/data/blob.txt")
    run_ok(sb, "mkdir -p /data/deep/er && echo x > /data/deep/er/f")
    _only(fleet, "r1", "r2")
    done = fleet.cli("drain", "r3")
    assert done.returncode == 0, done.stderr

    def moved() -> bool:
        sb.refresh_data()
        return sb.state.value == "archived" and not _data(fleet, "r3", vol.id).exists()

    wait_for("the sandbox archived and its volume moved off the drained runner", moved)
    try:
        done = fleet.cli("remove", "r3")  # nothing of theirs is left on it
        assert done.returncode == 0, done.stderr
        sb.start()  # on a runner of the shared dir, its volume brought back there
        assert fleet.runner_of(sb.id) in SHARING
        assert (shared_dir / vol.id / "blob.txt").read_text() == data
        assert run_ok(sb, "cat /data/deep/er/f; stat -c %U /data/blob.txt") == "x\ndaytona\n"
    finally:
        if "r3" not in fleet.cli("list").stdout:  # the next tests' fleet has three
            done = fleet.cli("add", "r3", fleet.runners["r3"].url)
            assert done.returncode == 0, done.stderr
        fleet.cli("uncordon", "r3")
    _delete_all(daytona)
    daytona.volume.delete(vol)
    assert not (shared_dir / vol.id).exists()
