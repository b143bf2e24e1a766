"""Blank disks mounted ahead: a create's take attaches the image's mount where the
sandbox's disk goes, with the options of any sandbox disk; nothing of them is mounted
anywhere before, and they go with the process that holds them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.runner.host import blank_disks, disk, mounts
from cove.runner.host.blank_disks import BlankDisks

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blank_disks, "REFILL_DELAY", 0.0)


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[BlankDisks]:
    made = BlankDisks(tmp_path, mount_ahead=True)
    yield made
    made._finalizer()


def loops_of(directory: Path) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if f"{directory}/" in line]


def mounted(disks: BlankDisks, size: int) -> list[Path]:
    for _ in range(3000):
        if len(disks._mounted) >= blank_disks.KEEP and not disks._refiller.busy():
            return sorted(disks._mounted)
        time.sleep(0.01)
    raise AssertionError("no blank disks were mounted ahead")


def mount_line(target: Path) -> str:
    lines = [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
             if line.split()[4] == str(target)]  # fmt: skip
    assert len(lines) == 1, lines
    return lines[0]


def test_a_take_attaches_the_disk_mounted_ahead_with_a_sandbox_disks_options(
    disks: BlankDisks, tmp_path: Path,
) -> None:  # fmt: skip
    assert disks.take(tmp_path / "first.img", 1) is False
    ready = mounted(disks, 1)
    assert not [line for line in Path("/proc/self/mounts").read_text().splitlines()
                if str(tmp_path) in line]  # mounted nowhere  # fmt: skip
    assert len(loops_of(disks.directory)) == blank_disks.KEEP

    image, target = tmp_path / "sb" / "disk.img", tmp_path / "sb" / "disk"
    image.parent.mkdir()
    assert disks.take(image, 1, mount_at=target) is True
    assert mounts.is_mounted(target)
    line = mount_line(target)
    assert set(line.split()[5].split(",")) >= {"rw", "nosuid", "nodev", "noexec", "noatime"}
    assert " - ext4 /dev/loop" in line and "noinit_itable" in line and "errors=remount-ro" in line
    assert [entry for entry in loops_of(tmp_path / "sb") if str(image) in entry]  # followed it
    assert sum(1 for p in ready if p.exists()) == 1
    (target / "hello").write_text("hi")
    device = os.stat(target).st_dev
    mounts.unmount(target)
    disk.wait_released(device, image)  # the loop device went with the mount
    assert not loops_of(tmp_path / "sb")
    assert subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True).returncode == 0


def test_an_instance_that_goes_leaves_its_held_images_ready_and_unmounted(
    disks: BlankDisks, tmp_path: Path,
) -> None:  # fmt: skip
    disks.take(tmp_path / "first.img", 1)
    held = mounted(disks, 1)
    assert disks.take(tmp_path / "none.img", 1) is False  # (no mount point: held ones stay)
    disks._finalizer()  # (as when it is collected, or the process exits)
    assert not any(p.exists() for p in held) and not loops_of(tmp_path)
    ready = disks._ready(1)
    assert len(ready) == blank_disks.KEEP
    image, target = tmp_path / "plain.img", tmp_path / "later"
    os.rename(ready[0], image)
    disk.mount(image, target)  # (as a start mounts a disk it did not find mounted)
    try:
        (target / "x").write_text("x")
    finally:
        mounts.unmount(target)


HOLDER = """
import sys, time
from pathlib import Path
from cove.runner.host import blank_disks
from cove.runner.host.blank_disks import BlankDisks
blank_disks.REFILL_DELAY = 0.0
disks = BlankDisks(Path(sys.argv[1]), mount_ahead=True)
disks.take(Path(sys.argv[1]) / "first.img", 1)
while len(disks._mounted) < blank_disks.KEEP or disks._refiller.busy():
    time.sleep(0.01)
print("ready", flush=True)
time.sleep(60)
"""


def test_disks_mounted_ahead_go_with_the_process_that_held_them(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert len(loops_of(tmp_path / "blank-disks")) == blank_disks.KEEP
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    for _ in range(500):  # (the kernel lets the loop devices go as the process ends)
        if not loops_of(tmp_path / "blank-disks"):
            break
        time.sleep(0.01)
    assert not loops_of(tmp_path / "blank-disks")
    held = sorted((tmp_path / "blank-disks").glob("*g-*.held-*"))
    assert len(held) == blank_disks.KEEP
    for image in held:  # each still a clean blank
        assert subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True).returncode == 0
    # The next instance on the data dir finds them ready (and takes them unmounted).
    again = BlankDisks(tmp_path, mount_ahead=True)
    try:
        again._prepare_directory()
        assert len(again._ready(1)) == blank_disks.KEEP
        assert not list((tmp_path / "blank-disks").glob("*.held-*"))
        assert again.take(tmp_path / "next.img", 1) is True
        assert not loops_of(tmp_path)  # (taken unmounted: its start mounts it)
    finally:
        again._finalizer()


def test_another_instance_never_takes_an_image_mounted_ahead(
    disks: BlankDisks, tmp_path: Path,
) -> None:  # fmt: skip
    disks.take(tmp_path / "first.img", 1)
    held = mounted(disks, 1)
    other = BlankDisks(tmp_path, mount_ahead=True)  # (another process's, say a CLI's)
    try:
        taken = [other.take(tmp_path / f"o{n}.img", 1) for n in range(3)]
        assert all(p.exists() for p in held)  # none of the held ones
        for n, ok in enumerate(taken):
            if ok:
                assert not [e for e in loops_of(tmp_path) if f"o{n}.img" in e]
    finally:
        other._finalizer()
        other._refiller.shutdown()
