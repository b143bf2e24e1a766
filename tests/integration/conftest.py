"""Fixtures for tests against the real runtime: root, crun and the default snapshot.

The default snapshot is shared through ``/var/lib/cove/snapshots`` (built once,
about 3 min). Every sandbox a test makes is destroyed afterwards, and every test
is followed by a check that nothing of ours is left on the host.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.core.ports import ContainerSpec, NetworkPolicy, Resources, VolumeBind
from cove.hostfiles import private_dir
from cove.runner.oci.runtime import OciRuntime
from cove.runner.storage.snapshot import ensure_default_snapshot
from cove.testing import SHARED_SNAPSHOTS
from tests.leaks import cgroup_parents, leaks
from tests.nettools import TEST_NAMES, FakeDns, sandbox_pool

log = logging.getLogger("cove.tests.integration")
SNAPSHOTS = SHARED_SNAPSHOTS
TOOLS = ("crun", "debootstrap", "mkfs.ext4", "zstd", "tar", "gcc", "resize2fs")


def _unmet() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    return f"missing tools: {', '.join(missing)}" if missing else None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _unmet()
    if reason is None:
        return
    for item in items:
        if item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def fake_dns() -> Iterator[FakeDns]:
    """The upstream of Cove's DNS forwarder in these tests (names of test remotes)."""
    dns = FakeDns(TEST_NAMES)
    yield dns
    dns.close()


@pytest.fixture(scope="session")
def it_settings(tmp_path_factory: pytest.TempPathFactory, fake_dns: FakeDns) -> Settings:
    """Settings of the test session: a fresh data dir (0700, as ``cove serve`` makes it),
    the shared snapshot cache, sandbox addresses in 198.19.0.0/16 and the test DNS
    server upstream."""
    data = private_dir(tmp_path_factory.mktemp("cove-it"), tighten=True)
    return Settings(data_dir=data, snapshot_dir=SNAPSHOTS, stop_grace_seconds=2.0,
                    network_pool=sandbox_pool(0), dns_upstream=fake_dns.upstream,
                    cgroup_parent=f"cove-it-{uuid.uuid4().hex[:8]}")  # fmt: skip


@pytest.fixture(scope="session")
def default_rootfs(it_settings: Settings) -> Path:
    """The default snapshot's rootfs (built on first use)."""
    return ensure_default_snapshot(it_settings, progress=log.info)


@pytest.fixture(scope="session")
def runtime(it_settings: Settings, default_rootfs: Path) -> OciRuntime:
    return OciRuntime(it_settings)


SandboxFactory = Callable[..., ContainerSpec]
ID_PREFIX = "it-"


@pytest.fixture
def tier() -> str:
    """The isolation tier of the sandboxes a test makes (modules that run on both
    override it with ``tests.integration.runner.util.both_tiers``)."""
    return "crun"


@pytest.fixture
def make_sandbox(runtime: OciRuntime, tier: str) -> Iterator[SandboxFactory]:
    """Create (and by default start) sandboxes; every one is destroyed at the end."""
    with sandbox_factory(runtime, tier) as make:
        yield make


@contextmanager
def sandbox_factory(runtime: OciRuntime, tier: str = "crun") -> Iterator[SandboxFactory]:
    """A sandbox factory on ``runtime`` making sandboxes of isolation tier ``tier``;
    every sandbox it made is destroyed on exit."""
    made: list[str] = []

    def make(
        *, cpu: int = 1, memory: int = 1, disk: int = 3, start: bool = True,
        env: dict[str, str] | None = None, hostname: str | None = None,
        network: NetworkPolicy | None = None, volumes: tuple[VolumeBind, ...] = (),
    ) -> ContainerSpec:  # fmt: skip
        sandbox_id = f"{ID_PREFIX}{uuid.uuid4().hex[:12]}"
        spec = ContainerSpec(
            sandbox_id=sandbox_id,
            hostname=hostname or f"box-{sandbox_id[3:9]}",
            snapshot="cove-default",
            resources=Resources(cpu=cpu, memory=memory, disk=disk),
            env=env or {},
            network=network or NetworkPolicy(),
            volumes=volumes,
            isolation=tier,
        )
        made.append(sandbox_id)
        log.info("sandbox %s", sandbox_id)
        runtime.create(spec)
        if start:
            runtime.start(spec)
        return spec

    yield make
    for sandbox_id in made:
        try:
            runtime.destroy(sandbox_id)
        except Exception:
            log.exception("destroying sandbox %s failed", sandbox_id)
            raise
    # A test that ran a second runtime on the sandbox must have given it the same
    # cgroup parent: nothing of these sandboxes may sit under the default one.
    default = Settings.model_fields["cgroup_parent"].default
    stray = [str(p / sid) for p in cgroup_parents(default) for sid in made
             if (p / sid).exists()]  # fmt: skip
    assert not stray, f"cgroups left under the default parent: {stray}"


def stray_processes(data_dir: Path, cgroup_parent: str) -> list[str]:
    """Processes still in a test sandbox's cgroup (gVisor's sentry and gofer too), and
    crun or runsc calls about our data dir."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cgroup = Path(f"/proc/{pid}/cgroup").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] == "Z":
            continue  # exited; the host's init reaps it (it holds nothing but its pid)
        if f"/{cgroup_parent}/" in cgroup or (str(data_dir) in cmd and ("crun" in cmd or
                                                                       "runsc" in cmd)):
            found.append(f"process {pid}: {cmd[:80]}")
    return found


@pytest.fixture(autouse=True)
def nothing_left(request: pytest.FixtureRequest, it_settings: Settings) -> Iterator[None]:
    """After each integration test: no mount, loop, cgroup, container or process of ours."""
    yield
    if request.node.get_closest_marker("integration") is None or _unmet():
        return
    parent = it_settings.cgroup_parent
    deadline = time.monotonic() + 10  # a killed exec's host wrapper may still be exiting
    while True:
        left = leaks(it_settings.data_dir, parent) + stray_processes(it_settings.data_dir, parent)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, "left on the host: " + "; ".join(left)
