"""``cove snapshot`` and ``cove volume``, and ``cove sandbox logs`` of an entrypoint."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from cove.core.ports import ImageConfig
from cove.runner.fake import FakeRuntime
from tests.unit.cli.conftest import KEY, Cove

AUTH = {"Authorization": f"Bearer {KEY}"}


def test_snapshot_list_info_delete(cove: Cove) -> None:
    listed = cove.json("snapshot", "list")
    assert "cove-default" in [s["name"] for s in listed]
    assert "cove-default" in cove.ok("snapshot", "list").stdout
    assert cove.json("snapshot", "info", "cove-default")["state"] == "active"
    missing = cove("snapshot", "info", "nope")
    assert missing.exit_code == 1 and "not found" in missing.stderr.lower()
    refused = cove("snapshot", "delete", "cove-default")  # the server's general snapshot
    assert refused.exit_code == 1 and refused.stderr.startswith("Error: ")
    assert "cove-default" in [s["name"] for s in cove.json("snapshot", "list")]


def test_volume_create_list_delete_by_name(cove: Cove, other_key: str) -> None:
    volume_id = cove.ok("volume", "create", "data").stdout.strip()
    listed = cove.json("volume", "list")
    assert [(v["id"], v["name"]) for v in listed] == [(volume_id, "data")]
    assert "data" in cove.ok("volume", "list").stdout
    assert cove("volume", "delete", "data", key=other_key).exit_code == 1  # not theirs
    assert cove.ok("volume", "delete", "data").stdout.strip() == "data"
    assert cove.json("volume", "list") == []
    assert cove("volume", "create", "bad/name").exit_code == 1


IMAGE = "docker.io/library/app:1"
ENTRYPOINT = ImageConfig(entrypoint=("sh", "-c", "echo hello; echo oops >&2; sleep 0.5; echo bye"))


@pytest.fixture
def entrypoint_snapshot(app: TestClient, runtime: FakeRuntime) -> Iterator[str]:
    """A snapshot ``app`` whose image has an entrypoint. The in-process agent serves
    every sandbox and keeps sessions between tests: its entrypoint session goes after."""
    runtime.registry[IMAGE] = ("sha256:" + "1" * 64, ENTRYPOINT, None)
    r = app.post("/api/snapshots", json={"name": "app", "imageName": IMAGE}, headers=AUTH)
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 10
    while app.get("/api/snapshots/app", headers=AUTH).json()["state"] != "active":
        assert time.monotonic() < deadline, "the snapshot was not pulled"
        time.sleep(0.05)
    yield "app"
    for sandbox in app.get("/api/sandbox", headers=AUTH).json()["items"]:
        app.delete(f"/toolbox/{sandbox['id']}/process/session/entrypoint", headers=AUTH)


def test_logs_follow_streams_the_entrypoint_until_it_ends(cove: Cove,
                                                         entrypoint_snapshot: str) -> None:
    sandbox_id = cove.ok("sandbox", "create", "--snapshot", entrypoint_snapshot).stdout.strip()
    followed = cove.ok("sandbox", "logs", "--follow", sandbox_id)
    assert (followed.stdout, followed.stderr) == ("hello\nbye\n", "oops\n")
    done = cove.ok("sandbox", "logs", sandbox_id)
    assert (done.stdout, done.stderr) == ("hello\nbye\n", "oops\n")
    chunks = [json.loads(line) for line in
              cove.ok("sandbox", "logs", "-f", "--json", sandbox_id).stdout.splitlines()]
    assert "".join(c["data"] for c in chunks if c["stream"] == "stderr") == "oops\n"
