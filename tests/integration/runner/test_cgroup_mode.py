"""Cgroup layout detection and the crun wrapper it selects (no root needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.runner.host import cgroups, mounts
from cove.runner.oci.crun import Crun

pytestmark = pytest.mark.integration


def _table(*rows: tuple[str, str]) -> list[mounts.Mount]:
    return [mounts.Mount("x", point, fstype, frozenset({"rw"})) for point, fstype in rows]


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    cgroups.mode.cache_clear()
    cgroups._v1_hierarchies.cache_clear()
    yield
    cgroups.mode.cache_clear()
    cgroups._v1_hierarchies.cache_clear()


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([("/sys/fs/cgroup", "cgroup2")], cgroups.CgroupMode.UNIFIED),
        (
            [("/sys/fs/cgroup", "tmpfs"), ("/sys/fs/cgroup/memory", "cgroup"),
             ("/sys/fs/cgroup/unified", "cgroup2")],
            cgroups.CgroupMode.HYBRID,
        ),
        (
            [("/sys/fs/cgroup", "tmpfs"), ("/sys/fs/cgroup/memory", "cgroup")],
            cgroups.CgroupMode.LEGACY,
        ),
    ],
)  # fmt: skip
def test_mode_and_wrapper(
    monkeypatch: pytest.MonkeyPatch, rows: list[tuple[str, str]], expected: cgroups.CgroupMode
) -> None:
    monkeypatch.setattr(mounts, "mount_table", lambda: _table(*rows))
    assert cgroups.mode() is expected
    argv = Crun(Path("/lib/cove-init")).argv("delete", "x")
    # reading crun's state touches no cgroup: never wrapped
    assert Crun(Path("/lib/cove-init")).argv("state", "x") == ["crun", "state", "x"]
    if expected is cgroups.CgroupMode.HYBRID:
        assert argv == ["/lib/cove-init", "--exec", "--hybrid", "crun", "delete", "x"]
        joined = Crun(Path("/lib/cove-init")).argv("run", "x", cgroup2="/cove/sb")
        assert joined[:5] == ["/lib/cove-init", "--exec", "--hybrid", "--cgroup2", "/cove/sb"]
    else:
        assert argv == ["crun", "delete", "x"]
        # descriptors handed to the container always go through the wrapper
        run = Crun(Path("/lib/cove-init")).argv("run", "x", fds=2)
        assert run[:2] == ["/lib/cove-init", "--exec"] and "--hybrid" not in run


def test_v2_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mounts, "mount_table", lambda: _table(("/sys/fs/cgroup", "cgroup2")))
    assert cgroups.hierarchy_roots() == [Path("/sys/fs/cgroup")]
    group = cgroups.group_of("cove", "sb")
    assert group == "cove/sb"
    assert cgroups.controller_dir(group, "memory") == Path("/sys/fs/cgroup/cove/sb")
