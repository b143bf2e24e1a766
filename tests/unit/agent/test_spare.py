"""Commands run by a spare process (``cove.agent.spare``) behave as freshly spawned ones.

Each test runs the same commands with spares off and on and compares what a user
sees: exit code, output (merged stdout and stderr), working directory, environment,
shell syntax, errors, timeouts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cove.agent import confine, protocol, relay, spare
from cove.runner.oci import initbin
from cove.runner.oci.agent_setup import wait_ready
from tests.unit.agent.conftest import AUTH, assert_dies, served


@pytest.fixture(scope="session", params=["musl", "glibc"])
def helper(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """cove-init, which runs spares (``cove-init --spare``), as each libc builds it."""
    if request.param == "musl":
        if initbin.compiler_for(musl=True) != "musl-gcc":
            pytest.skip("musl-gcc is not installed")
        return str(initbin.ensure_init_binary(tmp_path_factory.mktemp("init")))
    source = initbin.SOURCE
    return str(initbin.ensure_binary(tmp_path_factory.mktemp("init"), source, "cove-init"))


@pytest.fixture
def spares(helper: str) -> Iterator[None]:
    spare._current = None  # (never one made in an earlier test's loop, gone with it)
    spare.ENABLED, spare.HELPER = True, helper
    yield
    spare.ENABLED, spare.HELPER = False, None
    left = spare._current
    if left is not None:  # let it go in the agent's loop (another thread), and reaped
        left.exited._loop.call_soon_threadsafe(left.discard)
        for _ in range(500):
            if not left.alive:
                break
            time.sleep(0.01)


def _waiting_spare() -> spare.Spare | None:
    """The spare spawned after the last command (made once that command is answered)."""
    for _ in range(500):
        if spare._current is not None:
            return spare._current
        time.sleep(0.01)
    return None


def _exec(client: TestClient, sid: str, **body: object) -> tuple[int, dict]:
    r = client.post(f"/toolbox/{sid}/process/execute", json=body, headers=AUTH)
    return r.status_code, r.json()


COMMANDS = [
    {"command": "echo out; echo err >&2; exit 3"},
    {"command": "pwd; echo \"$FOO|$SANDBOX_VAR|$HOME\"", "envs": {"FOO": "a b 'c'"}},
    {"command": "for i in 1 2 3; do printf '%s,' $i; done; echo; [ -t 0 ] || echo no-tty"},
    {"command": "cat; echo stdin-closed"},
    {"command": "trap - PIPE; kill -0 $$ && echo alive; exit 300"},
    {"command": "sh -c 'kill -TERM $$'"},
    {"command": "ls /proc/self/fd | wc -l"},
    {"command": "ps -o sid= -p $$ | tr -d ' '; echo $$"},
    {"command": "true", "cwd": "/nonexistent-dir"},
    {"command": "echo $0 \"$@\"; exec /nonexistent-binary"},
]


def test_spare_commands_behave_as_fresh_ones(
    client: TestClient, sandbox_id: str, tmp_path: Path, spares: None
) -> None:
    del spares
    results = {}
    for enabled in (False, True):
        spare.ENABLED = enabled
        _exec(client, sandbox_id, command="true", cwd=str(tmp_path))  # (makes a spare)
        runs = []
        for body in COMMANDS:
            status, reply = _exec(client, sandbox_id, **{"cwd": str(tmp_path), **body})
            runs.append((status, _normalized(reply)))
            if enabled:
                assert _waiting_spare() is not None  # a spare waits for the next one
        results[enabled] = runs
    assert results[True] == results[False]
    statuses = [status for status, _ in results[True]]
    assert statuses == [200] * 8 + [400, 200]
    replies = [reply for _, reply in results[True]]
    assert replies[0] == {"exitCode": 3, "result": "out\nerr\n"}
    assert replies[1]["result"] == f"{tmp_path}\na b 'c'|yes|{os.path.expanduser('~')}\n"
    assert replies[5]["exitCode"] == 143  # killed by SIGTERM


def _normalized(reply: dict) -> dict:
    """Without what differs from one process to the next (pids, times) and from one
    sandbox to the next (an error's path)."""
    reply = {k: v for k, v in reply.items() if k not in ("timestamp", "path")}
    result = reply.get("result")
    if isinstance(result, str) and result.count("\n") == 2 and result.split("\n")[0].isdigit():
        sid, pid, _ = result.split("\n")
        return {**reply, "result": "own session" if sid == pid else "not own session"}
    return reply


def test_a_ping_readies_a_spare_for_the_first_command(
    client: TestClient, sandbox_id: str, agent_path: str, tmp_path: Path, spares: None
) -> None:
    """The readiness ping after a start, and a warm pool's keep-warm ping, leave a
    spare waiting: the first command after a create (or a claim) is run by it, not
    spawned afresh; a plain ping readies none."""
    assert spare._current is None
    _ping(agent_path)
    assert spare._current is None
    wait_ready(Path(agent_path), 10)  # the readiness ping
    ready = _waiting_spare()
    assert ready is not None
    status, reply = _exec(client, sandbox_id, command="echo $$", cwd=str(tmp_path))
    assert (status, reply["result"]) == (200, f"{ready.pid}\n")  # the spare became it
    _ping(agent_path, spare=True)  # a pool's keep-warm ping (one was refilled already)
    assert _waiting_spare() is not None


def _ping(agent_path: str, **fields: object) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(agent_path)
        sock.sendall(protocol.json_frame({"op": "ping", **fields}))
        buffer = b""
        while True:
            buffer += sock.recv(65536)
            while len(buffer) >= protocol.HEADER.size:
                kind, _stream, size = protocol.HEADER.unpack_from(buffer)
                if kind == protocol.JSON:
                    return
                buffer = buffer[protocol.HEADER.size + size:]


def test_code_run_by_a_spare(client: TestClient, sandbox_id: str, spares: None) -> None:
    del spares
    for _ in range(3):
        r = client.post(f"/toolbox/{sandbox_id}/process/code-run",
                        json={"code": "import sys; print(sys.argv[1:]); raise SystemExit(2)",
                              "argv": ["a", "b"]}, headers=AUTH)  # fmt: skip
        assert (r.json()["exitCode"], r.json()["result"]) == (2, "['a', 'b']\n")


def test_a_missing_interpreter_fails_alike_with_a_spare(
    client: TestClient, sandbox_id: str, spares: None
) -> None:
    """The spare looks the program up on the command's PATH as a spawn does: not found
    there, the same answer as without spares."""
    del spares
    body = {"code": "1", "language": "python", "envs": {"PATH": "/nonexistent"}}
    answers = []
    for enabled in (False, True, True):  # (the second with spares: run by a spare)
        spare.ENABLED = enabled
        r = client.post(f"/toolbox/{sandbox_id}/process/code-run", json=body, headers=AUTH)
        answers.append((r.status_code, {**r.json(), "timestamp": None}))
    assert answers[0] == answers[1] == answers[2], answers


def test_a_spare_command_that_times_out_is_killed_with_its_tree(
    client: TestClient, sandbox_id: str, tmp_path: Path, spares: None
) -> None:
    del spares
    _exec(client, sandbox_id, command="true")
    assert _waiting_spare() is not None
    pidfile = tmp_path / "child.pid"
    status, reply = _exec(client, sandbox_id, timeout=1, cwd=str(tmp_path),
                          command=f"setsid sleep 60 & echo $! > {pidfile}; sleep 60")
    assert status == 408 and reply["code"] == "PROCESS_EXECUTION_TIMEOUT"
    assert_dies(int(pidfile.read_text()))  # (the escaped grandchild)


def test_a_dead_spare_is_replaced(client: TestClient, sandbox_id: str, spares: None) -> None:
    del spares
    _exec(client, sandbox_id, command="true")
    first = _waiting_spare()
    assert first is not None
    os.kill(first.pid, 9)
    for _ in range(100):
        if not first.alive:
            break
        time.sleep(0.02)
    assert _exec(client, sandbox_id, command="echo hi") == (200, {"exitCode": 0,
                                                                  "result": "hi\n"})
    assert _waiting_spare() not in (None, first)


def test_an_unused_spare_goes_away(
    client: TestClient, sandbox_id: str, spares: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    del spares
    monkeypatch.setattr(spare, "IDLE_SECONDS", 0.2)
    _exec(client, sandbox_id, command="true")
    idle = _waiting_spare()
    assert idle is not None
    for _ in range(200):
        if not idle.alive:
            break
        time.sleep(0.02)
    assert not idle.alive and spare._current is None
    assert not Path(f"/proc/{idle.pid}").exists()  # reaped, not a zombie


def test_a_command_that_cannot_start_fails_as_a_fresh_one_does(
    client: TestClient, sandbox_id: str, spares: None
) -> None:
    del spares
    body = {"code": "1", "language": "typescript"}  # tsx is not on the host's PATH
    replies = {}
    for enabled in (False, True):
        spare.ENABLED = enabled
        _exec(client, sandbox_id, command="true")
        if enabled:
            assert _waiting_spare() is not None
        r = client.post(f"/toolbox/{sandbox_id}/process/code-run", json=body, headers=AUTH)
        replies[enabled] = (r.status_code, r.json()["message"])
    assert replies[True] == replies[False]
    assert replies[True][0] == 502 and "FileNotFoundError" in replies[True][1]


@pytest.fixture
def relays(spares: None) -> Iterator[None]:
    """Spares, and a cgroup root for commands' cgroups (a relay makes one per command,
    as the agent does in a sandbox): cgroup v2 here, so a relay kills with cgroup.kill."""
    del spares
    root = Path("/sys/fs/cgroup/unified")
    if not (root / "cgroup.procs").exists():
        root = Path("/sys/fs/cgroup")
    if not (root / "cgroup.kill").exists() and not (root / "cgroup.procs").exists():
        pytest.skip("no cgroup v2 hierarchy")
    path = root / f"cove-test-relays-{os.getpid()}"
    path.mkdir()
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    before = confine.CURRENT
    mode = "kill" if (path / "cgroup.kill").exists() else "loop"
    confine.CURRENT = dataclasses.replace(before, kill_root=fd, kill_mode=mode)
    try:
        yield
    finally:
        confine.CURRENT = before
        os.close(fd)
        deadline = time.monotonic() + 10
        while path.exists():  # (relays and spares exit once their connections close)
            for group in sorted(path.glob("**/"), key=lambda p: -len(p.parts)):
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
                with contextlib.suppress(OSError):
                    group.rmdir()
            assert time.monotonic() < deadline, f"{path} stays"
            time.sleep(0.02)


def _relayed(client: TestClient, sandbox_id: str) -> None:
    """Wait until the sandbox's next command runs by a relay (cove.agent.relay)."""
    deadline = time.monotonic() + 20
    while True:
        _status, reply = _exec(client, sandbox_id, command="tr '\\0' ' ' < /proc/$PPID/cmdline")
        if "--relay" in reply["result"]:
            return
        assert time.monotonic() < deadline, reply
        time.sleep(0.02)


def test_relay_commands_behave_as_the_agents(
    tmp_path: Path, agent_path: str, relays: None
) -> None:
    """The same commands, through the agent (relays off) and by a relay: the same
    answers (exit code, output, errors, directory, environment, session)."""
    del relays
    results: dict[bool, list[tuple[int, dict]]] = {}
    for on in (False, True):
        with served(tmp_path / str(on), agent_path, relays=on) as client:
            r = client.post("/api/sandbox", headers=AUTH, json={
                "user": getpass.getuser(), "env": {"SANDBOX_VAR": "yes"}, "volumes": []})
            sandbox_id = r.json()["id"]
            runs = []
            for body in COMMANDS:
                if on:
                    _relayed(client, sandbox_id)
                status, reply = _exec(client, sandbox_id, **{"cwd": str(tmp_path), **body})
                runs.append((status, _normalized(reply)))
            results[on] = runs
    assert results[True] == results[False]
    assert [status for status, _ in results[True]] == [200] * 8 + [400, 200]


def test_a_relay_command_counts_against_the_request_cap(
    tmp_path: Path, agent_path: str, relays: None
) -> None:
    """A command a relay runs is a request under way of its sandbox (and organization):
    past the cap, the next one is a 429 as through the agent."""
    del relays
    with served(tmp_path, agent_path, max_sandbox_requests=1) as client:
        r = client.post("/api/sandbox", headers=AUTH,
                        json={"user": getpass.getuser(), "volumes": []})
        sandbox_id = r.json()["id"]
        _relayed(client, sandbox_id)
        go, started = tmp_path / "go", tmp_path / "started"
        held: list[tuple[int, dict]] = []
        command = (f"tr '\\0' ' ' < /proc/$PPID/cmdline > {started}; "
                   f"while [ ! -e {go} ]; do sleep 0.02; done")
        thread = threading.Thread(target=lambda: held.append(_exec(client, sandbox_id,
                                                                   command=command)))
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while not started.exists() or not started.read_text():
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert "--relay" in started.read_text()  # (the held command is the relay's)
            status, body = _exec(client, sandbox_id, command="true")
            assert (status, body["code"]) == (429, "TOO_MANY_REQUESTS")
        finally:
            go.touch()
            thread.join(30)
        assert held[0][0] == 200
        assert _exec(client, sandbox_id, command="echo again")[1]["result"] == "again\n"


def test_a_relay_command_that_times_out_is_killed_with_its_tree(
    client: TestClient, sandbox_id: str, tmp_path: Path, relays: None
) -> None:
    del relays
    _relayed(client, sandbox_id)
    pidfile = tmp_path / "child.pid"
    status, reply = _exec(client, sandbox_id, timeout=1, cwd=str(tmp_path),
                          command=f"setsid sleep 60 & echo $! > {pidfile}; sleep 60")
    assert status == 408 and reply["code"] == "PROCESS_EXECUTION_TIMEOUT"
    assert_dies(int(pidfile.read_text()))  # (the escaped grandchild)
    _relayed(client, sandbox_id)  # the relay runs the next command


def test_a_relay_whose_waiting_spare_died_makes_another(
    client: TestClient, sandbox_id: str, relays: None
) -> None:
    """The spare a relay started ahead for the next command is gone (killed): the relay
    starts another for that command, which runs as any other."""
    del relays
    _relayed(client, sandbox_id)
    (pid,) = relay.pids()
    children = Path(f"/proc/{pid}/task/{pid}/children")
    deadline = time.monotonic() + 10
    while not children.read_text().split():  # (started once the last command was answered)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (waiting,) = children.read_text().split()
    os.kill(int(waiting), signal.SIGKILL)
    time.sleep(0.05)
    status, reply = _exec(client, sandbox_id, command="echo $$; tr '\\0' ' ' < /proc/$PPID/cmdline")
    assert status == 200, reply
    ran, parent = reply["result"].split("\n", 1)
    assert ran != waiting and "--relay" in parent  # another spare, the same relay
    assert relay.pids() == {pid}


def test_a_large_environment_reaches_commands_by_either_way(
    tmp_path: Path, agent_path: str, relays: None
) -> None:
    """An environment larger than a pipe takes at once: a relay gets all of its setup
    or none (then the agent runs the commands); either way each command sees it whole."""
    del relays
    with served(tmp_path, agent_path) as client:
        r = client.post("/api/sandbox", headers=AUTH, json={
            "user": getpass.getuser(), "volumes": [],
            "env": {f"BIG{i}": "x" * 30_000 for i in range(3)}})
        sandbox_id = r.json()["id"]
        for _ in range(5):
            status, reply = _exec(client, sandbox_id, command="echo ${#BIG0}${#BIG2}")
            assert (status, reply["result"]) == (200, "3000030000\n"), reply
            time.sleep(0.05)
