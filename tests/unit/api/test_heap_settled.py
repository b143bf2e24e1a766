"""The server's start-up objects are kept out of the garbage collector's passes
while it runs."""

from __future__ import annotations

import gc
from pathlib import Path

from starlette.testclient import TestClient

from cove.api.app import create_app
from cove.core.config import Settings
from cove.runner.fake import FakeRuntime
from tests.unit.api.conftest import AUTH


def test_a_started_server_has_frozen_what_its_start_built(client: TestClient) -> None:
    # (the client fixture ran the lifespan: the server is up)
    frozen = gc.get_freeze_count()
    assert frozen > 1000  # the modules, routes and schemas of the start
    # requests still run, and what they leave is collected as usual
    assert client.get("/api/sandbox", headers=AUTH).status_code == 200
    garbage: list[object] = []
    garbage.append(garbage)
    del garbage
    assert gc.collect() >= 1


def test_a_stopped_server_gives_its_objects_back(tmp_path: Path, runtime: FakeRuntime) -> None:
    settings = Settings(data_dir=tmp_path, runtime="fake", api_key="test-key", port=3999)
    with TestClient(create_app(settings, runtime=runtime)):
        assert gc.get_freeze_count() > 1000
    assert gc.get_freeze_count() == 0
