"""Modes of what Cove keeps on the host: directories 0700, files 0600, set explicitly
(a permissive umask changes nothing)."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from cove.core.config import Settings
from cove.hostfiles import prepare_host_dirs, private_dir, private_file, secret_file
from cove.runner.storage.archive_store import LocalArchiveStore
from cove.server import load_tokens
from cove.store.sql import make_engine


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """As if Cove were started with umask 000: modes must not depend on it."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_private_dir_and_file(tmp_path: Path) -> None:
    made = private_dir(tmp_path / "a" / "b")
    assert mode(made) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    assert mode(private_dir(loose)) == 0o755  # not Cove's: left alone
    assert mode(private_dir(loose, tighten=True)) == 0o700
    assert mode(private_file(tmp_path / "f")) == 0o600
    existing = tmp_path / "g"
    existing.write_text("kept")
    existing.chmod(0o644)
    assert mode(private_file(existing)) == 0o600 and existing.read_text() == "kept"


def test_a_secret_file_is_tightened_never_loosened(tmp_path: Path) -> None:
    """A key mounted read-only (a Kubernetes Secret, mode 0400) is read as it is:
    chmod on a read-only mount would fail, and 0600 would loosen it."""
    strict, loose = tmp_path / "strict.key", tmp_path / "loose.key"
    for path, perm in ((strict, 0o400), (loose, 0o644)):
        path.write_bytes(b"k" * 32)
        path.chmod(perm)
    assert secret_file(strict, lambda: b"new") == b"k" * 32 and mode(strict) == 0o400
    assert secret_file(loose, lambda: b"new") == b"k" * 32 and mode(loose) == 0o600
    assert secret_file(tmp_path / "made.key", lambda: b"new") == b"new"
    assert mode(tmp_path / "made.key") == 0o600


def test_server_start_tightens_the_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    shared = tmp_path / "shared-snapshots"
    shared.mkdir(mode=0o755)
    prepare_host_dirs(Settings(data_dir=data, snapshot_dir=shared))
    assert mode(data) == 0o700
    assert mode(data / "archives") == 0o700
    assert mode(shared) == 0o755  # existed: the operator's (or shared by servers)
    prepare_host_dirs(Settings(data_dir=tmp_path / "new", snapshot_dir=tmp_path / "new" / "s"))
    assert mode(tmp_path / "new") == mode(tmp_path / "new" / "s") == 0o700


def test_sqlite_files_are_0600(tmp_path: Path) -> None:
    db = tmp_path / "db" / "cove.db"
    engine = make_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (1)"))
        wal, shm = db.with_name("cove.db-wal"), db.with_name("cove.db-shm")
        assert wal.exists() and shm.exists()
        assert (mode(db.parent), mode(db), mode(wal), mode(shm)) == (0o700, 0o600, 0o600, 0o600)
    engine.dispose()
    db.chmod(0o644)  # an older server's database
    make_engine(f"sqlite:///{db}").dispose()
    assert mode(db) == 0o600


def test_preview_key_is_0600(tmp_path: Path) -> None:
    first = load_tokens(tmp_path)
    key = tmp_path / "preview.key"
    assert mode(key) == 0o600 and len(key.read_bytes()) == 32
    key.chmod(0o644)
    again = load_tokens(tmp_path)
    assert mode(key) == 0o600
    assert again.token("x") == first.token("x")  # the same secret, kept


def test_archives_are_private(tmp_path: Path) -> None:
    store = LocalArchiveStore(tmp_path / "archives")
    store.put("sb", io.BytesIO(b"data"), lambda: None)
    assert mode(tmp_path / "archives") == 0o700
    assert mode(store.path("sb")) == 0o600
