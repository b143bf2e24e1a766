"""Run the store tests on SQLite and on a real PostgreSQL the tests start."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from cove.store.migrate import upgrade
from cove.store.sql import make_engine
from tests.backing import postgres


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a Unix socket (installed by scripts/install)."""
    try:
        with postgres(port=54329) as url:
            yield url
    except RuntimeError as exc:
        pytest.fail(str(exc))


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
