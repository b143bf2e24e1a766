"""process.exec, code_run and sandbox info through the SDK, inside real sandboxes."""

from __future__ import annotations

import time

import httpx
import pytest
from daytona import (
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    DaytonaError,
    DaytonaNotFoundError,
)
from daytona.common.errors import DaytonaProcessExecutionTimeoutError

from tests.e2e.conftest import Server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sb(daytona_module: Daytona):
    sandbox = daytona_module.create(CreateSandboxFromSnapshotParams(env_vars={"X": "1"}))
    yield sandbox
    sandbox.delete()


@pytest.fixture(scope="module")
def daytona_module(server: Server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=server.api_key, api_url=server.api_url))


def test_exec_runs_as_the_sandbox_user_in_its_home(sb) -> None:
    r = sb.process.exec("id -un; pwd; echo $X $HOME; echo err >&2; exit 4")
    assert r.exit_code == 4
    assert r.result == "daytona\n/home/daytona\n1 /home/daytona\nerr\n"


def test_exec_cwd_env_and_limits(sb) -> None:
    r = sb.process.exec("pwd; echo $FOO", cwd="/tmp", env={"FOO": "bar"})
    assert r.result == "/tmp\nbar\n"
    cpus = sb.process.exec("cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null"
                           " || cut -d' ' -f1 /sys/fs/cgroup/cpu.max").result.strip()
    assert cpus == "100000"


def test_exec_cannot_see_the_host(sb) -> None:
    ps = sb.process.exec("ps -e -o comm=").result.split()
    assert "python" not in " ".join(ps)  # no host process (the server is python)
    assert sb.process.exec("test -e /work/main && echo leak || echo ok").result == "ok\n"


def test_exec_timeout_fires_and_kills_the_tree(sb) -> None:
    started = time.monotonic()
    with pytest.raises(DaytonaProcessExecutionTimeoutError) as info:
        sb.process.exec("sleep 300 & sleep 300", timeout=1)
    assert time.monotonic() - started < 20
    assert "command execution timeout" in str(info.value).lower()  # Daytona's daemon's words
    left = sb.process.exec("ps -e -o comm= | grep -c sleep || true").result.strip()
    assert left == "0"


def test_exec_timeout_reaches_processes_that_left_the_process_group(sb) -> None:
    """Double-forked, setsid-ed and fork-bombing processes all live in the command's
    cgroup: the timeout kills every one, and the call answers when it fires."""
    escape = ("setsid sh -c 'sleep 301 & sleep 302' & "
              "(nohup sh -c 'sleep 303' >/dev/null 2>&1 &) ; "
              "timeout 3 bash -c ':(){ :|:& };:'; exec sleep 300")  # fmt: skip
    # (``exec``: the bomb's orphans hold every pid, so the shell could not fork)
    started = time.monotonic()
    with pytest.raises(DaytonaProcessExecutionTimeoutError):
        sb.process.exec(escape, timeout=8)
    assert time.monotonic() - started < 60
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        left = sb.process.exec("ps -e -o comm= | grep -c -E 'sleep|bash' || true").result
        if left.strip() == "0":
            break
        time.sleep(0.5)
    assert left.strip() == "0", sb.process.exec("ps -ef").result
    assert sb.process.exec("echo alive").result == "alive\n"


def test_a_chatty_process_left_in_the_background_runs_on(sb) -> None:
    """A process an exec leaves running (a dev server started with ``&``) keeps its
    stdout, the command's pipe: what it prints after the answer is dropped, however
    much, and it neither blocks on a full pipe nor breaks on a closed one."""
    r = sb.process.exec("(sleep 0.5; head -c 5000000 /dev/zero && echo ok > /tmp/chatty) & "
                        "echo started")  # fmt: skip
    assert r.result == "started\n"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        said = sb.process.exec("cat /tmp/chatty 2>/dev/null || true").result
        if said:
            break
        time.sleep(0.2)
    assert said == "ok\n"


def test_code_run_python(sb) -> None:
    r = sb.process.code_run("import sys\nprint('hi', sys.version_info.major)")
    assert r.exit_code == 0 and r.result == "hi 3\n"


def test_info(sb) -> None:
    assert sb.get_user_home_dir() == "/home/daytona"
    assert sb.get_work_dir() == "/home/daytona"


def test_other_organization_gets_404(server: Server, sb) -> None:
    key = server.org_key("other")
    other = Daytona(DaytonaConfig(api_key=key, api_url=server.api_url))
    with pytest.raises(DaytonaNotFoundError):
        other.get(sb.id)
    assert list(other.list()) == []
    # The toolbox too, even knowing the sandbox id.
    r = httpx.post(f"{server.url}/toolbox/{sb.id}/process/execute",
                   json={"command": "id"}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 404


def test_toolbox_on_stopped_sandbox_fails_at_once(daytona_module: Daytona) -> None:
    box = daytona_module.create()
    try:
        box.stop()
        started = time.monotonic()
        with pytest.raises(DaytonaError, match="start it"):
            box.process.exec("true")
        assert time.monotonic() - started < 5
    finally:
        box.delete()


def test_user_process_can_reopen_its_own_stdio(sb) -> None:
    r = sb.process.exec("echo to-stderr > /dev/stderr; echo to-stdout > /dev/stdout")
    assert r.exit_code == 0 and r.result == "to-stderr\nto-stdout\n"
    fds = sb.process.exec("ls /proc/self/fd | sort -n | tr '\\n' ' '").result.split()
    assert fds[:3] == ["0", "1", "2"] and len(fds) <= 4  # 3 = the directory ls reads


@pytest.mark.parametrize(("language", "code"), [
    ("typescript", "const n: number = 41; console.log(`ts ${n + 1}`)"),
    ("javascript", "console.log('js', [1, 2].length)"),
])
def test_code_run_per_language_label(daytona_module: Daytona, language: str, code: str) -> None:
    box = daytona_module.create(CreateSandboxFromSnapshotParams(language=language))
    try:
        r = box.process.code_run(code)
        assert r.exit_code == 0, r.result
        assert r.result == {"typescript": "ts 42\n", "javascript": "js 2\n"}[language]
    finally:
        box.delete()


def test_exec_follows_edits_of_the_user_database(server: Server, daytona_module: Daytona) -> None:
    """The agent keeps its answers from /etc/passwd while the file is unchanged: an edit
    by the sandbox's root (a new file by rename, or the same file written again with
    the same size a moment later) is seen by the very next command."""
    sandbox = daytona_module.create(CreateSandboxFromSnapshotParams())
    try:
        assert sandbox.process.exec("id -u").result == "1000\n"
        assert sandbox.process.exec("id -u").result == "1000\n"  # kept, file unchanged
        root = server.runtime()
        root.exec(sandbox.id, ["sed", "-i", "s/^daytona:x:1000:/daytona:x:1234:/", "/etc/passwd"],
                  user="root")  # fmt: skip
        assert sandbox.process.exec("id -u").result == "1234\n"
        # written in place, same size, within the same clock tick as far as the agent knows
        root.exec(sandbox.id, ["sh", "-c", "sed 's/^daytona:x:1234:/daytona:x:1235:/' /etc/passwd"
                               " > /tmp/p && cat /tmp/p > /etc/passwd"], user="root")  # fmt: skip
        assert sandbox.process.exec("id -u").result == "1235\n"
    finally:
        sandbox.delete()
