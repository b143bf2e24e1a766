"""Attacks on the boundary, tried from inside real sandboxes as an attacker would:
as the sandbox user and as the sandbox's root. Each must fail.

(Seccomp refusals are tried one by one in test_seccomp.py, the network in
test_network.py and test_egress.py, other organizations in the API tests.)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.core.ports import ContainerSpec, ContainerStatus, Resources, VolumeBind
from cove.core.toolbox import AgentLinks, agent_client
from cove.errors import CoveError, RuntimeBackendError, ToolboxError
from cove.runner.host import idrange
from cove.runner.layout import SandboxPaths
from cove.runner.local import LocalRunner
from cove.runner.oci.runtime import OciRuntime
from cove.runner.storage.volumes import VolumeDir
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.test_agent import _ask_again, agent_host_pid, kill_agent
from tests.integration.runner.util import (
    both_tiers,
    init_pid,
    ok,
    sandbox_dir,
    sh,
    tier_of,
)

pytestmark = pytest.mark.integration
tier = both_tiers  # every test here runs on both isolation tiers
USERS = ("daytona", "root")


def py(runtime: OciRuntime, sid: str, code: str, *, user: str, timeout: float = 60) -> str:
    """Run Python in the sandbox; returns its stdout (it must exit 0)."""
    res = runtime.exec(sid, ["python3", "-c", code], user=user, timeout=timeout)
    assert res.exit_code == 0, (res.stdout, res.stderr)
    return res.stdout.decode()


@pytest.fixture
def host_marker() -> Iterator[str]:
    """A file at the host's root: seeing it from a sandbox means the host's / leaked in."""
    marker = Path("/") / f"cove-escape-marker-{uuid.uuid4().hex[:8]}"
    marker.write_text("host root")
    yield marker.name
    marker.unlink()


# -- mounts that a sandbox cannot redirect -------------------------------------------------

RACER = """
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
os.chdir(sys.argv[1])
os.makedirs("a", exist_ok=True)
if not os.path.lexists("x"):
    os.symlink("/", "x")
end = time.monotonic() + float(sys.argv[2])
swaps = 0
while time.monotonic() < end:
    # renameat2(AT_FDCWD, "a", AT_FDCWD, "x", RENAME_EXCHANGE): "a" is now the symlink
    libc.syscall(316, -100, b"a", -100, b"x", 2)
    swaps += 1
print(swaps)
"""


@pytest.mark.parametrize("user", USERS)
def test_volume_subpath_swap_race_never_mounts_the_host(
    runtime: OciRuntime, make_sandbox: SandboxFactory, it_settings: Settings, user: str,
    host_marker: str,
) -> None:  # fmt: skip
    """One sandbox swaps the directory ``a`` of a shared volume with a symlink to ``/``
    as fast as it can while another sandbox mounting subpath ``a`` starts again and
    again: each start either mounts the volume's real ``a`` or is refused."""
    volume = f"vol-{uuid.uuid4().hex[:8]}"
    files = VolumeDir.of(it_settings)  # the volume's directory: made at first mount
    try:
        attacker = make_sandbox(volumes=(VolumeBind(volume, "/vol"),))
        racing = subprocess.Popen(  # runs for the whole attack, through the agent
            [sys.executable, "-c", "import sys; from tests.integration.runner.test_escape import "
             "_race; _race(*sys.argv[1:])", it_settings.data_dir.as_posix(),
             attacker.sandbox_id, user],
            cwd=Path(__file__).parents[3], env={**os.environ, "PYTHONPATH": "src:."},
        )  # fmt: skip
        mounted = refused = 0
        try:
            time.sleep(1.0)
            for attempt in range(10):
                victim = make_sandbox(start=False, volumes=(VolumeBind(volume, "/data", "a"),))
                try:
                    runtime.start(victim)
                except RuntimeBackendError as exc:
                    assert "symlink" in str(exc) or "outside" in str(exc), exc
                    refused += 1
                    runtime.destroy(victim.sandbox_id)
                    continue
                listing = ok(runtime, victim.sandbox_id, "ls -A /data")
                assert host_marker not in listing and "etc" not in listing.split(), listing
                ok(runtime, victim.sandbox_id, f"echo from-victim > /data/proof-{attempt}")
                mounted += 1
                runtime.destroy(victim.sandbox_id)
        finally:
            racing.wait(timeout=60)
        assert mounted + refused == 10
        assert not list(Path("/").glob("proof-*"))
        proofs = list((files.root / volume).rglob("proof-*"))
        assert len(proofs) == mounted  # what mounted was the volume's own "a"
    finally:
        files.delete(volume)


def _race(data_dir: str, sandbox_id: str, user: str) -> None:
    """(Run in a helper process.) The attacker's racer inside its sandbox."""
    settings = Settings(data_dir=Path(data_dir), snapshot_dir=Path("/var/lib/cove/snapshots"))
    res = OciRuntime(settings).exec(sandbox_id, ["python3", "-c", RACER, "/vol", "12"],
                                    user=user, timeout=60)  # fmt: skip
    assert res.exit_code == 0, res
    assert int(res.stdout) > 1000  # it really raced


# -- the agent cannot be reached, replaced or starved ---------------------------------------

ATTACK_AGENT = """
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
out = []
for pid in (1, int(sys.argv[1])):
    for name, attempt in (
        ("kill", lambda: os.kill(pid, signal.SIGKILL)),
        ("stop", lambda: os.kill(pid, signal.SIGSTOP)),
        ("environ", lambda: open(f"/proc/{pid}/environ", "rb").read()),
        ("mem", lambda: open(f"/proc/{pid}/mem", "rb").read(1)),
        ("fds", lambda: os.listdir(f"/proc/{pid}/fd")),
        ("pidfd_send_signal", lambda: signal.pidfd_send_signal(os.pidfd_open(pid),
                                                               signal.SIGKILL)),
    ):
        try:
            attempt()
            out.append(f"{name}:{pid}:OK")
        except OSError:
            pass
    if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
        out.append(f"ptrace:{pid}:OK")
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # (gVisor has no pidfds at all)
        pidfd = -1
    for fd in range(3, 12):  # pidfd_getfd: steal its descriptors (the agent's socket...)
        if pidfd >= 0 and libc.syscall(438, pidfd, fd, 0) >= 0:
            out.append(f"pidfd_getfd:{pid}:{fd}:OK")
try:
    os.setresuid(65536, 65536, 65536)  # the agent's uid
    out.append("setuid-agent:OK")
except OSError:
    pass
try:
    os.setresuid(65537, 65537, 65537)  # the id owning the sandbox's user namespace
    out.append("setuid-owner:OK")
except OSError:
    pass
print(" ".join(out) or "all refused")
"""


def _agent_pid_inside(runtime: OciRuntime, sid: str) -> int:
    out = ok(runtime, sid, "ps -e -o pid=,comm=")
    rows = (line.split() for line in out.splitlines())
    return next(int(pid) for pid, comm in rows if comm == "ld.so")


@pytest.mark.parametrize("user", USERS)
def test_agent_and_init_cannot_be_killed_traced_or_read(
    runtime: OciRuntime, make_sandbox: SandboxFactory, user: str
) -> None:
    sid = make_sandbox().sandbox_id
    before = agent_host_pid(runtime, sid)
    agent = _agent_pid_inside(runtime, sid)
    attack = ATTACK_AGENT.replace("int(sys.argv[1])", str(agent))
    got = py(runtime, sid, attack, user=user).strip()
    if tier_of(runtime, sid) == "gvisor":
        # gVisor's procfs (20240729) lets any process read another's environ and list
        # its descriptors (a known gap: the agent's environment is the sandbox's own,
        # plus its runtime's paths); everything else is refused as on crun
        leaks = {f"{what}:{pid}:OK" for what in ("environ", "fds") for pid in (1, agent)}
        got = " ".join(x for x in got.split() if x not in leaks) or "all refused"
    assert got == "all refused"
    assert agent_host_pid(runtime, sid) == before  # the same agent, never restarted
    assert ok(runtime, sid, "echo still served").strip() == "still served"


ATTACK_SPARE = ATTACK_AGENT.replace("for pid in (1, int(sys.argv[1])):", """import time
me, found = os.getpid(), []
def agents_uid(pid):  # the agent's uid is not mapped here: it shows as the overflow uid
    try:
        with open(f"/proc/{pid}/status") as f:
            uid = next(line.split()[1] for line in f if line.startswith("Uid:"))
        with open(f"/proc/{pid}/comm") as f:  # the agent (ld.so), a spare (cove-init)
            return uid == "65534" and f.read().strip() in ("ld.so", "init")
    except OSError:  # gone meanwhile
        return False
for _ in range(400):  # until a spare waits beside the agent
    found = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)
             and agents_uid(p)]
    if len(found) >= 2:
        break
    time.sleep(0.05)
print(f"agent processes: {len(found)}")
for pid in found:""")


@pytest.mark.parametrize("user", USERS)
def test_a_waiting_spare_cannot_be_killed_traced_or_read(
    runtime: OciRuntime, make_sandbox: SandboxFactory, user: str
) -> None:
    """The agent's spare (cove-init waiting for the next command as the agent's uid,
    holding its cgroups and the workload's user namespace: ``agent/spare.py``) is
    attacked as the agent is."""
    sid = make_sandbox().sandbox_id
    if tier_of(runtime, sid) == "gvisor":
        pytest.skip("no spares on the gVisor tier")
    before = agent_host_pid(runtime, sid)
    script = shlex.quote(ATTACK_SPARE)
    ok(runtime, sid, f"nohup python3 -c {script} > /tmp/attack.out 2>&1 &", user=user)
    ok(runtime, sid, "true")  # a spare is spawned once this is answered
    # Waited for through the agent's own file op, not a command: a command would take
    # the very spare the attack found, and a sandbox's root may kill its own command.
    # (The attack's output is written at once when it exits.)
    for _ in range(600):
        reply = _ask_again(runtime, sid, {"op": "fs_info", "path": "/tmp/attack.out"})
        if reply.get("file", {}).get("size"):
            break
        time.sleep(0.05)
    out = ok(runtime, sid, "cat /tmp/attack.out")
    counted, verdict = out.splitlines()
    assert int(counted.removeprefix("agent processes: ")) >= 2, out  # the agent, a spare
    assert verdict == "all refused", out
    assert agent_host_pid(runtime, sid) == before
    assert ok(runtime, sid, "echo still served").strip() == "still served"


# Code planted where the agent and init find what they run: the agent starts its
# spare (``/dev/.cove/init``) for every command and imports from ``/dev/.cove/pkg``;
# init starts the agent again from ``/dev/.cove/py`` (after a crash or an idle exit).
# Each planted module records that it ran, then gives the importer the real one.
PLANT = r"""
proof=/tmp/agent-ran-planted-code
plant() {
  for m in json secrets tempfile hashlib; do
    cat > "$1/$m.py" <<END
import importlib, os, sys
with open("$proof", "a") as f:
    f.write("%s %d\n" % (__name__, os.getuid()))
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p) != here]
del sys.modules[__name__]
sys.modules[__name__] = importlib.import_module(__name__)
END
  done
}
plant /dev/.cove/pkg
plant /dev/.cove
mkdir -p /dev/.cove-fake/pkg && plant /dev/.cove-fake/pkg &&
  ln -s /dev/.cove-real/py /dev/.cove-fake/py &&
  ln -s /dev/.cove-real/pkg/toolbox /dev/.cove-fake/pkg/toolbox &&
  printf '#!/bin/sh\necho "init $(id -u)" >> %s\nexec /dev/.cove-real/init "$@"\n' "$proof" \
    > /dev/.cove-fake/init && chmod 755 /dev/.cove-fake/init &&
  mv /dev/.cove /dev/.cove-real && mv /dev/.cove-fake /dev/.cove
true
"""


@pytest.mark.parametrize("user", USERS)
def test_nothing_planted_in_the_agents_directory_runs_as_the_agent(
    runtime: OciRuntime, make_sandbox: SandboxFactory, user: str
) -> None:
    """The sandbox plants modules in ``/dev/.cove`` and its ``pkg``, and (root) puts
    a ``/dev/.cove`` of its own in place (its ``init`` a wrapper of the real one):
    neither the agent's commands nor an agent init starts again run any of it."""
    sid = make_sandbox().sandbox_id
    sh(runtime, sid, PLANT, user=user)  # (as far as the sandbox may: nothing, here)
    for _ in range(3):  # (each command takes the waiting spare and starts the next)
        ok(runtime, sid, "true", user=user)
    kill_agent(runtime, sid)  # (as a crash or an idle exit: init starts the agent again)
    assert "ok" in _ask_again(runtime, sid, {"op": "no-such-op"})
    ok(runtime, sid, "true", user=user)
    assert ok(runtime, sid, "cat /tmp/agent-ran-planted-code 2>/dev/null || true") == ""


SQUAT = """
import os, socket, threading, time
got = []
squatters = []
for address in ("\\0cove-toolbox-agent", "/tmp/agent.sock", "/dev/shm/agent.sock"):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.bind(address)
        s.listen(64)
        s.settimeout(0.2)
        squatters.append(s)
    except OSError:
        pass
end = time.monotonic() + 6
while time.monotonic() < end:
    for s in squatters:
        try:
            got.append(s.accept())
        except OSError:
            pass
print(len(squatters), len(got))
"""


def test_a_squatter_never_receives_the_servers_requests(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """Root of the sandbox listens on every name an agent could have had; the
    server's requests (with the sandbox's env) still reach the real agent only."""
    sid = make_sandbox(env={"SECRET_OF_THE_USER": "s3cr3t"}).sandbox_id
    squatter = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tests.integration.runner.test_escape import "
         "_squat; _squat(*sys.argv[1:])", str(sandbox_dir(runtime, sid).parents[1]), sid],
        cwd=Path(__file__).parents[3], env={**os.environ, "PYTHONPATH": "src:."},
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.5)
    for _ in range(5):
        assert ok(runtime, sid, "echo $SECRET_OF_THE_USER").strip() == "s3cr3t"
    out, _ = squatter.communicate(timeout=60)
    listening, accepted = (int(x) for x in out.split())
    assert listening >= 1 and accepted == 0


def test_a_symlink_in_the_agents_place_never_leads_to_another_sandbox(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """On the gVisor tier the agent binds its socket in ``/dev/.cove/chan``, a host
    directory of the agent's uid. The tenant, through the files API (run by the agent,
    as root), replaces that socket with a symlink to another sandbox's agent: the
    server's next connection (after the agent exited idle, say) must not follow it."""
    victim = make_sandbox().sandbox_id
    ok(runtime, victim, "echo the-victims-secret > /root/marker", user="root")
    attacker = make_sandbox().sandbox_id
    paths = SandboxPaths.of(runtime._settings.data_dir, victim)
    socket = paths.chan_socket if paths.chan_socket.exists() else paths.agent_socket
    ok(runtime, attacker, f"ln -s {shlex.quote(str(socket))} /tmp/link", user="root")
    runner = LocalRunner(runtime)
    links = AgentLinks(runner)
    agent = agent_client(runner, attacker, "root", {}, links)

    async def plant_then_exec() -> str:
        with contextlib.suppress(ToolboxError):  # (the crun tier has no such directory)
            await agent.delete_file("/dev/.cove/chan/agent.sock")  # (on the open connection)
            await agent.move_file("/tmp/link", "/dev/.cove/chan/agent.sock")
        await links.forget(attacker)  # the connection ends; the next one is made anew
        try:
            return (await agent.exec("cat /root/marker")).output
        except CoveError as exc:
            return exc.message

    assert "the-victims-secret" not in asyncio.run(plant_then_exec())


def _squat(data_dir: str, sandbox_id: str) -> None:
    settings = Settings(data_dir=Path(data_dir), snapshot_dir=Path("/var/lib/cove/snapshots"))
    res = OciRuntime(settings).exec(sandbox_id, ["python3", "-c", SQUAT], user="root",
                                    timeout=60)  # fmt: skip
    print(res.stdout.decode().strip(), flush=True)  # noqa: T201


HOG = "python3 -c 'b = [bytearray(64 << 20) for _ in range(40)]'"  # 2.5 GiB


@pytest.mark.parametrize("user", USERS)
def test_a_memory_hog_is_killed_and_the_agent_is_not(
    runtime: OciRuntime, make_sandbox: SandboxFactory, user: str
) -> None:
    sid = make_sandbox(memory=1).sandbox_id
    if tier_of(runtime, sid) == "gvisor":
        return _hog_stops_a_gvisor_sandbox(runtime, sid, user)
    agent = agent_host_pid(runtime, sid)
    # the workload may lower its own OOM score as far as it can first
    res = sh(runtime, sid, f"echo 0 > /proc/self/oom_score_adj; {HOG}", user=user, timeout=120)
    assert res.exit_code != 0
    assert agent_host_pid(runtime, sid) == agent
    assert ok(runtime, sid, "echo alive", user=user).strip() == "alive"


def _hog_stops_a_gvisor_sandbox(runtime: OciRuntime, sid: str, user: str) -> None:
    """gVisor does not bound memory inside: the host's OOM killer ends the sentry in
    the sandbox's memory cgroup, and the sandbox with it. The call fails at once
    (no hang), the sandbox is reported stopped, and it starts again."""
    with pytest.raises(RuntimeBackendError):
        sh(runtime, sid, HOG, user=user, timeout=120)
    _stops_and_starts_again(runtime, sid, user, within=30)


def _stops_and_starts_again(runtime: OciRuntime, sid: str, user: str, *, within: float
                            ) -> None:  # fmt: skip
    deadline = time.monotonic() + within
    while runtime.status(sid) is not ContainerStatus.STOPPED and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runtime.status(sid) is ContainerStatus.STOPPED
    runtime.stop(sid)  # (what the server's watcher does with a dead sandbox)
    runtime.start(_spec_of(runtime, sid))
    assert ok(runtime, sid, "echo alive", user=user).strip() == "alive"


def _spec_of(runtime: OciRuntime, sid: str) -> ContainerSpec:
    meta = SandboxPaths.of(runtime._settings.data_dir, sid).read_metadata()
    return ContainerSpec(sandbox_id=sid, hostname=meta.hostname, snapshot="cove-default",
                         resources=Resources(cpu=1, memory=1, disk=3), isolation=meta.isolation)


def test_a_fork_bomb_cannot_lock_the_agent_out(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """With every pid of the workload taken, the agent still starts commands (its own
    pids are above the workload's limit): one that kills the bomb gets the sandbox back.

    gVisor: each process costs the sentry about 1 MiB of the sandbox's memory, so a
    bomb that fills the pids limit (1024) runs the sandbox out of memory first: the
    host's OOM killer ends the sentry, and the sandbox is reported stopped (a known
    difference: the agent cannot outlive its sandbox's kernel)."""
    sid = make_sandbox().sandbox_id
    ok(runtime, sid, "nohup sh -c 'f(){ f | f & }; f' >/dev/null 2>&1 &", user="daytona")
    if tier_of(runtime, sid) == "gvisor":
        return _stops_and_starts_again(runtime, sid, "daytona", within=240)
    read = _work_pids(runtime, sid)
    limit = read("pids.max")
    deadline = time.monotonic() + 20
    while read("pids.current") < limit and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read("pids.current") >= limit - 8  # no pid left for it...
    for _ in range(20):  # ...but the agent still starts the (builtin) kill
        runtime.exec(sid, ["kill", "-9", "-1"], user="daytona")
        if sh(runtime, sid, "echo $(echo served)").stdout.strip() == b"served":
            break
        time.sleep(0.2)
    assert ok(runtime, sid, "echo $(echo served)").strip() == "served"


def _work_pids(runtime: OciRuntime, sid: str) -> Callable[[str], int]:
    """Reads the workload's pids cgroup."""
    pids = Path("/sys/fs/cgroup/pids") / _work(runtime, sid)
    return lambda name: int((pids / name).read_text())


# -- the sandbox's ids are nobody on the host ---------------------------------------------------


def test_sandbox_root_is_an_unprivileged_host_uid(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    sid = make_sandbox().sandbox_id
    ok(runtime, sid, "nohup sleep 300 >/dev/null 2>&1 &", user="root")
    ids = idrange.current(sandbox_dir(runtime, sid))
    assert ids is not None
    if tier_of(runtime, sid) == "gvisor":
        return _gvisor_runs_as_the_sandboxs_root(runtime, sid, ids)
    init = init_pid(runtime, sid)
    status = _sandbox_process_status(init, "sleep")
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uid_line.split()[1:]) == {str(ids.base)}  # its root: the range's first id
    assert ids.base >= idrange.FIRST
    assert "CapEff:\t0000000000000000" not in status  # it is root, in its namespace


def _sandbox_process_status(init: int, comm: str, timeout: float = 10.0) -> str:
    """/proc/<pid>/status of the sandbox's process named `comm`. A command started in
    the background may not have exec'd yet when the shell that started it returns."""
    deadline = time.monotonic() + timeout
    while True:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if name == comm and _in_sandbox(pid, init):
                return status
        assert time.monotonic() < deadline, f"no {comm!r} process in the sandbox"
        time.sleep(0.05)


def _gvisor_runs_as_the_sandboxs_root(runtime: OciRuntime, sid: str, ids: idrange.IdRange
                                      ) -> None:  # fmt: skip
    """gVisor: no process of the sandbox is a host process; the host processes that
    run it (sentry, gofer, their helpers) run as the sandbox's root id, in a user
    namespace of their own."""
    from tests.integration.runner.util import group

    procs = Path(f"/sys/fs/cgroup/pids/{group(runtime, sid)}/cgroup.procs").read_text().split()
    assert len(procs) > 2
    host_userns = os.readlink("/proc/self/ns/user")
    for pid in procs:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            userns = os.readlink(f"/proc/{pid}/ns/user")
        except OSError:
            continue  # (exited meanwhile)
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
        assert set(uids) == {str(ids.base)}, (pid, uids)
        assert userns != host_userns


def _in_sandbox(pid: str, init: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{init}/ns/pid")
    except OSError:
        return False


def test_setuid_root_shell_is_inert_on_the_host(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """Sandbox root makes a setuid-root copy of a shell; on the host its file system
    is mounted nosuid and noexec, so no host user gets root from it."""
    sid = make_sandbox().sandbox_id
    ok(runtime, sid, "cp /bin/dash /tmp/rootsh && chmod 4755 /tmp/rootsh", user="root")
    planted = sandbox_dir(runtime, sid) / "disk" / "upper" / "tmp" / "rootsh"
    st = planted.stat()
    assert st.st_mode & 0o4000 and st.st_uid == 0  # it is there, as the sandbox made it
    options = next(line.split()[3] for line in Path("/proc/mounts").read_text().splitlines()
                   if line.split()[1] == str(sandbox_dir(runtime, sid) / "disk"))  # fmt: skip
    assert {"nosuid", "nodev", "noexec"} <= set(options.split(","))
    res = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(planted), "-c",
         "id -u"], capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode != 0 or res.stdout.strip() != "0"


# -- nothing of other sandboxes or of the host is visible ---------------------------------------

WALK = """
import os, sys
needle = sys.argv[1].encode()
found = []
def scan(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        data = os.read(fd, 65536)
    except OSError:
        data = b""
    finally:
        os.close(fd)
    if needle in data:
        found.append(path)
for root in ("/sys", "/proc"):
    for top, dirs, files in os.walk(root):
        if top == "/proc":
            dirs[:] = [d for d in dirs if not d.isdigit() and d not in ("self", "thread-self")]
        dirs[:] = [d for d in dirs if d not in ("debug", "tracing")]
        for name in files:
            if name not in ("kmsg", "kcore", "pagemap", "mem"):
                scan(os.path.join(top, name))
for name in ("mountinfo", "mounts", "cgroup", "environ"):  # (argv holds the needle)
    scan("/proc/self/" + name)
print(" ".join(found) or "nothing")
"""


@pytest.mark.parametrize("user", USERS)
def test_no_other_sandbox_can_be_seen(
    runtime: OciRuntime, make_sandbox: SandboxFactory, user: str
) -> None:
    """Loop devices name their backing files (other sandboxes' images), mountinfo names
    the layers: nothing under /proc or /sys says another sandbox's id."""
    other = make_sandbox().sandbox_id
    sid = make_sandbox().sandbox_id
    found = runtime.exec(sid, ["python3", "-c", WALK, other], user=user, timeout=240)
    assert found.exit_code == 0, found
    assert found.stdout.decode().strip() == "nothing", found.stdout
    if tier_of(runtime, sid) == "crun":  # (gVisor shows its own mounts, not the host's)
        assert "lowerdir=/proc/self/fd/" in ok(runtime, sid, "cat /proc/self/mountinfo")


CLASSICS = {
    "cgroup release_agent": "echo /tmp/x > /sys/fs/cgroup/memory/release_agent",
    "core_pattern": "echo '|/tmp/x' > /proc/sys/kernel/core_pattern",
    "sysctl": "echo 1 > /proc/sys/vm/drop_caches",
    "sysrq": "echo c > /proc/sysrq-trigger",
    "sysfs write": "echo 1 > /sys/kernel/uevent_helper",
    "block device": "mknod /tmp/sda b 8 0 && head -c1 /tmp/sda",
    "char device": "mknod /tmp/mem c 1 1 && head -c1 /tmp/mem",
    "mount": "mount -t tmpfs none /mnt",
    "unshare user": "unshare -U true",
    "unshare mount": "unshare -m true",
    "join init": "nsenter -t 1 -m true",
    "raw socket": "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)'",
    "packet socket": "python3 -c 'import socket; socket.socket(socket.AF_PACKET, socket.SOCK_RAW)'",
    "vsock": "python3 -c 'import socket; socket.socket(40, socket.SOCK_STREAM)'",
    "kcore": "head -c1 /proc/kcore | grep -q .",
    "kmsg": "head -c1 /dev/kmsg",
    "set hostname": "hostname evil",
    "set time": "date -s '2001-01-01'",
    "add route": "ip route add 192.0.2.0/24 dev lo",
    "change address": "ip addr add 192.0.2.1/32 dev lo",
    "module": "python3 -c 'import ctypes; assert ctypes.CDLL(None).init_module(0, 0, b\"\") == 0'",
}


@pytest.mark.parametrize("user", USERS)
def test_classic_escapes_fail(
    runtime: OciRuntime, make_sandbox: SandboxFactory, user: str, host_marker: str
) -> None:
    sid = make_sandbox().sandbox_id
    for name, attack in CLASSICS.items():
        res = sh(runtime, sid, attack, user=user)
        assert res.exit_code != 0, (name, res)
    breakout = ("mkdir -p /tmp/jail && cd /tmp && python3 -c \"import os; os.chroot('/tmp/jail'); "
                "[os.chdir('..') for _ in range(64)]; os.chroot('.'); print(os.listdir('/'))\"")
    res = sh(runtime, sid, breakout, user=user)
    assert host_marker.encode() not in res.stdout  # at best the sandbox's own root
    assert ok(runtime, sid, "hostname", user=user).strip() != "evil"


def test_open_files_are_charged_to_the_sandbox(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    """Open files count against the sandbox's memory, and the host-wide count is not
    what bounds them (it is raised out of reach): a sandbox cannot use up the host's
    files, only its own memory."""
    sid = make_sandbox(memory=1).sandbox_id
    assert int(Path("/proc/sys/fs/file-max").read_text()) >= 1 << 62
    # (gVisor: the files are the sentry's memory, in the sandbox's own cgroup)
    work = _work(runtime, sid) if tier_of(runtime, sid) == "crun" else _work(runtime, sid)[:-5]
    usage = Path("/sys/fs/cgroup/memory") / work / "memory.usage_in_bytes"
    hold = ("for i in $(seq 10); do python3 -c 'import os,time\nfor _ in range(9000): "
            "os.eventfd(0)\ntime.sleep(30)' & done; sleep 5")  # (a process may hold 20000)
    before = int(usage.read_text())
    ok(runtime, sid, hold)
    assert int(usage.read_text()) - before > 90_000 * 128  # at least 128 bytes per file


def _work(runtime: OciRuntime, sid: str) -> str:
    from tests.integration.runner.util import group

    return f"{group(runtime, sid)}/work"


def test_exec_argument_quoting_is_not_a_shell(runtime: OciRuntime, make_sandbox: SandboxFactory
                                              ) -> None:  # fmt: skip
    """runtime.exec quotes its argv: an argument is never run as shell code."""
    sid = make_sandbox().sandbox_id
    res = runtime.exec(sid, ["echo", "$(id -u); touch /tmp/pwned"])
    assert res.stdout.decode().strip() == "$(id -u); touch /tmp/pwned"
    assert sh(runtime, sid, "test -e /tmp/pwned").exit_code != 0
