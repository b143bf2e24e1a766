"""``POST .../process/execute`` taken the short way (``cove.api.fastpath``) answers
exactly as the FastAPI route does: each request below is sent both ways, to the same
server and sandbox, and the answers compared (status, body but its timestamp, the
headers a client reads). The short way is really taken: FastAPI solves no
dependency for the calls it serves, and their latency is still counted by route.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from typing import Any

import fastapi.routing
import pytest
from click.testing import CliRunner

from cove.api.fastpath import FastExecute
from cove.cli.main import main
from tests.unit.agent.conftest import AUTH, running_agent, served

JSON = {"Content-Type": "application/json"}
# name: (body bytes, extra headers, query, whose key: ours/none/wrong/other/readonly)
CASES: dict[str, tuple[bytes, dict[str, str], str, str]] = {
    "exit code and output": (b'{"command": "echo hi; echo err >&2; exit 3"}', JSON, "", "ours"),
    "cwd and env": (b'{"command": "echo $A; pwd", "cwd": "/tmp", "envs": {"A": "x"}}',
                    JSON, "", "ours"),
    "unicode output": (b'{"command": "printf \'\\\\303\\\\251 \\\\001\'"}', JSON, "",
                       "ours"),
    "timeout": (b'{"command": "sleep 5", "timeout": 1}', JSON, "", "ours"),
    "missing cwd": (b'{"command": "true", "cwd": "/no/such/dir"}', JSON, "", "ours"),
    "not JSON": (b'{"command": ', JSON, "", "ours"),
    "not JSON, no key": (b"{", JSON, "", "none"),
    "empty body": (b"", JSON, "", "ours"),
    "nested too deep": (b"[" * 100_000 + b"]" * 100_000, JSON, "", "ours"),
    "not UTF-8": (b'{"command": "\xff"}', JSON, "", "ours"),
    "a huge number": (b'{"command": "true", "timeout": ' + b"9" * 5000 + b"}", JSON, "", "ours"),
    "a list": (b'["true"]', JSON, "", "ours"),
    "no command": (b"{}", JSON, "", "ours"),
    "command not text": (b'{"command": 5}', JSON, "", "ours"),
    "negative timeout": (b'{"command": "true", "timeout": -1}', JSON, "", "ours"),
    "float timeout": (b'{"command": "true", "timeout": 1.5}', JSON, "", "ours"),
    "NUL in command": (b'{"command": "echo \\u0000"}', JSON, "", "ours"),
    "bad body, no key": (b"{}", JSON, "", "none"),
    "text/plain": (b'{"command": "echo plain"}', {"Content-Type": "text/plain"}, "", "ours"),
    "no content type": (b'{"command": "echo bare"}', {}, "", "ours"),
    "charset": (b'{"command": "echo cs"}', {"Content-Type": "application/json; charset=utf-8"},
                "", "ours"),
    "query string": (b'{"command": "echo q"}', JSON, "a=1&a=2", "ours"),
    "no key": (b'{"command": "true"}', JSON, "", "none"),
    "wrong key": (b'{"command": "true"}', JSON, "", "wrong"),
    "another organization's key": (b'{"command": "true"}', JSON, "", "other"),
    "a key that may not write": (b'{"command": "true"}', JSON, "", "readonly"),
    "unknown sandbox": (b'{"command": "true"}', JSON, "", "ours"),
}
# The requests the short way serves itself (the others go to FastAPI).
SERVED = ("exit code and output", "cwd and env", "unicode output", "timeout", "missing cwd",
          "no key", "wrong key", "another organization's key",
          "a key that may not write", "unknown sandbox")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One server (with its in-process agent), a sandbox, and the keys of the cases."""
    tmp_path = tmp_path_factory.mktemp("fast")
    with running_agent(tmp_path) as agent_path, \
            served(tmp_path, agent_path, metrics_token="mt") as client:
        r = client.post("/api/sandbox", json={"user": getpass.getuser(), "volumes": []},
                        headers=AUTH)  # fmt: skip
        assert r.status_code == 200, r.text
        other = CliRunner().invoke(main, ["keys", "create", "--org", "other", "--data-dir",
                                          str(tmp_path / "data")]).output.strip()  # fmt: skip
        readonly = client.post("/api/api-keys", json={"name": "ro", "permissions": []},
                               headers=AUTH).json()["value"]  # fmt: skip
        keys = {"ours": AUTH, "none": {}, "wrong": {"Authorization": "Bearer nope"},
                "other": {"Authorization": f"Bearer {other}"},
                "readonly": {"Authorization": f"Bearer {readonly}"}}  # fmt: skip
        yield {"client": client, "sandbox": r.json()["id"], "keys": keys}


@pytest.fixture
def solved(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times FastAPI solved a route's dependencies."""
    calls: list[int] = []
    real = fastapi.routing.solve_dependencies

    async def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await real(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return calls


def _send(world: dict[str, Any], case: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    body, headers, query, whose = CASES[case]
    sandbox = "no-such-sandbox" if case == "unknown sandbox" else world["sandbox"]
    url = f"/toolbox/{sandbox}/process/execute" + (f"?{query}" if query else "")
    r = world["client"].post(url, content=body, headers={**headers, **world["keys"][whose]})
    answer = r.json()
    answer.pop("timestamp", None)
    seen = {name: r.headers.get(name, "") for name in ("content-type", "cache-control")}
    seen["x-request-id"] = "set" if r.headers.get("x-request-id") else ""
    return r.status_code, answer, seen


@pytest.mark.parametrize("case", list(CASES))
def test_the_short_way_answers_as_the_route_does(
    world: dict[str, Any], case: str, solved: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    short = _send(world, case)
    short_solved = len(solved)
    with monkeypatch.context() as patch:
        patch.setattr(FastExecute, "serves", staticmethod(lambda scope: False))
        routed = _send(world, case)
    assert short == routed
    if case in SERVED:
        assert short_solved == 0, "the short way handed a call it serves to FastAPI"
        assert len(solved) > short_solved  # (and FastAPI's route is counted)


def test_the_answers_are_what_a_user_expects(world: dict[str, Any]) -> None:
    """(So the comparison above compares answers that matter.)"""
    assert _send(world, "exit code and output")[:2] == (
        200, {"exitCode": 3, "result": "hi\nerr\n"})
    assert _send(world, "cwd and env")[1] == {"exitCode": 0, "result": "x\n/tmp\n"}
    assert _send(world, "unicode output")[1]["result"] == "é \x01"
    assert _send(world, "timeout")[:2][0] == 408
    assert _send(world, "no key")[0] == 401
    assert _send(world, "another organization's key")[0] == 404
    assert _send(world, "a key that may not write")[0] == 403
    assert _send(world, "not JSON")[0] == 400
    assert _send(world, "NUL in command")[0] == 400
    assert _send(world, "nested too deep")[0] == 400


def test_latency_of_the_short_way_is_counted_by_route(world: dict[str, Any]) -> None:
    def counted() -> float:
        text = world["client"].get("/metrics", headers={"Authorization": "Bearer mt"}).text
        found = re.search(r'cove_http_request_duration_seconds_count\{route="/toolbox/'
                          r'\{sandbox_id\}/process/execute",status="2xx"\} (\S+)', text)
        return float(found.group(1)) if found else 0.0

    before = counted()
    assert _send(world, "cwd and env")[0] == 200
    assert counted() == before + 1
