"""Sessions (persistent shells) through the API and the real agent, in process."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from cove.agent import sessions as agent_sessions
from cove.agent import shell
from tests.unit.agent.conftest import AUTH


class Sessions:
    """A small client of the sessions API for one sandbox."""

    def __init__(self, client: TestClient, sandbox_id: str) -> None:
        self.client = client
        self.base = f"/toolbox/{sandbox_id}/process/session"

    def create(self, sid: str):
        return self.client.post(self.base, json={"sessionId": sid}, headers=AUTH)

    def exec(self, sid: str, command: str, **extra: object):
        return self.client.post(f"{self.base}/{sid}/exec", json={"command": command, **extra},
                                headers=AUTH)

    def run(self, sid: str, command: str) -> dict:
        r = self.exec(sid, command)
        assert r.status_code == 200, r.text
        return r.json()

    def start(self, sid: str, command: str, **extra: object) -> str:
        r = self.exec(sid, command, runAsync=True, **extra)
        assert r.status_code == 202, r.text
        return r.json()["cmdId"]

    def command(self, sid: str, cid: str):
        return self.client.get(f"{self.base}/{sid}/command/{cid}", headers=AUTH)

    def logs(self, sid: str, cid: str):
        return self.client.get(f"{self.base}/{sid}/command/{cid}/logs", headers=AUTH)

    def wait(self, sid: str, cid: str, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.command(sid, cid).json()["exitCode"]
            if code is not None:
                return code
            time.sleep(0.02)
        raise AssertionError(f"command {cid} still runs")

    def follow(self, sid: str, cid: str):
        return self.client.websocket_connect(
            f"{self.base}/{sid}/command/{cid}/logs?follow=true", headers=AUTH)

    def send(self, sid: str, cid: str, data: str):
        return self.client.post(f"{self.base}/{sid}/command/{cid}/input", json={"data": data},
                                headers=AUTH)


@pytest.fixture
def sessions(client: TestClient, sandbox_id: str) -> Iterator[Sessions]:
    api = Sessions(client, sandbox_id)
    yield api
    for s in client.get(api.base, headers=AUTH).json():
        client.delete(f"{api.base}/{s['sessionId']}", headers=AUTH)


def read_stream(ws) -> list[tuple[str, bytes]]:
    """Every frame of a log stream until the server closes it with 1000."""
    frames = []
    while True:
        message = ws.receive()
        if message["type"] == "websocket.close":
            assert message["code"] == 1000
            return frames
        data = message["bytes"]
        frames.append(("out" if data[:3] == b"\x01\x01\x01" else "err", data[3:]))


def test_create_list_get_delete(sessions: Sessions, client: TestClient) -> None:
    assert sessions.create("s1").status_code == 201
    assert sessions.create("s2").status_code == 201
    listed = client.get(sessions.base, headers=AUTH).json()
    assert sorted(s["sessionId"] for s in listed) == ["s1", "s2"]
    cid = sessions.run("s1", "true")["cmdId"]
    got = client.get(f"{sessions.base}/s1", headers=AUTH).json()
    assert got == {"sessionId": "s1", "commands": [{"id": cid, "command": "true", "exitCode": 0}]}
    assert client.delete(f"{sessions.base}/s1", headers=AUTH).status_code == 204
    r = client.get(f"{sessions.base}/s1", headers=AUTH)
    assert r.status_code == 404
    assert r.json()["code"] == "SESSION_NOT_FOUND" and r.json()["source"] == "DAYTONA_DAEMON"


def test_duplicate_session_is_409(sessions: Sessions) -> None:
    sessions.create("dup")
    r = sessions.create("dup")
    assert r.status_code == 409 and r.json()["source"] == "DAYTONA_DAEMON"


def test_state_carries_over(sessions: Sessions, tmp_path: Path) -> None:
    sessions.create("s")
    sessions.run("s", f"cd {tmp_path}")
    sessions.run("s", "export GREETING=hello; LOCAL=kept")
    r = sessions.run("s", "pwd; echo $GREETING $LOCAL; sh -c 'echo $GREETING'")
    assert r["stdout"] == f"{tmp_path}\nhello kept\nhello\n"


def test_sync_exec_result(sessions: Sessions) -> None:
    sessions.create("s")
    r = sessions.run("s", "echo out; echo err >&2; printf partial; exit_with() { return $1; }; "
                          "exit_with 3")
    assert r["exitCode"] == 3
    assert r["stdout"] == "out\npartial" and r["stderr"] == "err\n"
    assert r["output"].replace("err\n", "", 1) == r["stdout"]  # both, in arrival order


def test_exit_status_and_sandbox_env(sessions: Sessions) -> None:
    sessions.create("s")
    assert sessions.run("s", "false")["exitCode"] == 1
    r = sessions.run("s", "echo $?; echo $SANDBOX_VAR; echo \"it's\" 'quoted'")
    assert r["stdout"] == "1\nyes\nit's quoted\n"


def test_syntax_error_fails_the_command_not_the_session(sessions: Sessions) -> None:
    sessions.create("s")
    r = sessions.run("s", "echo 'unterminated")
    assert r["exitCode"] == 2 and r["stderr"]
    assert sessions.run("s", "echo fine")["stdout"] == "fine\n"


def test_multiline_command(sessions: Sessions) -> None:
    sessions.create("s")
    r = sessions.run("s", "for i in 1 2; do\n  echo line $i\ndone\ncat <<EOF\nheredoc\nEOF")
    assert r["stdout"] == "line 1\nline 2\nheredoc\n"


def test_nothing_leaks_into_user_processes(sessions: Sessions) -> None:
    sessions.create("s")
    r = sessions.run("s", "ls /proc/self/fd; env | sort")
    fds, _, env = r["stdout"].partition("\n3\n")
    assert fds.split() == ["0", "1", "2"]  # 3 is ls's own directory handle
    # (COVERAGE_* is the test run's own: coverage measures subprocesses)
    assert not re.search("COVE(?!RAGE)", env) and "\x1f" not in r["stdout"]


def test_async_command_then_status_and_logs(sessions: Sessions) -> None:
    sessions.create("s")
    cid = sessions.start("s", "echo first; sleep 0.5; echo second >&2; exit 4")
    running = sessions.command("s", cid).json()
    assert running["exitCode"] is None and running["command"].startswith("echo first")
    assert sessions.wait("s", cid) == 4
    assert sessions.logs("s", cid).json() == {
        "output": "first\nsecond\n", "stdout": "first\n", "stderr": "second\n"}


def test_deprecated_async_flag(sessions: Sessions) -> None:
    sessions.create("s")
    r = sessions.exec("s", "sleep 0.3", **{"async": True})
    assert r.status_code == 202
    assert sessions.command("s", r.json()["cmdId"]).json()["exitCode"] is None


def test_commands_queue_behind_a_running_one(sessions: Sessions) -> None:
    sessions.create("s")
    first = sessions.start("s", "sleep 0.5; echo one")
    second = sessions.start("s", "echo two")
    assert sessions.command("s", second).json()["exitCode"] is None
    r = sessions.run("s", "echo three")
    assert r["stdout"] == "three\n"
    assert sessions.logs("s", first).json()["stdout"] == "one\n"
    assert sessions.logs("s", second).json()["stdout"] == "two\n"


def test_follow_streams_live_then_closes_1000(sessions: Sessions) -> None:
    sessions.create("s")
    cid = sessions.start("s", "echo a; echo b >&2; for i in 1 2 3; do sleep 0.2; echo $i; done")
    arrivals = []
    with sessions.follow("s", cid) as ws:
        while True:
            message = ws.receive()
            if message["type"] == "websocket.close":
                assert message["code"] == 1000
                break
            arrivals.append((time.monotonic(), message["bytes"]))
    text = b"".join(b for _, b in arrivals)
    assert b"\x01\x01\x01a\n" in text and b"\x02\x02\x02b\n" in text
    assert text.replace(b"\x01\x01\x01", b"").endswith(b"1\n2\n3\n")
    spread = arrivals[-1][0] - arrivals[0][0]
    assert spread > 0.3, "output arrived in one batch, not live"


def test_follow_a_finished_command_replays_and_closes(sessions: Sessions) -> None:
    sessions.create("s")
    cid = sessions.run("s", "echo done; echo oops >&2")["cmdId"]
    with sessions.follow("s", cid) as ws:
        frames = read_stream(ws)
    assert sorted(frames) == [("err", b"oops\n"), ("out", b"done\n")]


def test_client_leaving_the_stream_does_not_stop_the_command(sessions: Sessions) -> None:
    sessions.create("s")
    cid = sessions.start("s", "echo start; sleep 0.5; echo end")
    with sessions.follow("s", cid) as ws:
        assert ws.receive()["bytes"] == b"\x01\x01\x01start\n"
    assert sessions.wait("s", cid) == 0
    assert sessions.logs("s", cid).json()["stdout"] == "start\nend\n"


def test_input_reaches_the_command(sessions: Sessions) -> None:
    sessions.create("s")
    cid = sessions.start("s", "read a; read b; echo got $a $b")
    assert sessions.send("s", cid, "one\n").status_code == 204
    assert sessions.send("s", cid, "two").status_code == 204  # a newline is added
    assert sessions.wait("s", cid) == 0
    assert sessions.logs("s", cid).json()["stdout"] == "one\ntwo\ngot one two\n"


def test_input_echo_can_be_suppressed(sessions: Sessions) -> None:
    sessions.create("s")
    cid = sessions.start("s", "read secret; echo ${#secret}", suppressInputEcho=True)
    sessions.send("s", cid, "hunter2")
    assert sessions.wait("s", cid) == 0
    assert sessions.logs("s", cid).json()["stdout"] == "7\n"


def test_unread_input_never_runs_as_a_command(sessions: Sessions, tmp_path: Path) -> None:
    sessions.create("s")
    cid = sessions.start("s", "sleep 0.3")
    sessions.send("s", cid, f"touch {tmp_path}/pwned")
    sessions.wait("s", cid)
    r = sessions.run("s", "read -t 0.2 line; echo rc=$?")
    assert r["stdout"] == "rc=1\n" or r["stdout"].startswith("rc=1")
    assert not (tmp_path / "pwned").exists()


def test_input_to_a_finished_command_is_410(sessions: Sessions) -> None:
    sessions.create("s")
    cid = sessions.run("s", "true")["cmdId"]
    r = sessions.send("s", cid, "late")
    assert r.status_code == 410 and r.json()["code"] == "COMMAND_ALREADY_COMPLETED"


def test_unknown_things_are_404(sessions: Sessions, client: TestClient) -> None:
    assert sessions.exec("nope", "true").json()["code"] == "SESSION_NOT_FOUND"
    sessions.create("s")
    for r in (sessions.command("s", "nope"), sessions.logs("s", "nope"),
              sessions.send("s", "nope", "x")):
        assert r.status_code == 404 and r.json()["code"] == "COMMAND_NOT_FOUND"
    assert client.delete(f"{sessions.base}/nope", headers=AUTH).status_code == 404
    with pytest.raises(WebSocketDenialResponse) as denied:
        with sessions.follow("s", "nope"):
            pass
    assert denied.value.status_code == 404
    assert denied.value.json()["code"] == "COMMAND_NOT_FOUND"


def test_exit_ends_the_session(sessions: Sessions) -> None:
    sessions.create("s")
    r = sessions.run("s", "exit 7")
    assert r["exitCode"] == 7
    r = sessions.exec("s", "true")
    assert r.status_code == 410 and r.json()["code"] == "SESSION_ENDED"


def test_delete_kills_running_commands(sessions: Sessions, client: TestClient,
                                       tmp_path: Path) -> None:
    sessions.create("s")
    pidfile = tmp_path / "pid"
    sessions.start("s", f"sleep 60 & echo $! > {pidfile}; wait")
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.02)
    pid = int(pidfile.read_text())
    assert client.delete(f"{sessions.base}/s", headers=AUTH).status_code == 204
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}") or " Z " in Path(f"/proc/{pid}/stat").read_text():
            break
        time.sleep(0.02)
    else:
        raise AssertionError("the session's background job survived its deletion")


def test_empty_command_is_400(sessions: Sessions) -> None:
    sessions.create("s")
    assert sessions.exec("s", "  ").status_code == 400


def test_command_that_merges_stderr_still_completes(sessions: Sessions) -> None:
    sessions.create("s")
    r = sessions.run("s", "exec 2>&1; echo merged >&2")
    assert r["exitCode"] == 0 and r["stdout"] == "merged\n"
    assert sessions.run("s", "echo next")["stdout"] == "next\n"


def test_logs_keep_the_newest_output_under_the_cap(sessions: Sessions,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_sessions, "LOG_CAP", 64 * 1024)
    sessions.create("s")
    r = sessions.run("s", "seq 1 100000")
    assert r["stdout"].endswith("\n99999\n100000\n")
    assert len(r["stdout"]) <= 64 * 1024 and not r["stdout"].startswith("1\n2\n")


def test_all_sessions_together_keep_their_logs_under_one_cap(
    sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_sessions, "LOGS_CAP", 100 * 1024)
    sessions.create("a")
    sessions.create("b")
    old = sessions.run("a", "head -c 60000 /dev/zero | tr '\\0' a")["cmdId"]
    kept = sessions.run("b", "head -c 60000 /dev/zero | tr '\\0' b")["cmdId"]
    sessions.run("a", "true")  # the next command trims: a's oldest output goes first
    assert sessions.logs("a", old).json()["output"] == ""
    assert sessions.logs("b", kept).json()["output"] == "b" * 60000


def test_splitter_finds_markers_split_anywhere() -> None:
    token = shell.new_token()
    stream = (b"out" + token + b"<\n" + b"a\x1fb" + token[:5] + b"x\n" + token + b">42\n" + b"tail")
    for size in (1, 2, 7, len(stream)):
        data, markers = bytearray(), []
        splitter = shell.Splitter(token, data.extend, markers.append)
        for at in range(0, len(stream), size):
            splitter.feed(stream[at : at + size])
        splitter.flush()
        assert bytes(data) == b"outa\x1fb" + token[:5] + b"x\ntail"
        assert markers == [b"<", b">42"]
