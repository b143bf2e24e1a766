"""The toolbox's fast path keeps its guarantees: a call uses the sandbox record it
read last time, yet sees every change of state, environment and ownership at once;
activity is written in batches, yet reaches the database and survives a restart.
"""

from __future__ import annotations

import getpass
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from cove.api.app import create_app
from cove.cli.main import main
from cove.core.config import Settings
from cove.core.ops import SandboxOps
from cove.core.ports import Resources
from cove.core.sandbox import Sandbox, SandboxState
from cove.core.toolbox import RecordCache, ToolboxService
from cove.errors import InvalidState
from cove.runner.fake import FakeRuntime
from cove.runner.local import LocalRunner
from cove.server import open_database
from cove.store.keys import SqlKeyStore
from cove.store.sql import SqlSandboxStore
from tests.unit.agent.conftest import AUTH
from tests.unit.conftest import RecordingEvents


def _exec(client: TestClient, sid: str, command: str = "echo $SANDBOX_VAR",
          auth: dict[str, str] = AUTH):  # fmt: skip
    return client.post(f"/toolbox/{sid}/process/execute", json={"command": command},
                       headers=auth)  # fmt: skip


def test_a_stop_is_seen_by_the_next_call(client: TestClient, sandbox_id: str) -> None:
    assert _exec(client, sandbox_id).json() == {"exitCode": 0, "result": "yes\n"}
    assert client.post(f"/api/sandbox/{sandbox_id}/stop", headers=AUTH).status_code == 200
    r = _exec(client, sandbox_id)
    assert r.status_code == 400 and "start it" in r.json()["message"]
    assert client.post(f"/api/sandbox/{sandbox_id}/start", headers=AUTH).status_code == 200
    assert _exec(client, sandbox_id).json() == {"exitCode": 0, "result": "yes\n"}


def test_a_delete_is_seen_by_the_next_call(client: TestClient, sandbox_id: str) -> None:
    assert _exec(client, sandbox_id).status_code == 200
    assert client.delete(f"/api/sandbox/{sandbox_id}", headers=AUTH).status_code == 200
    assert _exec(client, sandbox_id).status_code == 404


def test_an_env_update_is_seen_by_the_next_call(client: TestClient, sandbox_id: str) -> None:
    assert _exec(client, sandbox_id).json()["result"] == "yes\n"
    r = client.post(f"/toolbox/{sandbox_id}/env", json={"set": {"SANDBOX_VAR": "changed"}},
                    headers=AUTH)  # fmt: skip
    assert r.status_code == 200
    assert _exec(client, sandbox_id).json()["result"] == "changed\n"


def test_another_organization_never_gets_the_remembered_record(
    client: TestClient, sandbox_id: str, tmp_path: Path
) -> None:
    assert _exec(client, sandbox_id).status_code == 200  # remembered for this organization
    key = CliRunner().invoke(main, ["keys", "create", "--org", "other", "--data-dir",
                                    str(tmp_path / "data")]).output.strip()  # fmt: skip
    other = {"Authorization": f"Bearer {key}"}
    assert _exec(client, sandbox_id, auth=other).status_code == 404
    name = client.get(f"/api/sandbox/{sandbox_id}", headers=AUTH).json()["name"]
    assert _exec(client, name, auth=other).status_code == 404


def test_activity_reaches_the_database_and_survives_a_restart(
    tmp_path: Path, agent_path: str
) -> None:
    settings = Settings(data_dir=tmp_path / "data", runtime="fake", api_key="test-key")
    with TestClient(create_app(settings, runtime=FakeRuntime(agent_path=agent_path))) as c:
        body = {"user": getpass.getuser(), "env": {"SANDBOX_VAR": "yes"}, "volumes": []}
        sid = c.post("/api/sandbox", json=body, headers=AUTH).json()["id"]
        before = _stamp(c, sid)
        assert _exec(c, sid).status_code == 200
    # the server stopped: what it noted was written
    after = SqlSandboxStore(open_database(settings)).get_by_id(sid).last_activity_at
    assert after > before
    with TestClient(create_app(settings, runtime=FakeRuntime(agent_path=agent_path))) as c:
        assert _stamp(c, sid) == after.replace(microsecond=after.microsecond // 1000 * 1000)


def _stamp(client: TestClient, sid: str) -> datetime:
    iso = client.get(f"/api/sandbox/{sid}", headers=AUTH).json()["lastActivityAt"]
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_change_made_by_another_process_is_seen_within_a_second(
    tmp_path: Path, agent_path: str
) -> None:
    del agent_path
    settings = Settings(data_dir=tmp_path / "data", runtime="fake")
    engine = open_database(settings)
    ours, theirs = SqlSandboxStore(engine), SqlSandboxStore(engine)
    org = SqlKeyStore(engine).ensure_organization("acme")
    theirs.add(Sandbox(id="s1", organization_id=org, name="one", snapshot="x", user="u",
                       resources=Resources(cpu=1, memory=1, disk=1)))  # fmt: skip
    clock = Clock()
    records = RecordCache(ours, clock)
    assert records.get(org, "s1").user == "u"
    changed = theirs.get_by_id("s1")
    changed.user = "v"
    theirs.save(changed)
    clock.now += 0.5
    assert records.get(org, "one").user == "v"  # by name: not read before
    assert records.get(org, "s1").user == "u"  # remembered a while...
    clock.now += 0.6
    assert records.get(org, "s1").user == "v"  # ...at most a second
    ours.save(changed)
    changed.user = "w"
    theirs.save(changed)
    ours_changed = ours.get_by_id("s1")
    ours.save(ours_changed)  # a change through our own store: seen at once
    assert records.get(org, "s1").user == "w"


def test_a_sandbox_started_through_another_replica_is_never_refused_from_the_cache(
    tmp_path: Path, agent_path: str
) -> None:
    del agent_path
    settings = Settings(data_dir=tmp_path / "data", runtime="fake")
    engine = open_database(settings)
    ours, theirs = SqlSandboxStore(engine), SqlSandboxStore(engine)
    org = SqlKeyStore(engine).ensure_organization("acme")
    theirs.add(Sandbox(id="s1", organization_id=org, name="one", snapshot="x", user="u",
                       state=SandboxState.STOPPED,
                       resources=Resources(cpu=1, memory=1, disk=1)))  # fmt: skip
    toolbox = ToolboxService(SandboxOps(store=ours, runner=LocalRunner(FakeRuntime()),
                                        events=RecordingEvents()))  # fmt: skip
    with pytest.raises(InvalidState):
        toolbox.sandbox(org, "s1")  # stopped: refused (and its record cached)
    started = theirs.get_by_id("s1")
    started.state = SandboxState.STARTED
    theirs.save(started)  # another replica started it: our cache has not seen it
    assert toolbox.sandbox(org, "s1").state is SandboxState.STARTED


def test_a_deleted_secret_leaves_the_next_call(client: TestClient, agent_path: str) -> None:
    del agent_path
    secret = client.post("/api/secret", json={"name": "tok", "value": "s3cret"},
                         headers=AUTH).json()  # fmt: skip
    body = {"user": getpass.getuser(), "env": {}, "volumes": [], "secrets": [{"TOKEN": "tok"}]}
    sid = client.post("/api/sandbox", json=body, headers=AUTH).json()["id"]
    placeholder = _exec(client, sid, "echo $TOKEN").json()["result"].strip()
    assert placeholder.startswith("cove-secret-")
    assert client.delete(f"/api/secret/{secret['id']}", headers=AUTH).status_code == 204
    assert _exec(client, sid, "echo \"[$TOKEN]\"").json()["result"] == "[]\n"


def test_a_created_sandboxs_first_call_reads_no_record(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create hands the toolbox the record it stored: the new sandbox's first call
    finds it in memory (as a warm pool's claim does)."""
    body = {"user": getpass.getuser(), "env": {"SANDBOX_VAR": "yes"}, "volumes": []}
    sid = client.post("/api/sandbox", json=body, headers=AUTH).json()["id"]
    reads: list[str] = []
    real_get = SqlSandboxStore.get

    def get(self: SqlSandboxStore, organization_id: str, key: str) -> Sandbox:
        reads.append(key)
        return real_get(self, organization_id, key)

    monkeypatch.setattr(SqlSandboxStore, "get", get)
    assert _exec(client, sid).json() == {"exitCode": 0, "result": "yes\n"}
    assert reads == []
