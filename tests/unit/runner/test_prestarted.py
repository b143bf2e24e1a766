"""The host's side of pre-started agents, against stand-in processes that speak the
order socket's protocol (the real agent entering a sandbox: integration
test_prestart.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.errors import RuntimeBackendError
from cove.runner.host import cgtree
from cove.runner.oci import prestarted
from cove.runner.oci.prestarted import Command, Prestarted, PrestartedAgents

# A stand-in: "ready", then on an order it forks a process standing for the agent
# ("ok <pid>", then it waits for the last word), sends a pidfd of it ("forked") and
# exits, as the real one does; BEHAVIOUR changes what it answers.
STAND_IN = """
import array, json, os, socket, sys, time
control = socket.socket(fileno=0)
control.sendall(b"ready")
data, anc, _, _ = control.recvmsg(1 << 20, socket.CMSG_LEN(64 * 4))
if not data:
    sys.exit(0)
order = json.loads(data)
got = array.array("i"); got.frombytes(anc[0][2]) if anc else None
behaviour = sys.argv[1]
if behaviour == "error":
    control.sendall(b"error cannot enter"); sys.exit(1)
if behaviour == "silent":
    time.sleep(60)
r, w = os.pipe()
pid = os.fork()
if pid == 0:  # the agent: reports (after "forked" unless all is well), waits for the last word
    if behaviour != "ok":
        os.read(r, 1)
    control.sendall(b"ok 42" if behaviour == "ok" else b"ok -3")
    control.recv(16)
    time.sleep(60)
    os._exit(0)
with open(order["record"] + ".tmp", "w") as f:  # (renamed: a test never reads half of it)
    json.dump({"pid": pid, "fds": len(got), "order": order}, f)
os.rename(order["record"] + ".tmp", order["record"])
control.sendmsg([b"forked"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                               array.array("i", [os.pidfd_open(pid)]))])
os.write(w, b"1")
"""


@pytest.fixture
def command(tmp_path: Path) -> Iterator[Command]:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    yield Command(sys.executable, [sys.executable, str(script), "ok"])


def stand_in(command: Command, behaviour: str) -> Prestarted:
    spare = Prestarted(Command(command.executable, [*command.argv[:-1], behaviour]))
    deadline = time.monotonic() + 10
    while not spare.ready():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return spare


@pytest.fixture(autouse=True)
def no_cgroups(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    moves: list[tuple[str, int, int]] = []
    monkeypatch.setattr(cgtree, "join_like", lambda g, i, p: moves.append((g, i, p)))
    return moves


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_hand_over_sends_the_order_and_returns_the_agents_pid(
    command: Command, tmp_path: Path, no_cgroups: list[tuple[str, int, int]]
) -> None:
    spare = stand_in(command, "ok")
    record = tmp_path / "record.json"
    r, w = os.pipe()
    try:
        pid = spare.hand_over(os.getpid(), "cove/sb1", {"record": str(record)}, [r, w])
    finally:
        os.close(r)
        os.close(w)
    assert pid == 42
    assert no_cgroups == [("cove/sb1", os.getpid(), spare.proc.pid)]  # moved before the order
    got = json.loads(record.read_text())
    assert got["fds"] == 3  # a pidfd of init, then the descriptors given
    assert alive(got["pid"])
    spare.run()
    assert spare.control.fileno() == -1 and spare.agent is None  # nothing of it kept
    os.kill(got["pid"], 9)


@pytest.mark.parametrize("behaviour", ["error", "silent", "bad-pid"])
def test_a_hand_over_that_fails_leaves_nothing_running(
    command: Command, tmp_path: Path, behaviour: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prestarted, "HANDOVER_SECONDS", 1.0)
    spare = stand_in(command, behaviour)
    record = tmp_path / "record.json"
    with pytest.raises(RuntimeBackendError, match="pre-started agent"):
        spare.hand_over(os.getpid(), "cove/sb1", {"record": str(record)}, [])
    assert spare.proc.poll() is not None  # killed
    if record.exists():  # it had forked its agent: killed too
        child = json.loads(record.read_text())["pid"]
        deadline = time.monotonic() + 5
        while alive(child):
            assert time.monotonic() < deadline, "the forked agent was left running"
            time.sleep(0.01)


def test_the_pool_hands_out_ready_ones_refills_and_closes(
    command: Command, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prestarted, "REFILL_DELAY", 0.0)
    agents = PrestartedAgents(command, 2)
    try:
        assert agents.wait_ready(10)
        first = agents.take()
        assert first is not None and first.ready()
        deadline = time.monotonic() + 10
        while len(agents._spares) < 2:  # refilled
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first.discard()
    finally:
        spares = list(agents._spares)
        agents.close()
    assert all(s.proc.poll() is not None for s in spares)
    assert agents.take() is None  # closed: no more


def test_a_process_that_cannot_start_gives_none(tmp_path: Path) -> None:
    agents = PrestartedAgents(Command(str(tmp_path / "missing"), ["x"]), 1)
    assert agents.take() is None
    assert not agents.wait_ready(0.05)
    agents.close()


def test_a_runtime_gone_before_the_order_ends_the_spare(command: Command) -> None:
    spare = stand_in(command, "ok")
    spare.control.close()
    assert spare.proc.wait(10) == 0
    assert isinstance(spare.proc, subprocess.Popen)
