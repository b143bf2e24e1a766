"""Sessions and terminals on real sandboxes, through the official SDK (sync and async)."""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from daytona import (
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaNotFoundError,
    SessionExecuteRequest,
)
from daytona.common.errors import DaytonaConflictError, DaytonaError
from daytona.common.pty import PtySize

from tests.e2e.conftest import KEY, Server, run_ok

pytestmark = pytest.mark.e2e


@pytest.fixture
def sb(daytona: Daytona, sandboxes: list):
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(env_vars={"X": "1"}))
    sandboxes.append(sandbox)
    return sandbox


def run(sb, sid: str, command: str):
    return sb.process.execute_session_command(sid, SessionExecuteRequest(command=command))


def start(sb, sid: str, command: str, **extra: object) -> str:
    req = SessionExecuteRequest(command=command, run_async=True, **extra)
    return sb.process.execute_session_command(sid, req).cmd_id


def wait_exit(sb, sid: str, cid: str, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code = sb.process.get_session_command(sid, cid).exit_code
        if code is not None:
            return code
        time.sleep(0.05)
    raise AssertionError(f"command {cid} still runs after {timeout}s")


def stream(sb, sid: str, cid: str) -> list[tuple[float, str, str]]:
    """Follow a command's logs: (arrival time, stream, chunk) for every callback."""
    chunks: list[tuple[float, str, str]] = []
    asyncio.run(sb.process.get_session_command_logs_async(
        sid, cid, lambda c: chunks.append((time.monotonic(), "out", c)),
        lambda c: chunks.append((time.monotonic(), "err", c))))
    return chunks


def test_session_crud_and_state(sb) -> None:
    sb.process.create_session("s1")
    sb.process.create_session("s2")
    with pytest.raises(DaytonaConflictError):
        sb.process.create_session("s1")
    assert {s.session_id for s in sb.process.list_sessions()} == {"s1", "s2"}
    run(sb, "s1", "mkdir -p /tmp/work && cd /tmp/work")
    run(sb, "s1", "export GREETING=hello")
    r = run(sb, "s1", "pwd; echo $GREETING $X; whoami; echo oops >&2; exit_code() { return 3; }; "
                      "exit_code")
    assert r.exit_code == 3
    assert r.stdout == "/tmp/work\nhello 1\ndaytona\n" and r.stderr == "oops\n"
    assert sorted(r.output.splitlines()) == sorted(["/tmp/work", "hello 1", "daytona", "oops"])
    session = sb.process.get_session("s1")
    assert [c.exit_code for c in session.commands] == [0, 0, 3]
    assert session.commands[1].command == "export GREETING=hello"
    sb.process.delete_session("s1")
    with pytest.raises(DaytonaNotFoundError):
        sb.process.get_session("s1")
    assert [s.session_id for s in sb.process.list_sessions()] == ["s2"]


def test_nothing_of_the_agent_leaks_into_commands(sb) -> None:
    sb.process.create_session("s")
    r = run(sb, "s", "ls /proc/self/fd | tr '\\n' ' '; env | grep -ci -e cove -e python || true; "
                     "echo via-dev > /dev/stderr")
    assert r.stdout == "0 1 2 3 0\n"  # 3 is ls's own handle on the directory
    assert r.stderr == "via-dev\n"  # the pipes are the user's: /dev/std* can be opened


def test_async_command_status_and_logs(sb) -> None:
    sb.process.create_session("s")
    cid = start(sb, "s", "echo first; sleep 1; echo second >&2; exit 5")
    command = sb.process.get_session_command("s", cid)
    assert command.exit_code is None and command.command.startswith("echo first")
    assert wait_exit(sb, "s", cid) == 5
    logs = sb.process.get_session_command_logs("s", cid)
    assert (logs.stdout, logs.stderr, logs.output) == ("first\n", "second\n", "first\nsecond\n")


def test_log_stream_is_live(sb) -> None:
    sb.process.create_session("s")
    cid = start(sb, "s", "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.5; done; echo bye >&2")
    chunks = stream(sb, "s", cid)
    assert "".join(c for _, s, c in chunks if s == "out") == "".join(
        f"line {i}\n" for i in range(1, 7))
    assert [c for _, s, c in chunks if s == "err"] == ["bye\n"]
    times = [t for t, s, _ in chunks if s == "out"]
    assert len(times) >= 4, "the lines arrived in one batch"
    # Printed over 2.5 s: a batch at the end (or a late attach) would span far less.
    assert times[-1] - times[0] > 1.5, "the lines did not arrive as they were printed"


def test_input_reaches_a_command(sb) -> None:
    sb.process.create_session("s")
    cid = start(sb, "s", "read name; echo hello $name")
    sb.process.send_session_command_input("s", cid, "cove")
    assert wait_exit(sb, "s", cid) == 0
    assert sb.process.get_session_command_logs("s", cid).stdout == "cove\nhello cove\n"
    with pytest.raises(DaytonaError):  # it already completed
        sb.process.send_session_command_input("s", cid, "late")


def test_first_byte_latency(sb) -> None:
    """How long from an async ``echo hi`` to its output arriving on the log stream."""
    sb.process.create_session("lat")
    samples = []
    for _ in range(10):
        first: list[float] = []
        started = time.monotonic()
        cid = start(sb, "lat", "echo hi")
        asyncio.run(sb.process.get_session_command_logs_async(
            "lat", cid, lambda _c, got=first: got.append(time.monotonic()), lambda _c: None))
        samples.append((first[0] - started) * 1000)
    print(f"session log first-byte latency: median {statistics.median(samples):.1f} ms, "  # noqa: T201
          f"min {min(samples):.1f} ms, max {max(samples):.1f} ms")
    assert statistics.median(samples) < 500


def test_long_command_survives_a_server_crash(server: Server, daytona: Daytona, sb) -> None:
    """The seed-002 pattern: a run_async command outlives the call and a kill -9 of the server."""
    sb.process.create_session("bg")
    # It waits (boundedly) for a file the test makes after the crash: no race with the
    # server's restart however slow the host.
    cid = start(sb, "bg", "echo tick 1; echo tick 2; i=0; while [ ! -e /tmp/go ] && "
                          "[ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done; "
                          "for i in $(seq 3 40); do echo tick $i; done; echo done")  # fmt: skip
    assert sb.process.get_session_command("bg", cid).exit_code is None
    terminal = sb.process.create_pty_session("term", pty_size=PtySize(rows=24, cols=80))
    terminal.send_input("export KEPT=y''es\n")
    assert read_until(terminal, b"KEPT=y''es")  # the terminal echoed it: the shell has it
    terminal.disconnect()
    server.kill9()
    server.start()
    again = Daytona(DaytonaConfig(api_key=KEY, api_url=server.api_url)).get(sb.id)
    assert again.process.get_session_command("bg", cid).exit_code is None
    run_ok(again, "touch /tmp/go")
    chunks = stream(again, "bg", cid)
    assert "".join(c for _, _, c in chunks).endswith("tick 40\ndone\n")
    assert again.process.get_session_command("bg", cid).exit_code == 0
    logs = again.process.get_session_command_logs("bg", cid)
    assert logs.stdout.startswith("tick 1\ntick 2\n") and logs.stdout.endswith("tick 40\ndone\n")
    handle = again.process.connect_pty_session("term")
    handle.send_input("echo kept=$KEPT; exit 3\n")  # the shell's state survived too
    seen = bytearray()
    result = handle.wait(on_data=seen.extend, timeout=20)
    assert b"kept=yes" in seen and result.exit_code == 3


def test_pty_lifecycle(sb) -> None:
    handle = sb.process.create_pty_session("t1", cwd="/tmp", envs={"GREETING": "hi-pty"},
                                           pty_size=PtySize(rows=24, cols=80))
    handle.send_input("echo \"[$GREETING|$X|$(pwd)|$(id -un)]\"\n")
    assert read_until(handle, b"[hi-pty|1|/tmp|daytona]")
    info = sb.process.get_pty_session_info("t1")
    assert (info.active, info.cols, info.rows, info.cwd) == (True, 80, 24, "/tmp")
    assert info.envs["GREETING"] == "hi-pty"
    assert [i.id for i in sb.process.list_pty_sessions()] == ["t1"]
    resized = handle.resize(PtySize(rows=40, cols=120))
    assert (resized.cols, resized.rows) == (120, 40)
    handle.send_input("stty size\n")
    assert read_until(handle, b"40 120")
    handle.send_input("exit 7\n")
    assert handle.wait(timeout=20).exit_code == 7
    handle.disconnect()
    with pytest.raises(DaytonaNotFoundError):
        sb.process.get_pty_session_info("t1")


def test_pty_kill_and_errors(sb) -> None:
    handle = sb.process.create_pty_session("t2")
    with pytest.raises(DaytonaConflictError):
        sb.process.create_pty_session("t2")
    handle.send_input("sleep 600\n")
    sb.process.kill_pty_session("t2")
    assert handle.wait(timeout=20).exit_code == 137
    handle.disconnect()
    assert sb.process.list_pty_sessions() == []
    with pytest.raises(DaytonaError):
        sb.process.connect_pty_session("t2")


def read_until(handle, needle: bytes, timeout: float = 20) -> bool:
    """Read the terminal's output until ``needle`` shows up (False after ``timeout``)."""
    seen = bytearray()
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        handle.wait(on_data=seen.extend, timeout=0.3)
    return needle in seen


async def test_async_sdk(async_daytona: AsyncDaytona, sb) -> None:
    asb = await async_daytona.get(sb.id)
    await asb.process.create_session("as")
    await asb.process.execute_session_command("as", SessionExecuteRequest(command="cd /tmp"))
    r = await asb.process.execute_session_command("as", SessionExecuteRequest(command="pwd"))
    assert (r.exit_code, r.stdout) == (0, "/tmp\n")
    req = SessionExecuteRequest(command="for i in 1 2 3; do echo n$i; sleep 0.3; done",
                                run_async=True)
    cid = (await asb.process.execute_session_command("as", req)).cmd_id
    assert (await asb.process.get_session_command("as", cid)).exit_code is None
    arrivals: list[float] = []
    await asb.process.get_session_command_logs_async(
        "as", cid, lambda _c: arrivals.append(time.monotonic()), lambda _c: None)
    assert len(arrivals) == 3 and arrivals[-1] - arrivals[0] > 0.4
    assert (await asb.process.get_session_command("as", cid)).exit_code == 0
    assert [s.session_id for s in await asb.process.list_sessions()] == ["as"]
    await asb.process.delete_session("as")

    received = bytearray()
    handle = await asb.process.create_pty_session("at", on_data=received.extend,
                                                  envs={"V": "async-pty"})
    await handle.send_input("echo got-$V; exit 4\n")
    result = await asyncio.wait_for(handle.wait(), 20)
    assert result.exit_code == 4 and b"got-async-pty" in received
    await handle.disconnect()
