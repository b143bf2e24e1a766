"""Terminals (PTYs) through the API and the real agent, in process."""

from __future__ import annotations

import asyncio
import base64
import getpass
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient, WebSocketDenialResponse

from cove.agent import protocol
from cove.agent.mux import Channel
from cove.core.agent_call import AgentCall
from tests.unit.agent.conftest import AUTH

EXIT_CONTROL = "X-Daytona-Pty-Exit-Control"
pytestmark = pytest.mark.timeout(60)


class Terminal:
    """One WebSocket client of a terminal, with what it received so far."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.output = b""
        self.controls: list[dict] = []
        self.closed: dict | None = None

    def receive(self) -> None:
        message = self.ws.receive()
        if message["type"] == "websocket.close":
            self.closed = message
        elif message.get("text") is not None:
            self.controls.append(json.loads(message["text"]))
        else:
            self.output += message["bytes"]

    def type(self, text: str) -> None:
        self.ws.send_bytes(text.encode())

    def expect(self, needle: str) -> str:
        """Read until ``needle`` appears in the output; the output up to there."""
        while needle.encode() not in self.output:
            assert self.closed is None, f"closed before {needle!r}: {self.output!r}"
            self.receive()
        seen, _, self.output = self.output.partition(needle.encode())
        return seen.decode(errors="replace")

    def until_closed(self) -> dict:
        while self.closed is None:
            self.receive()
        return self.closed


class Ptys:
    def __init__(self, client: TestClient, sandbox_id: str) -> None:
        self.client = client
        self.base = f"/toolbox/{sandbox_id}/process/pty"

    def create_connect(self, tid: str, *, envs: dict | None = None, **query: object):
        params = "&".join(f"{k}={v}" for k, v in {"id": tid, **query}.items())
        protocols = [EXIT_CONTROL]
        if envs:
            encoded = base64.urlsafe_b64encode(json.dumps(envs).encode()).rstrip(b"=").decode()
            protocols.append(f"X-Daytona-Pty-Envs~{encoded}")
        return self.client.websocket_connect(f"{self.base}/create-connect?{params}",
                                             headers=dict(AUTH), subprotocols=protocols)

    def connect(self, tid: str):
        # a copy: the test client adds the subprotocols to the headers it is given
        return self.client.websocket_connect(f"{self.base}/{tid}/connect", headers=dict(AUTH),
                                             subprotocols=[EXIT_CONTROL])

    def get(self, tid: str):
        return self.client.get(f"{self.base}/{tid}", headers=AUTH)


@pytest.fixture
def ptys(client: TestClient, tmp_path: Path) -> Iterator[Ptys]:
    home = tmp_path / "home"  # the host user's dotfiles stay out of the terminals
    home.mkdir()
    body = {"user": getpass.getuser(), "env": {"SANDBOX_VAR": "yes", "HOME": str(home)},
            "volumes": []}
    r = client.post("/api/sandbox", json=body, headers=AUTH)
    api = Ptys(client, r.json()["id"])
    yield api
    for info in client.get(api.base, headers=AUTH).json()["sessions"]:
        client.delete(f"{api.base}/{info['id']}", headers=AUTH)


def attached(ws) -> Terminal:
    term = Terminal(ws)
    assert ws.accepted_subprotocol == EXIT_CONTROL
    term.receive()
    assert term.controls == [{"type": "control", "status": "connected"}]
    return term


def test_create_connect_run_and_exit_code(ptys: Ptys) -> None:
    with ptys.create_connect("t1", cols=100, rows=30) as ws:
        term = attached(ws)
        term.type("echo $((6*7))\n")
        term.expect("42")
        term.type("exit 7\n")
        closed = term.until_closed()
    assert term.controls[-1] == {"type": "control", "status": "exited", "exitCode": 7}
    assert closed["code"] == 1000 and json.loads(closed["reason"]) == {"exitCode": 7}
    assert ptys.get("t1").status_code == 404  # an exited terminal is gone


def test_envs_cwd_and_controlling_terminal(ptys: Ptys, tmp_path: Path) -> None:
    with ptys.create_connect("t", envs={"GREETING": "hello-pty"}, cwd=tmp_path) as ws:
        term = attached(ws)
        term.type("echo \"[$GREETING|$SANDBOX_VAR|$TERM|$(pwd)]\"; tty\n")
        term.expect(f"[hello-pty|yes|xterm-256color|{tmp_path}]")
        term.expect("/dev/pts/")
        term.type("sleep 30; echo not-interrupted\n")
        time.sleep(0.3)
        started = time.monotonic()
        term.type("\x03")  # Ctrl-C reaches the foreground job
        time.sleep(0.3)
        term.type("echo inter''rupted\n")
        term.expect("interrupted")
        assert time.monotonic() - started < 10
    info = ptys.get("t").json()
    assert info["envs"] == {"GREETING": "hello-pty", "TERM": "xterm-256color"}
    assert info["cwd"] == str(tmp_path)


def test_list_get_resize(ptys: Ptys, client: TestClient) -> None:
    with ptys.create_connect("t", cols=80, rows=24) as ws:
        term = attached(ws)
        listed = client.get(ptys.base, headers=AUTH).json()["sessions"]
        assert [i["id"] for i in listed] == ["t"]
        info = listed[0]
        assert info["active"] is True and (info["cols"], info["rows"]) == (80, 24)
        assert info["lazyStart"] is False and info["createdAt"].endswith("Z")
        r = client.post(f"{ptys.base}/t/resize", json={"cols": 120, "rows": 40}, headers=AUTH)
        assert r.status_code == 200 and (r.json()["cols"], r.json()["rows"]) == (120, 40)
        term.type("stty size\n")
        term.expect("40 120")


def test_client_leaving_keeps_the_terminal(ptys: Ptys) -> None:
    with ptys.create_connect("t") as ws:
        term = attached(ws)
        term.type("export KEPT=yes; (sleep 0.5; echo while-$KEPT) &\n")
        term.expect("$KEPT) &")  # the echo of the typed line
    time.sleep(1)
    assert ptys.get("t").json()["active"] is True
    with ptys.connect("t") as ws:
        term = attached(ws)
        term.expect("while-yes")  # produced while nobody was attached
        term.type("echo kept=$KEPT\n")
        term.expect("kept=yes")


def test_kill_ends_attached_clients(ptys: Ptys, client: TestClient) -> None:
    with ptys.create_connect("t") as ws:
        term = attached(ws)
        assert client.delete(f"{ptys.base}/t", headers=AUTH).status_code == 200
        closed = term.until_closed()
    assert json.loads(closed["reason"]) == {"exitCode": 137}
    r = ptys.get("t")
    assert r.status_code == 404 and r.json()["code"] == "PROCESS_NOT_FOUND"


def test_rest_create_and_lazy_start(ptys: Ptys, client: TestClient) -> None:
    r = client.post(ptys.base, json={"id": "lazy", "lazyStart": True}, headers=AUTH)
    assert r.status_code == 201 and r.json() == {"sessionId": "lazy"}
    assert ptys.get("lazy").json()["active"] is False
    with ptys.connect("lazy") as ws:
        term = attached(ws)
        assert ptys.get("lazy").json()["active"] is True
        term.type("echo sta''rted\n")
        term.expect("started")


def test_errors(ptys: Ptys, client: TestClient) -> None:
    with ptys.create_connect("t") as ws:
        attached(ws)
        with pytest.raises(WebSocketDenialResponse) as dup:
            with ptys.create_connect("t"):
                pass
        assert dup.value.status_code == 409
    with pytest.raises(WebSocketDenialResponse) as missing:
        with ptys.connect("nope"):
            pass
    assert missing.value.status_code == 404
    assert missing.value.json()["code"] == "PROCESS_NOT_FOUND"
    r = client.post(f"{ptys.base}/nope/resize", json={"cols": 10, "rows": 10}, headers=AUTH)
    assert r.status_code == 404
    r = client.post(f"{ptys.base}/t/resize", json={"cols": 0, "rows": 10}, headers=AUTH)
    assert r.status_code == 400
    assert client.delete(f"{ptys.base}/nope", headers=AUTH).status_code == 404


async def test_agent_attach_takes_input_and_resize_frames(agent_path: str, tmp_path: Path) -> None:
    """The agent protocol itself: D frames are typed, a J frame resizes, the reply has the code."""
    reader, writer = await asyncio.open_unix_connection(agent_path)
    channel = Channel(reader, writer)
    async with AgentCall(channel.open()) as call:
        await call.send({"op": "pty_attach", "create": True, "id": "raw", "cols": 80, "rows": 24,
                         "user": getpass.getuser(), "env": {"HOME": str(tmp_path)}})
        await call.accepted()
        frames = call.frames()
        kind, payload = await anext(frames)
        assert kind == protocol.JSON and json.loads(payload)["event"] == "connected"
        await call.send({"op": "resize", "cols": 100, "rows": 33})
        await call.send_data(protocol.DATA, b"stty size; exit 5\n")
        output = b"".join([payload async for _, payload in frames])
    await channel.close()
    assert b"33 100" in output and call.result["exitCode"] == 5
