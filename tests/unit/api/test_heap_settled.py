"""The server's start-up objects are kept out of the garbage collector's passes."""

from __future__ import annotations

import gc

from starlette.testclient import TestClient

from tests.unit.api.conftest import AUTH


def test_a_started_server_has_frozen_what_its_start_built(client: TestClient) -> None:
    # (the client fixture ran the lifespan: the server is up)
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 1000  # the modules, routes and schemas of the start
        # requests still run, and what they leave is collected as usual
        assert client.get("/api/sandbox", headers=AUTH).status_code == 200
        garbage: list[object] = []
        garbage.append(garbage)
        del garbage
        assert gc.collect() >= 1
    finally:
        gc.unfreeze()
