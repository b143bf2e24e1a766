# ruff: noqa: E501  (the seed program is quoted verbatim)
"""The seed workflow of daytona-api.md, verbatim, as a user's program."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.e2e.conftest import KEY, Server

pytestmark = pytest.mark.e2e

SEED = '''
import asyncio
from daytona import Daytona, DaytonaConfig, CreateSandboxFromSnapshotParams, ListSandboxesQuery, Resources, SessionExecuteRequest
daytona = Daytona(DaytonaConfig(api_key=KEY, api_url="http://127.0.0.1:3000/api"))
sb = daytona.create(CreateSandboxFromSnapshotParams(language="python", labels={"agent_id": "a1"}, auto_stop_interval=15, env_vars={"X": "1"}))
sb.fs.upload_file(b"print('hi')", "/home/daytona/agent.py")
r = sb.process.exec("python /home/daytona/agent.py"); print(r.exit_code, r.result)
sb.code_interpreter.run_code("x=1", on_stdout=print, on_stderr=print); sb.code_interpreter.run_code("print(x)")
sb.process.create_session("s1")
c = sb.process.execute_session_command("s1", SessionExecuteRequest(command="echo out; echo err >&2", run_async=True))
asyncio.run(sb.process.get_session_command_logs_async("s1", c.cmd_id, print, print))
list(daytona.list(ListSandboxesQuery(labels={"agent_id": "a1"})))
sb.stop(); sb.start(); sb.stop(); sb.archive(); sb.recover(); sb.resize(Resources(cpu=2, memory=4)); sb.delete()
'''


def test_seed_workflow_verbatim(server: Server) -> None:
    # The program exactly as written; only KEY and the server's address are filled in.
    program = f"KEY = {KEY!r}\n" + SEED.replace("http://127.0.0.1:3000", server.url)
    program += textwrap.dedent("""
        print("state-after-delete", [s.id for s in daytona.list()].count(sb.id))
        print("interpreter", sb.code_interpreter is not None)
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "0 hi"  # exec of the uploaded agent
    assert "out" in lines and "err" in lines  # streamed session logs, both channels
    assert lines[-2] == "state-after-delete 0"
