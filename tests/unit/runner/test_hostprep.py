"""Host preparation: finding the cgroup2 mount and remounting it with favordynmods."""

from __future__ import annotations

from cove.runner.host.hostprep import cgroup2_mount, remount_argv

SYSTEMD_V2 = """\
22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/root rw
25 22 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 \
rw,nsdelegate,memory_recursiveprot
"""
HYBRID = """\
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
V1_ONLY = "32 31 0:27 / /sys/fs/cgroup/pids rw,relatime shared:10 - cgroup cgroup rw,pids\n"


def test_the_cgroup2_mount_is_found_with_its_own_options() -> None:
    assert cgroup2_mount(SYSTEMD_V2) == ("/sys/fs/cgroup", ["nsdelegate", "memory_recursiveprot"])
    assert cgroup2_mount(HYBRID) == ("/sys/fs/cgroup/unified", [])
    assert cgroup2_mount(V1_ONLY) is None
    escaped = "41 31 0:38 / /srv/cg\\040two rw - cgroup2 none rw,nsdelegate\n"
    assert cgroup2_mount(escaped) == ("/srv/cg two", ["nsdelegate"])


def test_the_remount_keeps_the_roots_other_flags() -> None:
    # (a reconfiguration of the cgroup2 root sets all its flags anew: a remount naming
    # only favordynmods would turn nsdelegate off)
    assert remount_argv("/sys/fs/cgroup", ["nsdelegate", "memory_recursiveprot"]) == [
        "mount", "-o", "remount,nsdelegate,memory_recursiveprot,favordynmods", "/sys/fs/cgroup"]
    assert remount_argv("/sys/fs/cgroup/unified", []) == [
        "mount", "-o", "remount,favordynmods", "/sys/fs/cgroup/unified"]
    assert remount_argv("/sys/fs/cgroup", ["nsdelegate", "favordynmods"]) is None  # set: kept
