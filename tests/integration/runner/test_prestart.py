"""A cold start hands its sandbox a pre-started agent (COVE_AGENT_PRESTART): the agent
is confined exactly as the one init starts, init supervises it as its own, nothing in
the sandbox can reach it, and whatever goes wrong on the way leaves init to start
the agent itself."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.agent.agent import OP_MODULES
from cove.core.config import Settings
from cove.runner.host import cgtree
from cove.runner.oci.prestarted import PrestartedAgents
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory, sandbox_factory
from tests.integration.runner.test_agent import _connect, _request
from tests.integration.runner.test_escape import ATTACK_AGENT, USERS, _agent_pid_inside
from tests.integration.runner.util import agent_pids, init_pid, ok, py

pytestmark = pytest.mark.integration
ENV = {"LD_PRELOAD": "/nowhere.so", "TMPDIR": "/tmp/x", "GREETING": "hello there"}
SAME = ("Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp",
        "Seccomp_filters", "SigBlk", "SigIgn", "Umask")  # fmt: skip


@pytest.fixture(scope="module")
def plain_runtime(it_settings: Settings, default_rootfs: Path) -> OciRuntime:
    """A runtime (same data dir and cgroups) with no pre-started agent: init starts
    each sandbox's agent."""
    return OciRuntime(it_settings.model_copy(update={"agent_prestart": 0}))


@pytest.fixture
def make_plain(plain_runtime: OciRuntime) -> Iterator[SandboxFactory]:
    with sandbox_factory(plain_runtime) as make:
        yield make


def prestarted(runtime: OciRuntime) -> PrestartedAgents:
    """The runtime's pre-started agents, once one is ready (the next start takes it)."""
    agents = runtime._prestarted_agents(runtime._agent_setup())
    assert agents is not None
    assert agents.wait_ready(30), "no pre-started agent got ready"
    return agents


def the_agent(runtime: OciRuntime, sandbox_id: str) -> int:
    agents = agent_pids(runtime, sandbox_id)
    assert len(agents) == 1, agents
    return agents[0]


def was_prestarted(pid: int) -> bool:
    return b"prestart.py" in Path(f"/proc/{pid}/cmdline").read_bytes()


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def confinement(runtime: OciRuntime, sandbox_id: str) -> dict[str, object]:
    """What confines a sandbox's agent, relative to its own init where ids differ."""
    init, agent = init_pid(runtime, sandbox_id), the_agent(runtime, sandbox_id)
    got, init_status = status(agent), status(init)
    nofile = [x for x in Path(f"/proc/{agent}/limits").read_text().splitlines() if "open f" in x]
    return {
        **{key: got[key] for key in SAME},
        "uid, gid as init's": (got["Uid"], got["Gid"]) == (init_status["Uid"], init_status["Gid"]),
        "parent is init": got["PPid"] == str(init),
        "namespaces as init's": all(os.readlink(f"/proc/{agent}/ns/{ns}")
                                    == os.readlink(f"/proc/{init}/ns/{ns}") for ns in NAMESPACES),
        "cgroups as init's": (Path(f"/proc/{agent}/cgroup").read_text()
                              == Path(f"/proc/{init}/cgroup").read_text()),
        "dumpable as its uid": os.stat(f"/proc/{agent}/status").st_uid == os.stat(
            f"/proc/{init}/status").st_uid,
        "oom_score_adj": Path(f"/proc/{agent}/oom_score_adj").read_text(),
        "nofile": nofile,
        "stdio and service descriptors": [_kind(agent, fd) for fd in range(7)],
    }  # fmt: skip


def _kind(pid: int, fd: int) -> str:
    try:
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
    except FileNotFoundError:
        return "closed"
    return target.split("[")[0] if "[" in target else Path(target).name


NAMESPACES = ("user", "mnt", "pid", "net", "ipc", "uts", "cgroup")
WORKLOAD_VIEW = "env | sort; id; grep -E '^(Cap|NoNewPrivs|Seccomp)' /proc/self/status; umask"


def test_a_cold_start_hands_over_an_agent_confined_as_inits_own(
    runtime: OciRuntime, make_sandbox: SandboxFactory, make_plain: SandboxFactory,
    plain_runtime: OciRuntime,
) -> None:  # fmt: skip
    prestarted(runtime)
    fast = make_sandbox(env=ENV, hostname="box").sandbox_id
    plain = make_plain(env=ENV, hostname="box").sandbox_id
    assert was_prestarted(the_agent(runtime, fast))
    assert not was_prestarted(the_agent(plain_runtime, plain))
    # what the sandbox sees of its command line names no host path
    cmdline = Path(f"/proc/{the_agent(runtime, fast)}/cmdline").read_bytes()
    args = cmdline.split(b"\0")[:-1]
    assert args[0].startswith(b"/dev/.cove/py/"), cmdline
    assert all(a.startswith(b"/dev/.cove/") for a in args if a.startswith(b"/")), cmdline
    for _ in range(50):  # (an agent spawning a process blocks its signals meanwhile)
        got, want = confinement(runtime, fast), confinement(plain_runtime, plain)
        if got == want:
            break
        time.sleep(0.05)
    assert got == want
    assert all(got[k] for k in ("uid, gid as init's", "parent is init", "namespaces as init's",
                                "cgroups as init's", "dumpable as its uid"))  # fmt: skip
    # what the user's processes get from it: the same environment (the variables the
    # loader acts on handed back), ids, capabilities, seccomp filter and umask
    assert ok(runtime, fast, WORKLOAD_VIEW) == ok(plain_runtime, plain, WORKLOAD_VIEW)
    assert "LD_PRELOAD=/nowhere.so" in ok(runtime, fast, "env")
    # it serves everything a fresh agent serves: each handler module, imported at its
    # first op (from the sandbox's mount, as the standard library it needs)
    assert py(runtime, fast, "print(6 * 7)").strip() == "42"
    for module, ops in OP_MODULES.items():
        with _connect(runtime, fast) as sock:
            reply = _request(sock, {"op": ops[0]})  # (no arguments: a bad request)
        assert "failed to load" not in json.dumps(reply), (module, reply)


@pytest.mark.parametrize("user", USERS)
def test_a_prestarted_agent_cannot_be_killed_traced_or_read(
    runtime: OciRuntime, make_sandbox: SandboxFactory, user: str
) -> None:
    prestarted(runtime)
    sid = make_sandbox().sandbox_id
    before = the_agent(runtime, sid)
    assert was_prestarted(before)
    attack = ATTACK_AGENT.replace("int(sys.argv[1])", str(_agent_pid_inside(runtime, sid)))
    assert py(runtime, sid, attack, user=user).strip() == "all refused"
    assert the_agent(runtime, sid) == before
    assert ok(runtime, sid, "echo still served").strip() == "still served"


def test_init_supervises_a_prestarted_agent(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """Killed, it is replaced by init's own start; a stop ends it with the sandbox."""
    prestarted(runtime)
    sid = make_sandbox().sandbox_id
    first = the_agent(runtime, sid)
    assert was_prestarted(first)
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        try:
            assert ok(runtime, sid, "echo again").strip() == "again"
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    second = the_agent(runtime, sid)
    assert second != first and not was_prestarted(second)
    prestarted(runtime)
    other = make_sandbox().sandbox_id
    agent = the_agent(runtime, other)
    assert was_prestarted(agent)
    started = time.monotonic()
    runtime.stop(other)
    # (init reaps it: a stop does not wait out the grace period for a zombie)
    assert time.monotonic() - started < runtime._settings.stop_grace_seconds
    assert not Path(f"/proc/{agent}").exists()  # (reaped; init's own zombie is the host's)


def test_a_failed_hand_over_leaves_init_to_start_the_agent(
    runtime: OciRuntime, make_sandbox: SandboxFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pre-started agent that cannot take the sandbox (here: its cgroups cannot be
    joined; below: it died while waiting) is killed, and init starts the agent."""
    agents = prestarted(runtime)
    spare = next(s for s in agents._spares if s.ready())

    def refuse(group: str, init: int, pid: int) -> None:
        raise cgtree.RuntimeBackendError("no cgroup for you")

    monkeypatch.setattr(cgtree, "join_like", refuse)
    sid = make_sandbox().sandbox_id
    monkeypatch.undo()
    assert spare.proc.poll() is not None  # killed, not left waiting
    agent = the_agent(runtime, sid)
    assert not was_prestarted(agent) and status(agent)["PPid"] == str(init_pid(runtime, sid))
    assert ok(runtime, sid, "echo served").strip() == "served"

    spare = next(s for s in prestarted(runtime)._spares if s.ready())
    spare.proc.kill()
    spare.proc.wait()
    sid = make_sandbox().sandbox_id
    assert not was_prestarted(the_agent(runtime, sid))
    assert ok(runtime, sid, "echo served").strip() == "served"
