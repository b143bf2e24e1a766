"""Host preparation: finding the cgroup2 mount and remounting it with favordynmods."""

from __future__ import annotations

from cove.runner.host.hostprep import cgroup2_mount, remount_argv
from cove.runner.host.mounts import Mount


def _mount(point: str, fstype: str, options: str) -> Mount:
    return Mount(fstype, point, fstype, frozenset(options.split(",")))


ROOT = _mount("/", "ext4", "rw,relatime")
SYSTEMD_V2 = [ROOT, _mount("/sys/fs/cgroup", "cgroup2",
                           "rw,nosuid,nodev,noexec,relatime,nsdelegate,memory_recursiveprot")]
HYBRID = [ROOT, _mount("/sys/fs/cgroup", "tmpfs", "ro,mode=755"),
          _mount("/sys/fs/cgroup/pids", "cgroup", "rw,relatime,pids"),
          _mount("/sys/fs/cgroup/unified", "cgroup2", "rw,relatime")]
V1_ONLY = [ROOT, _mount("/sys/fs/cgroup/pids", "cgroup", "rw,relatime,pids")]


def test_the_cgroup2_mount_is_found() -> None:
    assert cgroup2_mount(SYSTEMD_V2) == SYSTEMD_V2[1]
    assert cgroup2_mount(HYBRID) == HYBRID[3]
    assert cgroup2_mount(V1_ONLY) is None


def test_the_remount_keeps_the_roots_other_flags() -> None:
    # (a reconfiguration of the cgroup2 root sets all its flags anew: a remount naming
    # only favordynmods would turn nsdelegate off)
    assert remount_argv(SYSTEMD_V2[1]) == [
        "mount", "-o",
        "remount,memory_recursiveprot,nodev,noexec,nosuid,nsdelegate,relatime,favordynmods",
        "/sys/fs/cgroup"]
    assert remount_argv(HYBRID[3]) == [
        "mount", "-o", "remount,relatime,favordynmods", "/sys/fs/cgroup/unified"]
    assert remount_argv(_mount("/sys/fs/cgroup", "cgroup2", "rw,nsdelegate,favordynmods")) is None
