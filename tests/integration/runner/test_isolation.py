"""Trying to break out of a sandbox from inside it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from cove.runner.oci import spec
from cove.runner.oci.runtime import OciRuntime
from cove.runner.oci.spec import MASKED_PATHS
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import both_tiers, init_pid, ok, sh, tier_of

pytestmark = pytest.mark.integration
tier = both_tiers  # every test here runs on both isolation tiers

# Docker's default set: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
# NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
# Docker's default set without CAP_NET_RAW, CAP_MKNOD and CAP_AUDIT_WRITE
WORKLOAD_CAPS = sum(1 << spec.CAPABILITY_NUMBERS[c] for c in spec.WORKLOAD_CAPABILITIES)
assert WORKLOAD_CAPS == 0x800405FB


def test_sees_only_its_own_processes(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox()
    out = ok(runtime, box.sandbox_id, "ps -e -o pid=,comm=")
    pids = {int(line.split()[0]): line.split()[1] for line in out.strip().splitlines()}
    assert pids[1] == "init"
    # init, the toolbox agent (started through its own loader), sh, ps
    assert set(pids.values()) <= {"init", "ld.so", "sh", "ps"}, out
    assert max(pids) < 100, out
    assert ok(runtime, box.sandbox_id, "tr '\\0' ' ' < /proc/1/cmdline").startswith(
        "/dev/.cove/init ")
    # init is not the workload's (see test_escape.py): even its root cannot look inside
    assert sh(runtime, box.sandbox_id, "readlink /proc/1/exe").exit_code != 0
    assert str(os.getpid()) not in pids


def test_cannot_see_host_files(
    runtime: OciRuntime, make_sandbox: SandboxFactory, tmp_path: Path
) -> None:
    secret = Path("/tmp") / f"cove-host-secret-{uuid.uuid4().hex}"
    secret.write_text("host only")
    try:
        box = make_sandbox()
        res = sh(runtime, box.sandbox_id, f"cat {secret}")
        assert res.exit_code != 0
        assert b"No such file" in res.stderr
        assert ok(runtime, box.sandbox_id, f"echo inside > {secret}; cat {secret}") == "inside\n"
        assert secret.read_text() == "host only"
        assert ok(runtime, box.sandbox_id, "ls /home").split() == ["daytona"]
    finally:
        secret.unlink()


def test_hostname_and_network(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox(hostname="my-box")
    assert ok(runtime, box.sandbox_id, "hostname").strip() == "my-box"
    assert ok(runtime, box.sandbox_id, "cat /etc/hostname").strip() == "my-box"
    assert "my-box" in ok(runtime, box.sandbox_id, "cat /etc/hosts")
    dev = ok(runtime, box.sandbox_id, "cat /proc/net/dev")
    ifaces = [line.split(":")[0].strip() for line in dev.splitlines()[2:]]
    assert sorted(ifaces) == ["eth0", "lo"]  # loopback and its veth (see test_network.py)


def test_hardening(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox()
    sid = box.sandbox_id
    status = ok(runtime, sid, "cat /proc/self/status")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["CapEff"], 16) == WORKLOAD_CAPS
    assert int(fields["CapBnd"], 16) == WORKLOAD_CAPS
    assert int(fields.get("CapAmb", "0"), 16) == 0  # (gVisor has none, nor the line)
    assert fields["Seccomp"].strip() == "2"
    # (gVisor's status has no NoNewPrivs line: ask the kernel, on both tiers)
    no_new_privs = "import ctypes; print(ctypes.CDLL(None).prctl(39, 0, 0, 0, 0))"
    assert ok(runtime, sid, f"python3 -c '{no_new_privs}'").strip() == "1"
    daytona = ok(runtime, sid, "grep CapEff /proc/self/status", user="daytona")
    assert int(daytona.split()[1], 16) == 0
    for attempt in (
        "unshare -m true",
        "unshare -U true",
        "unshare -n true",
        "mount -t tmpfs none /mnt",
        "umount /proc",
        "echo 1 > /proc/sys/kernel/sysrq",
        "echo h > /proc/sysrq-trigger",
        "mknod /tmp/sda b 8 0 && head -c1 /tmp/sda",
    ):
        res = sh(runtime, sid, attempt)
        assert res.exit_code != 0, attempt
    for masked in MASKED_PATHS:
        # (gVisor's /proc and /sys are its own: most of these do not exist there at all)
        absent = sh(runtime, sid, f"test -e {masked}").exit_code != 0
        if absent and tier_of(runtime, sid) == "gvisor":
            continue
        if Path(masked).is_file():
            assert ok(runtime, sid, f"wc -c < {masked}").strip() == "0", masked
        elif Path(masked).is_dir():
            assert ok(runtime, sid, f"ls -A {masked}").strip() == "", masked
    if tier_of(runtime, sid) == "gvisor":  # (inside, gVisor says 0): the host's sentry
        assert Path(f"/proc/{init_pid(runtime, sid)}/oom_score_adj").read_text().strip() == "500"
    else:
        assert ok(runtime, sid, "cat /proc/1/oom_score_adj").strip() == "500"
    assert sh(runtime, sid, "touch /sys/x").exit_code != 0


def test_planted_passwd_symlink_does_not_leak_host_file(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    host_file = Path("/tmp") / f"cove-host-passwd-{uuid.uuid4().hex}"
    host_file.write_text("daytona:x:0:0::/root:/bin/sh\n")
    try:
        box = make_sandbox()
        sid = box.sandbox_id
        # The same path inside the sandbox says uid 1234, the host file says 0.
        ok(runtime, sid, f"echo 'daytona:x:1234:1234::/tmp:/bin/sh' > {host_file}")
        ok(runtime, sid, f"rm /etc/passwd && ln -s {host_file} /etc/passwd")
        assert ok(runtime, sid, "id -u", user="daytona").strip() == "1234"
        ok(runtime, sid, "ln -sf ../../../../../../etc/shadow /etc/passwd")
        res = sh(runtime, sid, "id -u", user="root")
        assert res.exit_code == 0
    finally:
        host_file.unlink()


def test_exec_user_env_cwd(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox(env={"FROM_SPEC": "1"})
    res = runtime.exec(box.sandbox_id, ["sh", "-c", "id -un; pwd; echo $FROM_SPEC$EXTRA"],
                       env={"EXTRA": "2"})  # fmt: skip
    assert res.exit_code == 0
    assert res.stdout.decode().split() == ["daytona", "/home/daytona", "12"]
    res = runtime.exec(box.sandbox_id, ["pwd"], user="root", cwd="/tmp")
    assert res.stdout == b"/tmp\n"
    res = runtime.exec(box.sandbox_id, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (res.exit_code, res.stdout, res.stderr) == (7, b"out\n", b"err\n")
