"""The gVisor tier through the official SDK: a sandbox created with the
cove.io/isolation label runs under gVisor, and the toolbox API works on it as on
the crun tier (exec, code, files, sessions)."""

from __future__ import annotations

import os

import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, SessionExecuteRequest
from daytona.common.errors import DaytonaError

from cove.runner.oci import runsc

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not runsc.available(), reason="runsc (gVisor) is not installed"),
]
LABEL = "cove.io/isolation"
GVISOR_RELEASE = "4.4.0"  # what gVisor's kernel calls itself


@pytest.fixture
def sb(daytona: Daytona, sandboxes: list):
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(labels={LABEL: "gvisor", "t": "1"},
                                                             env_vars={"X": "42"}))  # fmt: skip
    sandboxes.append(sandbox)
    return sandbox


def test_a_labelled_sandbox_runs_under_gvisor(sb) -> None:  # noqa: ANN001
    assert sb.labels[LABEL] == "gvisor" and sb.labels["t"] == "1"
    assert _kernel(sb) == GVISOR_RELEASE != os.uname().release  # gVisor's kernel, not the host's
    who = sb.process.exec("id -un; echo $X; pwd")
    assert who.result.split() == ["daytona", "42", "/home/daytona"]


def test_exec_code_files_and_sessions_work_on_gvisor(sb) -> None:  # noqa: ANN001
    assert sb.process.exec("exit 3").exit_code == 3
    assert sb.process.code_run("print(6 * 7)").result.strip() == "42"
    sb.fs.upload_file(b"hello gvisor", "/home/daytona/f.txt")
    assert sb.fs.download_file("/home/daytona/f.txt") == b"hello gvisor"
    assert "f.txt" in [f.name for f in sb.fs.list_files("/home/daytona")]
    sb.process.create_session("s1")
    sb.process.execute_session_command("s1", SessionExecuteRequest(command="cd /tmp; Y=7"))
    got = sb.process.execute_session_command("s1", SessionExecuteRequest(command="echo $PWD $Y"))
    assert (got.exit_code, got.output.strip()) == (0, "/tmp 7")
    sb.process.delete_session("s1")
    with pytest.raises(DaytonaError, match="timeout"):
        sb.process.exec("sleep 30 & sleep 30", timeout=1)
    assert sb.process.exec("pgrep -c sleep || true").result.strip() == "0"  # all killed


def test_file_operations_and_a_users_symlink_on_gvisor(sb) -> None:  # noqa: ANN001
    """The agent walks a path one name at a time there too: every operation works in the
    user's own files, through its own links, and a link of the user to root's is refused
    (see ``test_a_users_symlinks_lend_it_no_root_power``)."""
    home = "/home/daytona"
    sb.process.exec(f"cd {home} && ln -s /etc/passwd planted && ln -s /etc etc && ln -s w link")
    sb.fs.create_folder("w/deep", "750")
    sb.fs.upload_file(b"one TODO\n", "link/deep/f.txt")
    sb.fs.set_file_permissions("link/deep/f.txt", mode="600")
    assert sb.fs.replace_in_files(["link/deep/f.txt"], "TODO", "DONE")[0].success
    sb.fs.move_files("link/deep/f.txt", "w/g.txt")
    got = sb.process.exec(f"stat -c '%U %a' {home}/w/deep {home}/w/g.txt; cat {home}/w/g.txt")
    assert got.result.split("\n")[:3] == ["daytona 750", "daytona 600", "one DONE"]
    for attempt in (lambda: sb.fs.upload_file(b"x", "planted"),
                    lambda: sb.fs.set_file_permissions("etc/shadow", mode="644"),
                    lambda: sb.fs.delete_file("etc/hostname")):  # fmt: skip
        with pytest.raises(DaytonaError, match="symbolic link of a user"):
            attempt()
    assert sb.process.exec("stat -c '%U %a' /etc/passwd /etc/shadow").result.split("\n")[:2] == [
        "root 644", "root 640"]
    sb.fs.delete_file("w", recursive=True)
    assert sb.process.exec(f"test -e {home}/w || echo gone").result.strip() == "gone"


def test_stop_start_keeps_the_tier_and_the_files(sb) -> None:  # noqa: ANN001
    sb.process.exec("echo kept > /home/daytona/k")
    sb.stop()
    sb.start()
    assert sb.labels[LABEL] == "gvisor"
    assert sb.process.exec("cat /home/daytona/k").result.strip() == "kept"
    assert _kernel(sb) == GVISOR_RELEASE


def _kernel(sb) -> str:  # noqa: ANN001
    return sb.process.exec("uname -r").result.strip()
