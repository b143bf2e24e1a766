"""Namespaces made ahead (COVE_NS_STOCK): a sandbox's first start takes a ready set,
on a range of its own that the registry then names as the sandbox's; the stock holds
no mount, never hands one set (or range) out twice, and the claims of a stock whose
server is gone are swept."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.runner.host import idrange, mounts, nsstock
from cove.runner.host.idrange import IdRange
from cove.runner.host.nsstock import NamespaceStock
from cove.runner.layout import SandboxPaths, sandboxes_dir
from cove.runner.oci.initbin import ensure_nsexec_binary
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import agent_pids, init_pid, ok, sandbox_dir

pytestmark = pytest.mark.integration
NS_GET_PARENT = 0xB702


@pytest.fixture(autouse=True)
def at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nsstock, "REFILL_DELAY", 0.0)


@pytest.fixture
def stock(tmp_path: Path, it_settings: Settings) -> Iterator[NamespaceStock]:
    made = NamespaceStock(tmp_path, lambda: ensure_nsexec_binary(it_settings.data_dir), 3)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def sandboxes(tmp_path: Path) -> Iterator[list[SandboxPaths]]:
    """Sandbox directories of ``tmp_path`` (their namespaces unmounted and ranges
    given back at the end)."""
    made: list[SandboxPaths] = []
    yield made
    for paths in made:
        for path in (paths.netns, paths.workns, paths.userns):
            mounts.unmount(path)
        idrange.release(paths.root, tmp_path)


def new_sandbox(tmp_path: Path, made: list[SandboxPaths], name: str) -> SandboxPaths:
    paths = SandboxPaths.of(tmp_path, name)
    paths.root.mkdir(parents=True)
    made.append(paths)
    return paths


def stocked(stock: NamespaceStock) -> list[int]:
    """The ranges of the stock's sets, once it is full."""
    for _ in range(1000):
        if stock.ready() >= stock.keep and not stock._refiller.busy():
            return sorted(idrange.held(stock.owner))
        time.sleep(0.01)
    raise AssertionError("the stock was not made")


def in_ns(flag: str, path: Path, *argv: str) -> str:
    return subprocess.run(["nsenter", f"{flag}={path}", *argv], capture_output=True, text=True,
                          check=True).stdout  # fmt: skip


def test_a_take_gives_namespaces_on_a_range_the_registry_names_the_sandboxs(
    stock: NamespaceStock, tmp_path: Path, sandboxes: list[SandboxPaths],
) -> None:  # fmt: skip
    first = new_sandbox(tmp_path, sandboxes, "sb-first")
    assert stock.take(first) is None  # nothing made yet: the caller makes its own
    assert not (first.root / idrange.LEASE).exists()
    ready = stocked(stock)
    assert len(ready) == 3

    paths = new_sandbox(tmp_path, sandboxes, "sb-one")
    ids = stock.take(paths)
    assert ids is not None and ids.index in ready
    assert idrange.held(tmp_path) == {ids.index: "sb-one"}  # the claim is the sandbox's
    assert ids.index not in idrange.held(stock.owner)
    assert idrange.current(paths.root) == ids
    # Its user namespace maps the sandbox's ids and the agent's to its own range.
    assert in_ns("--user", paths.userns, "cat", "/proc/self/uid_map").split() == \
        ["0", str(ids.base), str(idrange.SIZE + 1)]
    # The workload's namespace is nested in it; the network one is fresh, as made.
    work = os.open(paths.workns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        parent = fcntl.ioctl(work, NS_GET_PARENT)
        try:
            assert os.fstat(parent).st_ino == os.stat(paths.userns).st_ino
        finally:
            os.close(parent)
    finally:
        os.close(work)
    assert in_ns("--net", paths.netns, "ip", "-o", "link").split(":")[1].strip() == "lo"
    assert len(in_ns("--net", paths.netns, "ip", "-o", "link").splitlines()) == 1
    assert in_ns("--net", paths.netns, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"
                 ).strip() == "0"  # fmt: skip
    assert len(stocked(stock)) == 3  # made up again


def test_the_stock_holds_no_mount_and_gives_its_ranges_back_when_closed(
    stock: NamespaceStock, tmp_path: Path, sandboxes: list[SandboxPaths],
) -> None:  # fmt: skip
    stock.take(new_sandbox(tmp_path, sandboxes, "sb-x"))
    ranges = stocked(stock)
    assert not [m for m in Path("/proc/self/mounts").read_text().splitlines()
                if str(tmp_path) in m]  # fmt: skip
    assert not list(stock.owner.iterdir())  # no scratch left
    stock.close()
    assert not idrange.held(stock.owner)
    assert not set(ranges) & set(idrange.owners())


def test_concurrent_takes_never_share_a_set_or_a_range(
    stock: NamespaceStock, tmp_path: Path, sandboxes: list[SandboxPaths],
) -> None:  # fmt: skip
    stock.take(new_sandbox(tmp_path, sandboxes, "sb-warm"))
    stocked(stock)
    targets = [new_sandbox(tmp_path, sandboxes, f"sb-{n}") for n in range(5)]
    with ThreadPoolExecutor(len(targets)) as pool:
        taken = list(pool.map(stock.take, targets))
    got = [ids for ids in taken if ids is not None]
    assert 1 <= len(got) <= 5 and len({ids.index for ids in got}) == len(got)
    inodes = {os.stat(paths.userns).st_ino for paths, ids in zip(targets, taken, strict=True)
              if ids is not None}  # fmt: skip
    assert len(inodes) == len(got)
    owners = idrange.held(tmp_path)
    for paths, ids in zip(targets, taken, strict=True):
        if ids is not None:
            assert owners[ids.index] == paths.root.name


def test_claims_and_scratch_of_a_stock_whose_server_is_gone_are_swept(
    stock: NamespaceStock, tmp_path: Path, sandboxes: list[SandboxPaths],
) -> None:  # fmt: skip
    gone = subprocess.Popen(["true"])
    gone.wait()
    other = tmp_path / "elsewhere" / nsstock.STOCK_DIR  # another data dir's stock
    dead, alive, scratch = (other / f"{gone.pid}.dead", other / f"{os.getpid()}.alive",
                            stock.owner / f"{gone.pid}.scratch")  # fmt: skip
    for root in (dead, alive, scratch):
        root.mkdir(parents=True)
    dead_ids = idrange.lease(dead, other)
    alive_ids = idrange.lease(alive, other)
    (scratch / "netns").touch()
    subprocess.run(["mount", "--bind", "/proc/self/ns/net", str(scratch / "netns")], check=True)
    try:
        stock.take(new_sandbox(tmp_path, sandboxes, "sb-y"))
        stocked(stock)
        claims = idrange.owners()  # (the dead one's index may be a new set's now)
        assert (str(other), dead.name) not in claims.values()
        assert claims[alive_ids.index] == (str(other), alive.name)
        assert not scratch.exists()
    finally:
        mounts.detach(scratch / "netns")
        idrange.drop(alive_ids, (other, alive.name))
        idrange.drop(dead_ids, (other, dead.name))


def test_a_server_start_sweeps_what_a_killed_one_left_mid_set(
    runtime: OciRuntime, it_settings: Settings,
) -> None:  # fmt: skip
    """A server killed while its stock made a set leaves the set's namespaces mounted in
    its scratch: the next server's stale-work pass (at its start) unmounts and removes
    them, whether or not it ever makes a set itself."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    scratch = it_settings.data_dir / nsstock.STOCK_DIR / f"{gone.pid}.killed" / "ns"
    scratch.mkdir(parents=True)
    (scratch / "user").touch()
    subprocess.run(["mount", "--bind", "/proc/self/ns/user", str(scratch / "user")], check=True)
    try:
        runtime.remove_stale_work()
        assert not scratch.parent.exists()
        assert str(scratch) not in Path("/proc/self/mountinfo").read_text()
    finally:
        if scratch.exists():
            mounts.detach(scratch / "user")


def test_a_set_whose_claim_is_not_the_stocks_is_not_handed_out(
    stock: NamespaceStock, tmp_path: Path, sandboxes: list[SandboxPaths],
) -> None:  # fmt: skip
    stock.take(new_sandbox(tmp_path, sandboxes, "sb-z"))
    ranges = stocked(stock)
    for index in ranges:  # (as if another server had rewritten them: never shared)
        (idrange.REGISTRY / str(index)).write_text(f"{tmp_path}/other\nsomeone\n")
    try:
        paths = new_sandbox(tmp_path, sandboxes, "sb-w")
        assert stock.take(paths) is None
        assert idrange.current(paths.root) is None and not mounts.is_mounted(paths.userns)
    finally:
        for index in ranges:
            idrange.drop(IdRange(index), (tmp_path / "other", "someone"))


def test_a_sandboxs_first_start_takes_a_set_and_keeps_its_range_after(
    runtime: OciRuntime, make_sandbox: SandboxFactory, it_settings: Settings,
) -> None:  # fmt: skip
    make_sandbox()  # (the stock is made once a start took from it, or found it empty)
    owner = it_settings.data_dir / nsstock.STOCK_DIR
    for _ in range(1000):
        ready = set(idrange.held(owner))
        if len(ready) >= it_settings.ns_stock:
            break
        time.sleep(0.01)
    spec = make_sandbox()
    ids = idrange.current(sandbox_dir(runtime, spec.sandbox_id))
    assert ids is not None and ids.index in ready
    assert idrange.held(it_settings.data_dir)[ids.index] == spec.sandbox_id
    inside = ok(runtime, spec.sandbox_id, "cat /proc/self/uid_map")
    assert inside.split() == ["0", "0", str(idrange.SIZE)]  # its workload's view
    # Its processes run on that range on the host: init and the agent as its agent id,
    # a command of root as its base (nobody of the host, no other sandbox's).
    for pid in (init_pid(runtime, spec.sandbox_id), *agent_pids(runtime, spec.sandbox_id)):
        assert _host_uid(pid) == ids.agent
    root_cmd = ok(runtime, spec.sandbox_id, "sleep 30 >/dev/null 2>&1 & echo $!").strip()
    assert root_cmd.isdigit()
    sleeping = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
                and _reads(p / "cmdline") == b"sleep\x0030\x00"
                and _host_uid(int(p.name)) == ids.base]  # fmt: skip
    assert sleeping, "the sandbox root's command does not run as the sandbox's base id"
    runtime.stop(spec.sandbox_id)
    runtime.start(spec)
    assert idrange.current(sandbox_dir(runtime, spec.sandbox_id)) == ids
    paths = SandboxPaths(sandboxes_dir(it_settings.data_dir) / spec.sandbox_id)
    assert in_ns("--user", paths.userns, "cat", "/proc/self/uid_map").split() == \
        ["0", str(ids.base), str(idrange.SIZE + 1)]
    assert ok(runtime, spec.sandbox_id, "touch /root/x && stat -c %u /root/x").strip() == "0"


def _reads(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def _host_uid(pid: int) -> int:
    """The real uid of host process ``pid``."""
    for line in _reads(Path(f"/proc/{pid}/status")).decode().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"process {pid} is gone")
