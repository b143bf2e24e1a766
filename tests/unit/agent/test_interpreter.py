"""The code interpreter through the API and the real agent (contexts run on the host's python3)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from cove.agent import interpreter
from tests.unit.agent.conftest import AUTH


@pytest.fixture(autouse=True)
def _kill_contexts(client: TestClient) -> Iterator[None]:
    yield
    interpreter.shutdown_all()


@dataclass
class Run:
    events: list[dict[str, Any]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # arrival, seconds after sending
    code: int | None = None
    reason: str = ""

    def text(self, kind: str = "stdout") -> str:
        return "".join(e["text"] for e in self.events if e["type"] == kind)

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "error"]


def run(client: TestClient, sid: str, code: str, **fields: Any) -> Run:
    result = Run()
    with client.websocket_connect(f"/toolbox/{sid}/process/interpreter/execute",
                                  headers=AUTH) as ws:
        started = time.monotonic()
        ws.send_text(json.dumps({"code": code, **fields}))
        while True:
            message = ws.receive()
            if message["type"] == "websocket.close":
                result.code, result.reason = message["code"], message.get("reason", "")
                return result
            result.events.append(json.loads(message["text"]))
            result.times.append(time.monotonic() - started)


def contexts_url(sid: str) -> str:
    return f"/toolbox/{sid}/process/interpreter/context"


def test_default_context_keeps_state_in_a_clean_main(client: TestClient, sandbox_id: str) -> None:
    first = run(client, sandbox_id, "x = 1\nimport sys")
    assert (first.events, first.code) == ([], 1000)
    second = run(client, sandbox_id, "print(x, __name__, sorted(globals()))")
    assert second.code == 1000 and not second.errors()
    assert second.text() == ("1 __main__ ['__builtins__', '__doc__', '__loader__', '__name__', "
                             "'__package__', '__spec__', 'sys', 'x']\n")


def test_output_streams_in_order_as_it_is_printed(client: TestClient, sandbox_id: str) -> None:
    r = run(client, sandbox_id, "import sys, time\nfor i in range(5):\n"
            "    print(i)\n    print('e', i, file=sys.stderr)\n    time.sleep(0.2)")
    assert r.code == 1000
    assert [(e["type"], e["text"]) for e in r.events] == [
        pair for i in range(5) for pair in (("stdout", f"{i}\n"), ("stderr", f"e {i}\n"))]
    first, last = r.times[0], r.times[-1]
    assert last - first > 0.6  # five prints 0.2 s apart arrived as they happened


def test_child_processes_output_and_env(client: TestClient, sandbox_id: str) -> None:
    r = run(client, sandbox_id, "import os\nos.system('echo from-shell $FOO; echo oops >&2')\n"
            "print(os.environ['SANDBOX_VAR'])", envs={"FOO": "bar"})
    assert r.text() == "from-shell bar\nyes\n" and r.text("stderr") == "oops\n"
    again = run(client, sandbox_id, "import os; print(os.environ.get('FOO'))")
    assert again.text() == "None\n"  # per-run envs last one run


def test_forked_children_print_and_do_not_hold_the_context(
    client: TestClient, sandbox_id: str
) -> None:
    r = run(client, sandbox_id, "import os, time\nr, w = os.pipe()\nif os.fork() == 0:\n"
            "    print('child')\n    os.write(w, b'.')\n    time.sleep(30)\n    os._exit(0)\n"
            "os.read(r, 1)\nprint('parent')\nos._exit(0)")
    assert "child\n" in r.text() and "parent\n" in r.text()
    assert r.errors()[0]["name"] == "InterpreterDied"  # seen at once, despite the child


def test_exception_has_name_value_and_the_users_traceback(
    client: TestClient, sandbox_id: str
) -> None:
    run(client, sandbox_id, "def check(n):\n    if n > 1:\n        raise ValueError(f'bad {n}')")
    r = run(client, sandbox_id, "print('before')\ncheck(2)")
    assert r.code == 1000 and r.text() == "before\n"
    [error] = r.errors()
    assert r.events[-1] is error
    assert (error["name"], error["value"]) == ("ValueError", "bad 2")
    tb = error["traceback"]
    assert tb.startswith("Traceback (most recent call last):\n")
    assert "line 2, in <module>" in tb and "check(2)" in tb
    assert "raise ValueError(f'bad {n}')" in tb and tb.endswith("ValueError: bad 2\n")
    assert "<stdin>" not in tb and "interpreter" not in tb  # no frame of the driver


def test_syntax_error_and_system_exit(client: TestClient, sandbox_id: str) -> None:
    [error] = run(client, sandbox_id, "x = (").errors()
    assert error["name"] == "SyntaxError" and "x = (" in error["traceback"]
    assert run(client, sandbox_id, "import sys; sys.exit()").events == []
    [exit_error] = run(client, sandbox_id, "raise SystemExit(3)").errors()
    assert (exit_error["name"], exit_error["value"]) == ("SystemExit", "3")
    assert run(client, sandbox_id, "print('still here')").text() == "still here\n"


def test_timeout_interrupts_and_the_context_keeps_its_state(
    client: TestClient, sandbox_id: str
) -> None:
    run(client, sandbox_id, "kept = 42")
    started = time.monotonic()
    r = run(client, sandbox_id, "import time\nprint('start')\nwhile True:\n    time.sleep(0.05)",
            timeout=1)
    assert r.code == 4008 and 1 <= time.monotonic() - started < 5
    assert r.text() == "start\n" and r.errors()[0]["name"] == "KeyboardInterrupt"
    assert run(client, sandbox_id, "print(kept)").text() == "42\n"


def test_code_that_ignores_the_interrupt_is_killed(client: TestClient, sandbox_id: str) -> None:
    run(client, sandbox_id, "kept = 42")
    started = time.monotonic()
    r = run(client, sandbox_id, "import time\nwhile True:\n    try:\n        time.sleep(10)\n"
            "    except KeyboardInterrupt:\n        print('ignored')", timeout=1)
    assert r.code == 4008 and time.monotonic() - started < 10
    assert r.errors()[-1]["name"] == "TimeoutError" and "lost" in r.errors()[-1]["value"]
    after = run(client, sandbox_id, "print(kept)")  # a fresh interpreter, without state
    assert after.errors()[0]["name"] == "NameError" and after.text("stderr") == ""


def test_a_dead_interpreter_is_reported_then_replaced(client: TestClient, sandbox_id: str) -> None:
    run(client, sandbox_id, "kept = 1")
    [error] = run(client, sandbox_id, "import os; os._exit(3)").errors()
    assert error["name"] == "InterpreterDied" and "exited with code 3" in error["value"]
    assert run(client, sandbox_id, "print('alive')").text() == "alive\n"


def test_death_between_runs_is_noticed_on_the_next_run(client: TestClient, sandbox_id: str) -> None:
    pid = int(run(client, sandbox_id, "import os; print(os.getpid())").text())
    os.kill(pid, 9)
    while Path(f"/proc/{pid}").exists() and " Z " not in Path(f"/proc/{pid}/stat").read_text():
        time.sleep(0.01)
    r = run(client, sandbox_id, "print('fresh')")
    assert r.text() == "fresh\n" and "killed by SIGKILL" in r.text("stderr")


def test_client_leaving_does_not_stop_the_run(client: TestClient, sandbox_id: str) -> None:
    with client.websocket_connect(f"/toolbox/{sandbox_id}/process/interpreter/execute",
                                  headers=AUTH) as ws:
        ws.send_text(json.dumps({"code": "import time\nfor i in range(3):\n    print(i)\n"
                                 "    time.sleep(0.2)\nfinished = True"}))
        assert json.loads(ws.receive_text())["text"] == "0\n"
    assert run(client, sandbox_id, "print(finished)").text() == "True\n"  # queued behind it


def test_background_output_after_a_run_does_not_wedge_the_context(
    client: TestClient, sandbox_id: str
) -> None:
    run(client, sandbox_id, "import threading\ndef spam():\n    for i in range(3000):\n"
        "        print('background', i)\nspammer = threading.Thread(target=spam)\n"
        "spammer.start()")
    r = run(client, sandbox_id, "spammer.join()\nprint('joined')")
    assert r.code == 1000 and r.text().endswith("joined\n")
    assert run(client, sandbox_id, "print('ok')").text() == "ok\n"


def test_contexts_are_isolated_and_listed(client: TestClient, sandbox_id: str,
                                          tmp_path: Path) -> None:
    r = client.post(contexts_url(sandbox_id), json={"cwd": str(tmp_path)}, headers=AUTH)
    assert r.status_code == 200
    ctx = r.json()
    assert set(ctx) == {"id", "active", "createdAt", "cwd", "language"}
    assert ctx["active"] is True and ctx["cwd"] == str(tmp_path) and ctx["language"] == "python"
    other = client.post(contexts_url(sandbox_id), json={}, headers=AUTH).json()
    assert other["cwd"] == os.path.expanduser("~")  # default: the user's home
    run(client, sandbox_id, "x = 'default'")
    run(client, sandbox_id, "x = 'mine'", contextId=ctx["id"])
    assert run(client, sandbox_id, "print(x)", contextId=ctx["id"]).text() == "mine\n"
    assert run(client, sandbox_id, "print(x)").text() == "default\n"
    [error] = run(client, sandbox_id, "print(x)", contextId=other["id"]).errors()
    assert error["name"] == "NameError"
    assert run(client, sandbox_id, "import os; print(os.getcwd())",
               contextId=ctx["id"]).text() == f"{tmp_path}\n"
    listed = client.get(contexts_url(sandbox_id), headers=AUTH).json()["contexts"]
    assert [c["id"] for c in listed] == [ctx["id"], other["id"]]  # not the default


def test_delete_context_kills_it_and_unknown_ones_are_404(
    client: TestClient, sandbox_id: str
) -> None:
    ctx = client.post(contexts_url(sandbox_id), json={}, headers=AUTH).json()
    r = run(client, sandbox_id, "import subprocess\np = subprocess.Popen(['sleep', '60'])\n"
            "print(p.pid)", contextId=ctx["id"])
    child = int(r.text())
    r = client.delete(f"{contexts_url(sandbox_id)}/{ctx['id']}", headers=AUTH)
    assert r.status_code == 200 and "message" in r.json()
    for _ in range(100):
        if not Path(f"/proc/{child}").exists() or " Z " in Path(f"/proc/{child}/stat").read_text():
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the context's child process survived its deletion")
    assert client.get(contexts_url(sandbox_id), headers=AUTH).json() == {"contexts": []}
    gone = client.delete(f"{contexts_url(sandbox_id)}/{ctx['id']}", headers=AUTH)
    assert gone.status_code == 404 and gone.json()["source"] == "DAYTONA_DAEMON"
    r = run(client, sandbox_id, "print(1)", contextId=ctx["id"])
    assert r.code == 1008 and "context not found" in r.reason
    assert client.delete(f"{contexts_url(sandbox_id)}/default", headers=AUTH).status_code == 400


def test_bad_requests(client: TestClient, sandbox_id: str, tmp_path: Path) -> None:
    r = client.post(contexts_url(sandbox_id), json={"cwd": str(tmp_path / "nope")}, headers=AUTH)
    assert r.status_code == 400 and "does not exist" in r.json()["message"]
    r = client.post(contexts_url(sandbox_id), json={"language": "ruby"}, headers=AUTH)
    assert r.status_code == 400
    with client.websocket_connect(f"/toolbox/{sandbox_id}/process/interpreter/execute",
                                  headers=AUTH) as ws:
        ws.send_text("not json")
        message = ws.receive()
    assert message["type"] == "websocket.close" and message["code"] == 1008
