"""Registry images on the fake runtime: references, states, the cache, credentials."""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Callable, Iterator

import pytest

from cove.core import imageref
from cove.core.config import Settings
from cove.core.images import ImageService
from cove.core.lifecycle import LifecycleService
from cove.core.ports import ContainerSpec, ImageConfig, PulledImage, RegistryAuth, Resources
from cove.core.registries import RegistryService
from cove.core.sandbox import SandboxState
from cove.core.snapshots import SnapshotService
from cove.errors import BadRequest, NotFound, RuntimeBackendError
from cove.runner.fake import FakeRuntime
from cove.runner.local import HOST_WORKERS, PULL_WORKERS, LocalRunner
from cove.schemas.sandbox import BuildInfoCreate, SandboxCreate
from cove.store.keys import SqlKeyStore
from cove.store.registries import SqlRegistryStore
from cove.store.sealing import AesGcmSealer
from cove.store.snapshots import SqlSnapshotStore
from tests.unit.conftest import RecordingEvents

S = SandboxState
PY = "docker.io/library/python:3.12"
CONFIG = ImageConfig(env={"FOO": "bar"}, workdir="/app", user="app:app", cmd=("python3",))


@pytest.mark.parametrize(("image", "canonical"), [
    ("python:3.12", PY), ("python", "docker.io/library/python:latest"),
    ("index.docker.io/library/python:3.12", PY), ("ghcr.io/o/app:v1", "ghcr.io/o/app:v1"),
    ("localhost:5000/a/b@sha256:" + "a" * 64, "localhost:5000/a/b@sha256:" + "a" * 64),
])  # fmt: skip
def test_references_are_normalized(image: str, canonical: str) -> None:
    assert str(imageref.parse(image)) == canonical


@pytest.mark.parametrize("image", ["Python:3", "../etc", "a b", "x@sha256:12", "x:", "",
                                   "http://x/y", "x:" + "t" * 200])  # fmt: skip
def test_invalid_references_are_400(image: str) -> None:
    with pytest.raises(BadRequest, match="not a valid image reference"):
        imageref.parse(image)


@pytest.fixture
def registries(engine) -> RegistryService:  # noqa: ANN001
    return RegistryService(SqlRegistryStore(engine), AesGcmSealer(os.urandom(32)))


@pytest.fixture
def lifecycle(
    settings: Settings, engine, store, runtime: FakeRuntime, events: RecordingEvents,  # noqa: ANN001
    registries: RegistryService,
) -> LifecycleService:  # fmt: skip
    runner = LocalRunner(runtime)
    snapshots = SnapshotService(store=SqlSnapshotStore(engine), runner=runner, sandboxes=store,
                                default_name="cove-default")  # fmt: skip
    images = ImageService(snapshots=snapshots, registries=registries, runner=runner)
    return LifecycleService(settings=settings, store=store, runner=runner, events=events,
                            snapshots=snapshots, images=images)  # fmt: skip


def _from(image: str, user: str | None = None) -> SandboxCreate:
    dockerfile = BuildInfoCreate(dockerfile_content=f"FROM {image}\n")
    return SandboxCreate(user=user, build_info=dockerfile)


async def test_pull_then_boot_with_the_images_user_and_once(
    lifecycle: LifecycleService, runtime: FakeRuntime, events: RecordingEvents, org: str
) -> None:
    runtime.registry[PY] = ("sha256:" + "1" * 64, CONFIG, None)
    sb = await lifecycle.create(organization_id=org, request=_from("python:3.12"))
    assert sb.state is S.PENDING_BUILD and sb.snapshot == PY
    await lifecycle.drain()
    sb = lifecycle.get(org, sb.id)
    assert events.states_of(sb.id) == ["pulling_snapshot", "starting", "started"]
    assert sb.user == "app" and sb.snapshot != PY
    assert f"Pulled {PY}" in lifecycle.build_log(org, sb.id).text()
    again = await lifecycle.create(organization_id=org, request=_from(PY, user="daytona"))
    await lifecycle.drain()
    again = lifecycle.get(org, again.id)
    assert again.state is S.STARTED and again.snapshot == sb.snapshot and again.user == "daytona"
    assert [image for image, _ in runtime.pulls] == [PY]  # pulled once


async def test_failed_pull_is_build_failed_and_registers_nothing(
    lifecycle: LifecycleService, runtime: FakeRuntime, org: str
) -> None:
    sb = await lifecycle.create(organization_id=org, request=_from("nope:1"))
    await lifecycle.drain()
    sb = lifecycle.get(org, sb.id)
    assert sb.state is S.BUILD_FAILED and "docker.io/library/nope:1" in (sb.error_reason or "")
    assert lifecycle.snapshots is not None
    assert [s.name for s in lifecycle.snapshots.list(org)] == ["cove-default"]


async def test_credentials_are_the_organizations_own(
    lifecycle: LifecycleService, runtime: FakeRuntime, registries: RegistryService, engine,  # noqa: ANN001
    org: str,
) -> None:  # fmt: skip
    private = "registry.example.com/team/app:v1"
    runtime.registry[private] = ("sha256:" + "2" * 64, ImageConfig(), "pw")
    made = registries.create(org, name="r", url="https://registry.example.com/",
                             username="u", password="pw", project="team")  # fmt: skip
    other = SqlKeyStore(engine).ensure_organization("other")
    with pytest.raises(NotFound):
        registries.get(other, made.id)
    assert registries.list(other) == []
    theirs = await lifecycle.create(organization_id=other, request=_from(private))
    mine = await lifecycle.create(organization_id=org, request=_from(private))
    await lifecycle.drain()
    assert lifecycle.get(other, theirs.id).state is S.BUILD_FAILED
    assert lifecycle.get(org, mine.id).state is S.STARTED
    assert [auth.username if auth else None for _, auth in runtime.pulls] == [None, "u"]
    assert "pw" not in repr(runtime.pulls)
    # Another project of the same registry gets no credentials.
    assert registries.auth_for(org, imageref.parse("registry.example.com/else/app")) is None


def test_registry_input_is_checked(registries: RegistryService, org: str) -> None:
    for bad in ({"url": "not a url"}, {"password": ""}, {"username": "a:b"}):
        fields = {"name": "r", "url": "ghcr.io", "username": "u", "password": "p", **bad}
        with pytest.raises(BadRequest):
            registries.create(org, **fields)
    assert registries.list(org) == []


async def test_pulls_of_many_images_leave_nothing_held(
    lifecycle: LifecycleService, runtime: FakeRuntime, org: str
) -> None:
    """The lock that makes one pull per image and organization lasts as long as its
    pulls: the references a tenant makes up (each create may name another) do not pile
    up in the server's memory."""
    runtime.registry[PY] = ("sha256:" + "1" * 64, CONFIG, None)
    made = [await lifecycle.create(organization_id=org, request=_from(image))
            for image in [PY, PY] + [f"made-up-{i}:1" for i in range(20)]]  # fmt: skip
    await lifecycle.drain()
    states = [lifecycle.get(org, sb.id).state for sb in made]
    assert states == [S.STARTED] * 2 + [S.BUILD_FAILED] * 20
    assert [image for image, _ in runtime.pulls].count(PY) == 1  # still one pull at a time
    images = lifecycle.creator.images
    assert images is not None and len(images._locks) == 0


HUGE = 3 * 2**20  # what an image config of 4 MiB (unpack.MAX_CONFIG) can hold


@pytest.mark.parametrize(("config", "reason"), [
    (ImageConfig(user="u" * HUGE), r"User '(u{64})\.\.\.' is not a user name or uid"),
    (ImageConfig(user="app; rm -rf /"), "User 'app; rm -rf /' is not a user name or uid"),
    (ImageConfig(user="1000:" + "g" * 40), "is not a user name or uid"),
    (ImageConfig(entrypoint=("/bin/sh", "-c", "x" * HUGE)), "Entrypoint takes 3145740 "
                                                             "characters, at most 32768"),
    (ImageConfig(cmd=tuple("w" * 40_000)), "Cmd takes 80000 characters, at most 32768"),
    (ImageConfig(cmd=("a\0b",)), "Cmd holds a NUL character"),
    (ImageConfig(env={f"V{n}": "" for n in range(600)}), "Env has 600 variables, at most 512"),
    (ImageConfig(env={"BIG": "x" * HUGE}), r"Env takes 3145733 bytes, at most 131072"),
    (ImageConfig(workdir="/" + "w" * HUGE), "WorkingDir is 3145729 characters long, at most 4096"),
])  # fmt: skip
async def test_an_image_config_past_its_bounds_fails_the_pull_and_leaves_nothing(
    lifecycle: LifecycleService, runtime: FakeRuntime, org: str, config: ImageConfig,
    reason: str,
) -> None:  # fmt: skip
    """What Cove keeps of an image's config comes from whoever pushed the image: its
    User becomes the sandbox's (returned by every listing of sandboxes, sent with every
    agent call), its Entrypoint or Cmd is returned by every listing of snapshots. Each
    is checked as the API checks what a client asks for: one past its bound fails the
    pull with the field and the bound named, and no snapshot (nor its files) is kept."""
    runtime.registry[PY] = ("sha256:" + "1" * 64, config, None)
    sb = await lifecycle.create(organization_id=org, request=_from(PY))
    await lifecycle.drain()
    sb = lifecycle.get(org, sb.id)
    assert sb.state is S.BUILD_FAILED, sb.user[:100]
    assert re.search(reason, sb.error_reason or ""), (sb.error_reason or "")[:300]
    assert len(sb.error_reason or "") < 1024 and sb.user == "daytona"
    assert lifecycle.snapshots is not None
    assert [s.name for s in lifecycle.snapshots.list(org)] == ["cove-default"]
    assert runtime.snapshots == {"cove-default"}


@pytest.mark.parametrize("user", ["app", "app:app", "1000", "65532:65532", "_svc.x-1:0", ""])
async def test_an_image_s_user_as_docker_writes_it_is_kept(
    lifecycle: LifecycleService, runtime: FakeRuntime, org: str, user: str
) -> None:
    runtime.registry[PY] = ("sha256:" + "1" * 64, ImageConfig(user=user or None), None)
    sb = await lifecycle.create(organization_id=org, request=_from(PY))
    await lifecycle.drain()
    sb = lifecycle.get(org, sb.id)
    assert sb.state is S.STARTED and sb.user == (user.partition(":")[0] or "root")


class StallingRuntime(FakeRuntime):
    """A registry that never finishes sending: each pull (but of the images in
    ``quick``) waits until ``done`` is set, or until its caller cancels it (``cancel``,
    see HostRuntime.pull_image)."""

    def __init__(self) -> None:
        super().__init__()
        self.done = threading.Event()
        self.quick: set[str] = set()
        self.running = 0
        self.cancelled = 0
        self.lock = threading.Lock()

    def pull_image(
        self, ref: str, image: str, auth: RegistryAuth | None,
        progress: Callable[[str], None] | None = None, cancel: threading.Event | None = None,
    ) -> PulledImage:  # fmt: skip
        if image in self.quick:
            return super().pull_image(ref, image, auth, progress)
        with self.lock:
            self.running += 1
        try:
            while not self.done.wait(0.01):
                if cancel is not None and cancel.is_set():
                    with self.lock:
                        self.cancelled += 1
                    raise RuntimeBackendError(f"pulling {image} was cancelled")
        finally:
            with self.lock:
                self.running -= 1
        return super().pull_image(ref, image, auth, progress)


@pytest.fixture
def stalling(registries: RegistryService, engine, store) -> Iterator[  # noqa: ANN001
        tuple[StallingRuntime, LocalRunner, ImageService]]:  # fmt: skip
    runtime = StallingRuntime()
    runtime.registry[PY] = ("sha256:" + "1" * 64, CONFIG, None)
    runner = LocalRunner(runtime)
    snapshots = SnapshotService(store=SqlSnapshotStore(engine), runner=runner, sandboxes=store,
                                default_name="cove-default")  # fmt: skip
    yield runtime, runner, ImageService(snapshots=snapshots, registries=registries,
                                        runner=runner)  # fmt: skip
    runtime.done.set()


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


async def test_deleting_a_pulling_snapshot_ends_its_pull(
    stalling: tuple[StallingRuntime, LocalRunner, ImageService], org: str
) -> None:
    """A snapshot deleted while ``pulling`` takes its pull with it: else a tenant, by
    creating and deleting snapshots, ran any number of pulls at once (each up to
    COVE_PULL_TIMEOUT_SECONDS and COVE_MAX_IMAGE_MB) past its snapshot quota."""
    runtime, _runner, images = stalling
    snap = await images.create_snapshot(org, "py", PY)
    await _until(lambda: runtime.running == 1)
    await images.snapshots.delete(org, snap.id)
    assert runtime.running == 0 and runtime.cancelled == 1  # ended with the delete
    await images.drain()
    assert snap.id not in runtime.snapshots
    assert [s.name for s in images.snapshots.list(org)] == ["cove-default"]


async def test_a_tenants_pulls_do_not_hold_up_other_sandboxes_lifecycle(
    stalling: tuple[StallingRuntime, LocalRunner, ImageService], org: str, engine,  # noqa: ANN001
) -> None:  # fmt: skip
    """Pulls (of a registry as slow as its tenant likes) do not take the host threads
    that starts, stops and deletes of every organization's sandboxes run in."""
    runtime, runner, images = stalling
    runtime.create(ContainerSpec(sandbox_id="other", hostname="other", snapshot="cove-default",
                                 resources=Resources(cpu=1, memory=1, disk=3)))
    for i in range(HOST_WORKERS + 1):
        await images.create_snapshot(org, f"py-{i}", PY)
    await asyncio.sleep(0.2)
    spec = runtime.specs["other"]
    await asyncio.wait_for(runner.start(spec), 5)
    await asyncio.wait_for(runner.stop("other"), 5)
    runtime.done.set()
    await images.drain()


async def test_a_tenants_stalled_pulls_do_not_hold_up_another_organizations_pulls(
    stalling: tuple[StallingRuntime, LocalRunner, ImageService], org: str, engine,  # noqa: ANN001
) -> None:  # fmt: skip
    """Past COVE_MAX_PULLS at once, an organization's pulls wait for its own to end: its
    registry, as slow as it likes, does not keep another organization's image waiting
    in line behind them."""
    runtime, runner, unbounded = stalling
    images = ImageService(snapshots=unbounded.snapshots, registries=unbounded.registries,
                          runner=runner, max_pulls=2)  # fmt: skip
    other = SqlKeyStore(engine).ensure_organization("other")
    made = [await images.create_snapshot(org, f"py-{i}", PY) for i in range(PULL_WORKERS + 1)]
    await _until(lambda: runtime.running == 2)
    alpine = "docker.io/library/alpine:3"
    runtime.registry[alpine] = ("sha256:" + "2" * 64, CONFIG, None)
    runtime.quick.add(alpine)
    snap = await asyncio.wait_for(images.snapshot_for(other, "alpine:3"), 5)
    assert snap.state == "active" and snap.digest == "sha256:" + "2" * 64
    assert runtime.running == 2  # still its two, the others waiting
    await images.snapshots.delete(org, made[-1].id)  # one waiting in line goes at once
    runtime.done.set()
    await images.drain()
    assert {images.snapshots.get(org, s.id).state for s in made[:-1]} == {"active"}
    assert len(images._pulling) == 0  # nothing held once they end
