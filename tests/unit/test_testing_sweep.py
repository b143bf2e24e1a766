"""The test servers' snapshots are swept from the shared snapshot dir."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cove import testing


def _server_db(data_dir: Path, ids: list[str]) -> None:
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "cove.db") as db:
        db.execute("CREATE TABLE snapshots (id TEXT PRIMARY KEY)")
        db.executemany("INSERT INTO snapshots VALUES (?)", [(i,) for i in ids])


def test_what_test_servers_recorded_is_swept_and_nothing_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    shared = tmp_path / "snapshots"
    for name in ("cove-default", "made-by-a-test", "another-servers"):
        (shared / name / "rootfs").mkdir(parents=True)
        (shared / name / "rootfs" / "file").write_text("x")
    monkeypatch.setattr(testing, "SHARED_SNAPSHOTS", shared)
    monkeypatch.setattr(testing, "_RECORDED", set())
    _server_db(tmp_path / "data", ["made-by-a-test", "cove-default", "deleted-since"])
    server = testing.ServerProcess(tmp_path / "data", api_key="k")
    server.stop()  # never started: still records what its store holds

    assert testing.sweep_snapshots() == ["made-by-a-test"]
    assert sorted(p.name for p in shared.iterdir()) == ["another-servers", "cove-default"]
    assert testing.sweep_snapshots() == []  # forgotten once swept


def test_a_store_without_snapshots_records_nothing(tmp_path: Path) -> None:
    assert testing.recorded_snapshots(tmp_path) == []
    (tmp_path / "cove.db").write_bytes(b"")  # an empty, never migrated store
    assert testing.recorded_snapshots(tmp_path) == []
