"""Run the store tests on SQLite and on a real PostgreSQL the tests start."""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cove.store.migrate import upgrade
from cove.store.sql import make_engine


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a Unix socket (installed by scripts/install)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed: run scripts/install")
    root = Path(tempfile.mkdtemp(prefix="cove-pg-"))
    shutil.chown(root, "postgres", "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, bindir / "initdb", "-D", root / "data", "-A", "trust", "-U",
                    "postgres"], check=True, capture_output=True)
    subprocess.run([*as_pg, bindir / "pg_ctl", "-D", root / "data", "-w", "-l", root / "log",
                    "-o", f"-k {root} -c listen_addresses='' -p 54329", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg://postgres@/postgres?host={root}&port=54329"
    finally:
        subprocess.run([*as_pg, bindir / "pg_ctl", "-D", root / "data", "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        engine = make_engine(request.getfixturevalue("postgres_url"))
        from cove.store.models import Base

        with engine.begin() as conn:
            Base.metadata.drop_all(conn)
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
    upgrade(engine)
    yield engine
    engine.dispose()
