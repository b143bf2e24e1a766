"""Cgroup layout detection and the crun wrapper it selects (no root needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.runtime import cgroups, mounts
from cove.runtime.crun import Crun

pytestmark = pytest.mark.integration


def _table(*rows: tuple[str, str]) -> list[mounts.Mount]:
    return [mounts.Mount("x", point, fstype, frozenset({"rw"})) for point, fstype in rows]


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    cgroups.mode.cache_clear()
    yield
    cgroups.mode.cache_clear()


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
    argv = Crun(Path("/lib/cove-init")).argv("state", "x")
    if expected is cgroups.CgroupMode.HYBRID:
        assert argv == ["/lib/cove-init", "--hybrid-exec", "crun", "state", "x"]
        kept = Crun(Path("/lib/cove-init")).argv("run", "x", keep=Path("/d/sb"))
        assert kept[:4] == ["/lib/cove-init", "--hybrid-exec", "--keep", "/d/sb"]
    else:
        assert argv == ["crun", "state", "x"]


def test_v2_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mounts, "mount_table", lambda: _table(("/sys/fs/cgroup", "cgroup2")))
    assert cgroups.hierarchy_roots() == [Path("/sys/fs/cgroup")]
    assert cgroups.controller_dir("sb", "memory") == Path("/sys/fs/cgroup/cove/sb")
    assert cgroups.cgroup_path("sb") == "/cove/sb"
