"""Commands answered by a relay (cove/agent/relay.py, init.c's relay mode) in real
sandboxes through the SDK: they behave as the agent's, see what changed in the
sandbox since the relay was made, and the relay cannot be turned against anyone
from inside."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaError
from daytona.common.errors import DaytonaProcessExecutionTimeoutError

from tests.e2e.conftest import Server, run_ok, sandbox_processes

pytestmark = pytest.mark.e2e

# A command's parent: the relay ("...init --relay ..."), or the agent (python).
PARENT = "tr '\\0' ' ' < /proc/$PPID/cmdline"


def as_root(server: Server, sandbox_id: str, script: str) -> str:
    result = server.runtime().exec(sandbox_id, ["sh", "-c", script], user="root", timeout=30)
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


def relayed(sb) -> str:  # noqa: ANN001 - an SDK Sandbox
    """Wait until the sandbox's commands run by a relay (made after its first command);
    returns the relay's pid."""
    deadline = time.monotonic() + 20
    while True:
        parent = run_ok(sb, f"echo $PPID; {PARENT}")
        pid, _, cmdline = parent.partition("\n")
        if "--relay" in cmdline:
            return pid
        assert time.monotonic() < deadline, f"no relay runs the commands: {cmdline}"
        time.sleep(0.05)


@pytest.fixture
def sb(daytona: Daytona, sandboxes: list):
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(env_vars={"KEPT": "1",
                                                                       "GONE": "2"}))
    sandboxes.append(sandbox)
    return sandbox


def test_a_relay_runs_commands_as_the_agent_does(sb) -> None:
    first = run_ok(sb, "id -un; pwd; echo $KEPT $HOME; echo err >&2")
    relay = relayed(sb)
    assert run_ok(sb, "id -un; pwd; echo $KEPT $HOME; echo err >&2") == first
    assert first == "daytona\n/home/daytona\n1 /home/daytona\nerr\n"
    r = sb.process.exec("pwd; echo $A $KEPT; exit 7", cwd="/tmp", env={"A": "b", "KEPT": "3"})
    assert (r.exit_code, r.result) == (7, "/tmp\nb 3\n")
    assert sb.process.exec("kill -9 $$").exit_code == 137
    big = sb.process.exec("head -c 3000000 /dev/zero | tr '\\0' a; echo; echo end").result
    assert len(big) == 3000005 and big.endswith("a\nend\n")
    assert relayed(sb) == relay  # one relay, command after command


def test_the_working_directory_error_is_the_agents(sb) -> None:
    relayed(sb)
    with pytest.raises(DaytonaError, match="working directory /nowhere does not exist"):
        sb.process.exec("pwd", cwd="/nowhere")
    assert run_ok(sb, "echo fine") == "fine\n"


def test_a_timeout_kills_what_the_command_started(server: Server, sb) -> None:
    relayed(sb)
    with pytest.raises(DaytonaProcessExecutionTimeoutError):
        sb.process.exec("setsid sleep 301 & sleep 302", timeout=1)
    left = as_root(server, sb.id, "ps -eo args | grep -c '^sleep 30[12]' || true")
    assert left.strip() == "0"  # (setsid left the session: the cgroup took it)
    assert run_ok(sb, "echo after") == "after\n"
    relayed(sb)


def test_output_after_the_exit_neither_blocks_nor_breaks(sb) -> None:
    relayed(sb)
    r = sb.process.exec("(sleep 1; seq 1 200000 && echo done > /tmp/late) & echo now")
    assert r.result == "now\n"
    deadline = time.monotonic() + 20
    while run_ok(sb, "cat /tmp/late 2>/dev/null || true") != "done\n":  # not blocked, not
        assert time.monotonic() < deadline  # killed by a closed pipe
        time.sleep(0.1)


def test_an_unset_variable_is_gone_from_relay_commands(sb) -> None:
    relayed(sb)
    sb.update_env({}, unset=["GONE"])
    assert run_ok(sb, 'echo "${GONE-unset} $KEPT"') == "unset 1\n"
    relayed(sb)
    assert run_ok(sb, 'echo "${GONE-unset}"') == "unset\n"


def test_a_new_group_and_home_reach_relay_commands(server: Server, sb) -> None:
    relayed(sb)
    as_root(server, sb.id, "groupadd -g 4242 crew && usermod -aG crew daytona")
    assert "4242" in run_ok(sb, "id -G").split()
    as_root(server, sb.id, "mkdir -p /srv/h2 && chown daytona /srv/h2 && "
                           "usermod -d /srv/h2 daytona")
    assert run_ok(sb, "echo $HOME; pwd") == "/srv/h2\n/srv/h2\n"
    relayed(sb)
    as_root(server, sb.id, "mv /srv/h2 /srv/h3")  # (no user database changed)
    assert run_ok(sb, "echo $HOME; pwd") == "/\n/\n"  # as the agent has it: no home
    as_root(server, sb.id, "mv /srv/h3 /srv/h2")
    assert run_ok(sb, "echo $HOME; pwd") == "/srv/h2\n/srv/h2\n"


def test_the_sandbox_user_cannot_touch_the_relay(sb) -> None:
    relay = relayed(sb)
    r = sb.process.exec(f"kill -9 {relay}; cat /proc/{relay}/environ; ls /proc/{relay}/fd")
    assert r.exit_code != 0
    assert "Operation not permitted" in r.result and "Permission denied" in r.result
    assert relayed(sb) == relay  # still the one, still answering


def test_sandbox_root_cannot_touch_the_relay_either(server: Server, sb) -> None:
    """The workload's root is root of the workload's own user namespace, below the
    agent's: the relay (the agent's) is not its to signal or trace."""
    relay = relayed(sb)
    result = server.runtime().exec(
        sb.id, ["sh", "-c", f"kill -9 {relay}; cat /proc/{relay}/environ"], user="root",
        timeout=30)  # fmt: skip
    assert result.exit_code != 0
    assert b"Operation not permitted" in result.stderr
    assert b"Permission denied" in result.stderr
    assert relayed(sb) == relay


# Run in the background by a command: once the relay forked the next command's spare
# (a copy of the relay's memory, waiting for its order), signal and read it.
# (Looked for again until found: a command of the test's polling may have just taken it.)
SPARE_ATTACK = """(sleep 1; found=
for try in $(seq 50); do
  for s in /proc/[0-9]*; do
    grep -q "^PPid:[[:space:]]*{relay}$" $s/status 2>/dev/null || continue
    tr '\\0' ' ' < $s/cmdline | grep -q -- --relay || continue
    seen=$( (kill -9 ${{s#/proc/}}; cat $s/environ; head -c 16 $s/mem; ls $s/fd) 2>&1 )
    tr '\\0' ' ' < $s/cmdline 2>/dev/null | grep -q -- --relay || continue
    found=1; echo "spare ${{s#/proc/}}"; echo "$seen"
  done
  [ -n "$found" ] && break; sleep 0.1
done; echo done) > {out} 2>&1 < /dev/null &"""


def spare_attack_result(sb, out: str) -> str:  # noqa: ANN001 - an SDK Sandbox
    deadline = time.monotonic() + 20
    while True:
        seen = sb.process.exec(f"cat {out}").result
        if seen.rstrip().endswith("done"):
            return seen
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)


def test_neither_user_nor_root_can_touch_the_relays_waiting_spare(server: Server, sb) -> None:
    """The spare a relay forks for the next command holds a copy of the relay's memory
    until it becomes that command: not the user's, nor the workload root's, to signal
    or read. (The probe keeps what it saw only if the spare was still waiting after its
    tries: this test's own polling commands take spares meanwhile. A spare it could
    kill is never still there, so a breach leaves it with nothing to report.)"""
    relay = relayed(sb)
    sb.process.exec(SPARE_ATTACK.format(relay=relay, out="/tmp/by-user"))
    by_user = spare_attack_result(sb, "/tmp/by-user")
    as_root(server, sb.id, SPARE_ATTACK.format(relay=relay, out="/tmp/by-root"))
    by_root = spare_attack_result(sb, "/tmp/by-root")
    for seen in (by_user, by_root):
        assert "spare " in seen, (by_user, by_root)  # the probe found it
        assert "Operation not permitted" in seen and "Permission denied" in seen, seen
        assert "KEPT=" not in seen
    assert relayed(sb) == relay  # its spare took the next command, as ever
    assert run_ok(sb, "echo ok").strip() == "ok"


def host_pid(sandbox_id: str, command: bytes) -> int:
    """The host's pid of the sandbox's process whose command line has ``command``."""
    for pid, cmdline in sandbox_processes(sandbox_id):
        if command in cmdline:
            return pid
    raise AssertionError(f"no {command!r} in sandbox {sandbox_id}")


def test_a_relay_that_dies_mid_command_fails_that_command_only(sb) -> None:
    """A relay killed while its command runs (here from the host): that command is an
    error, never run a second time through the agent, and the next command runs."""
    relayed(sb)
    relay = host_pid(sb.id, b"--relay")
    killer = threading.Thread(target=_kill_when, args=(sb.id, relay))
    killer.start()
    try:
        with pytest.raises(DaytonaError, match="relay ended"):
            sb.process.exec("echo ran >> /tmp/ran; sleep 3")
    finally:
        killer.join()
    assert run_ok(sb, "echo next") == "next\n"
    relayed(sb)
    assert host_pid(sb.id, b"--relay") != relay
    assert run_ok(sb, "cat /tmp/ran") == "ran\n"  # once


def _kill_when(sandbox_id: str, relay: int) -> None:
    """Kill the relay once its command wrote /tmp/ran (seen from the host)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        spare = _children(relay)
        if spare and any(Path(f"/proc/{p}/root/tmp/ran").exists() for p in spare):
            os.kill(relay, signal.SIGKILL)
            return
        time.sleep(0.01)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
