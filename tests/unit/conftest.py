"""Fixtures for fast in-process tests: fake runtime, in-memory SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from cove.core.config import Settings
from cove.core.lifecycle import LifecycleService
from cove.core.sandbox import Sandbox, SandboxState
from cove.runner.fake import FakeRuntime
from cove.runner.local import LocalRunner
from cove.store.keys import SqlKeyStore
from cove.store.migrate import upgrade
from cove.store.sql import SqlSandboxStore, make_engine


class RecordingEvents:
    """An EventSink that remembers what it was told."""

    def __init__(self) -> None:
        self.created: list[str] = []
        self.transitions: list[tuple[str, str, str]] = []

    async def sandbox_created(self, sandbox: Sandbox) -> None:
        self.created.append(sandbox.id)

    async def sandbox_state_updated(self, sandbox: Sandbox, old_state: SandboxState) -> None:
        self.transitions.append((sandbox.id, str(old_state), str(sandbox.state)))

    def states_of(self, sandbox_id: str) -> list[str]:
        return [new for sid, _, new in self.transitions if sid == sandbox_id]


@pytest.fixture(autouse=True)
def _no_ssh_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process servers listen for SSH only where a test asks (COVE_SSH_PORT)."""
    monkeypatch.setenv("COVE_SSH_PORT", "0")
    monkeypatch.setenv("COVE_POOL_SIZE", "0")  # no warm pool unless a test asks for one


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, runtime="fake", api_key="test-key")


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'unit.db'}")
    upgrade(engine)
    return engine


@pytest.fixture
def store(engine: Engine) -> SqlSandboxStore:
    return SqlSandboxStore(engine)


@pytest.fixture
def org(engine: Engine) -> str:
    return SqlKeyStore(engine).ensure_organization("default")


@pytest.fixture
def events() -> RecordingEvents:
    return RecordingEvents()


@pytest.fixture
def lifecycle(
    settings: Settings, store: SqlSandboxStore, runtime: FakeRuntime, events: RecordingEvents
) -> LifecycleService:
    return LifecycleService(
        settings=settings, store=store, runner=LocalRunner(runtime), events=events
    )
