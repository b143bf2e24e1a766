"""``cove sandbox ...`` as a user sees it: output, exit codes and errors."""

from __future__ import annotations

import getpass
import json
import time
from pathlib import Path

import pytest

from cove.cli import process
from tests.unit.cli.conftest import Cove

USER = getpass.getuser()


def _create(cove: Cove, *args: str) -> str:
    result = cove.ok("sandbox", "create", "--user", USER, *args)
    return result.stdout.strip()


def test_create_prints_the_id_of_a_started_sandbox_and_nothing_else(cove: Cove) -> None:
    result = cove.ok("sandbox", "create", "--user", USER, "--name", "web", "--label", "team=a",
                     "--env", "GREETING=a=b", "--cpu", "2", "--memory", "2", "--disk", "4",
                     "--auto-stop", "0")  # fmt: skip
    sandbox_id = result.stdout.strip()
    assert result.stderr == ""  # no progress on a stderr that is not a terminal
    shown = cove.json("sandbox", "info", "web")
    assert shown["id"] == sandbox_id and shown["state"] == "started"
    assert shown["labels"]["team"] == "a" and shown["env"] == {"GREETING": "a=b"}
    assert (shown["cpu"], shown["memory"], shown["disk"], shown["autoStopInterval"]) == (2, 2, 4, 0)


def test_create_json_is_the_apis_sandbox(cove: Cove) -> None:
    made = cove.json("sandbox", "create", "--user", USER)
    assert made["state"] == "started" and {"id", "toolboxProxyUrl", "autoStopInterval"} <= set(made)


def test_list_shows_a_table_filtered_by_label_and_state(cove: Cove) -> None:
    first = _create(cove, "--name", "first", "--label", "team=a")
    second = _create(cove, "--name", "second", "--label", "team=b")
    cove.ok("sandbox", "stop", second)
    table = cove.ok("sandbox", "list").stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "NAME", "STATE"]
    assert first in table and second in table
    by_label = cove.ok("sandbox", "list", "--label", "team=a").stdout
    assert first in by_label and second not in by_label
    stopped = cove.json("sandbox", "list", "--state", "stopped")
    assert [s["id"] for s in stopped] == [second]
    assert cove("sandbox", "list", "--state", "sleeping").exit_code == 2


def test_stop_start_archive_print_the_id_and_change_the_state(cove: Cove) -> None:
    sandbox_id = _create(cove)
    for action, state in (("stop", "stopped"), ("start", "started"), ("archive", "archived"),
                          ("start", "started")):  # fmt: skip
        assert cove.ok("sandbox", action, sandbox_id).stdout.strip() == sandbox_id
        assert cove.json("sandbox", "info", sandbox_id)["state"] == state


def test_info_table_names_the_fields(cove: Cove) -> None:
    sandbox_id = _create(cove, "--label", "team=[bold]a[/bold]")
    text = cove.ok("sandbox", "info", sandbox_id).stdout
    assert sandbox_id in text and "started" in text
    assert "team=[bold]a[/bold]" in text  # data is not rich markup


def test_delete_refuses_a_started_sandbox_without_force(cove: Cove) -> None:
    sandbox_id = _create(cove)
    refused = cove("sandbox", "delete", sandbox_id)
    assert refused.exit_code == 1
    assert "is started: stop it first or use --force" in refused.stderr
    assert cove.json("sandbox", "info", sandbox_id)["state"] == "started"
    assert cove.ok("sandbox", "delete", "--force", sandbox_id).stdout.strip() == sandbox_id
    gone = cove("sandbox", "info", sandbox_id)
    assert gone.exit_code == 1 and gone.stdout == ""
    assert gone.stderr.startswith("Error: ") and "not found" in gone.stderr.lower()
    assert len(gone.stderr.strip().splitlines()) == 1


def test_exec_prints_both_streams_and_exits_with_the_commands_code(cove: Cove) -> None:
    sandbox_id = _create(cove)
    sessions = f"/toolbox/{sandbox_id}/process/session"
    before = cove.app.get(sessions, headers={"Authorization": f"Bearer {cove.key}"}).json()
    result = cove(*["sandbox", "exec", sandbox_id, "--", "sh", "-c",
                    "echo out; echo err >&2; exit 3"])  # fmt: skip
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    line = cove("sandbox", "exec", sandbox_id, "--", "echo $((6 * 7)) | tr 4 x")
    assert (line.exit_code, line.stdout) == (0, "x2\n")
    words = cove("sandbox", "exec", sandbox_id, "--", "echo", "a  b", "$HOME;", "x")
    assert words.stdout == "a  b $HOME; x\n"
    after = cove.app.get(sessions, headers={"Authorization": f"Bearer {cove.key}"}).json()
    assert after == before  # each exec's session is gone


def test_exec_json(cove: Cove) -> None:
    sandbox_id = _create(cove)
    result = cove("sandbox", "exec", "--json", sandbox_id, "--", "sh", "-c", "echo hi; exit 4")
    assert result.exit_code == 4
    assert json.loads(result.stdout) == {"exitCode": 4, "stdout": "hi\n", "stderr": ""}


def test_exec_in_a_stopped_sandbox_is_an_error(cove: Cove) -> None:
    sandbox_id = _create(cove)
    cove.ok("sandbox", "stop", sandbox_id)
    result = cove("sandbox", "exec", sandbox_id, "--", "true")
    assert result.exit_code == 1 and result.stderr.startswith("Error: ")


def test_logs_of_a_sandbox_without_entrypoint_are_empty(cove: Cove) -> None:
    sandbox_id = _create(cove)
    assert cove.ok("sandbox", "logs", sandbox_id).stdout == ""
    assert cove.ok("sandbox", "logs", "--follow", sandbox_id).stdout == ""
    assert cove.json("sandbox", "logs", sandbox_id) == {"output": "", "stdout": "", "stderr": ""}


def test_bad_input_is_refused_before_or_by_the_server(cove: Cove) -> None:
    assert cove("sandbox", "create", "--memory", "0").exit_code == 2
    assert cove("sandbox", "create", "--env", "NOEQUALS").exit_code == 2
    result = cove("sandbox", "create", "--user", USER, "--name", "not a name!")
    assert result.exit_code == 1 and result.stderr.startswith("Error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert cove.json("sandbox", "list") == []  # nothing half-created


def test_ctrl_c_during_exec_ends_the_command_in_the_sandbox(
    cove: Cove, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sandbox_id = _create(cove)
    sessions = f"/toolbox/{sandbox_id}/process/session"
    before = cove.app.get(sessions, headers={"Authorization": f"Bearer {cove.key}"}).json()
    pidfile = tmp_path / "pid"

    def interrupt(stream: str, data: bytes) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(process, "print_chunk", interrupt)
    result = cove("sandbox", "exec", sandbox_id, "--", "sh", "-c",
                  f"echo $$ > {pidfile}; echo started; exec sleep 60")  # fmt: skip
    assert result.exit_code == 130
    after = cove.app.get(sessions, headers={"Authorization": f"Bearer {cove.key}"}).json()
    assert after == before  # its session is gone
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, "the command still runs"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether a process runs with this pid (a zombie does not count)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
