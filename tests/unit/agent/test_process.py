"""process/execute, code-run and info through the API and the real agent."""

from __future__ import annotations

import os
import time
from pathlib import Path

from starlette.testclient import TestClient

from tests.unit.agent.conftest import AUTH, assert_dies


def _exec(client: TestClient, sid: str, **body: object):
    return client.post(f"/toolbox/{sid}/process/execute", json=body, headers=AUTH)


def test_execute_returns_exit_code_and_combined_output(
    client: TestClient, sandbox_id: str, tmp_path: Path
) -> None:
    r = _exec(client, sandbox_id, command="echo out; echo err >&2; exit 3", cwd=str(tmp_path))
    assert r.status_code == 200
    assert r.json() == {"exitCode": 3, "result": "out\nerr\n"}


def test_execute_sees_cwd_and_env(client: TestClient, sandbox_id: str, tmp_path: Path) -> None:
    r = _exec(client, sandbox_id, command="pwd; echo $FOO $SANDBOX_VAR", cwd=str(tmp_path),
              envs={"FOO": "bar"})
    assert r.json()["result"] == f"{tmp_path}\nbar yes\n"


def test_timeout_is_408_and_kills_the_whole_tree(
    client: TestClient, sandbox_id: str, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    r = _exec(client, sandbox_id, timeout=1, cwd=str(tmp_path),
              command=f"setsid sleep 60 & echo $! > {pidfile}; sleep 60")
    assert time.monotonic() - started < 30  # answered when the timeout fired
    assert r.status_code == 408
    body = r.json()
    assert body["code"] == "PROCESS_EXECUTION_TIMEOUT" and body["source"] == "DAYTONA_DAEMON"
    assert_dies(int(pidfile.read_text()))  # (the escaped grandchild)


def test_code_run_python(client: TestClient, sandbox_id: str) -> None:
    r = client.post(f"/toolbox/{sandbox_id}/process/code-run",
                    json={"code": "import sys; print(sys.argv[1:]); raise SystemExit(2)",
                          "argv": ["a", "b"]}, headers=AUTH)
    assert r.json()["exitCode"] == 2 and r.json()["result"] == "['a', 'b']\n"


def test_info_endpoints(client: TestClient, sandbox_id: str) -> None:
    home = client.get(f"/toolbox/{sandbox_id}/user-home-dir", headers=AUTH).json()["dir"]
    assert home == os.path.expanduser("~")
    env = client.get(f"/toolbox/{sandbox_id}/env", headers=AUTH).json()
    assert env["SANDBOX_VAR"] == "yes" and env["HOME"] == home


def test_stopped_sandbox_fails_at_once(client: TestClient, sandbox_id: str) -> None:
    client.post(f"/api/sandbox/{sandbox_id}/stop", headers=AUTH)
    started = time.monotonic()
    r = _exec(client, sandbox_id, command="true")
    assert r.status_code == 400 and "start it" in r.json()["message"]
    assert time.monotonic() - started < 5


def test_unknown_sandbox_is_404(client: TestClient) -> None:
    assert _exec(client, "nope", command="true").status_code == 404
