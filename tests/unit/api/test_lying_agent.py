"""A sandbox's agent is untrusted: whatever it answers (or does not), the server
answers a clear 502/503/504 in Daytona's envelope, never a 500, never a hang."""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable

import anyio
import pytest
from starlette.testclient import TestClient

from cove.agent import protocol
from cove.api import hangup
from cove.core import output, toolbox
from cove.core.charts import CHART_LIMIT
from tests.unit.api.conftest import AUTH, create_sandbox
from tests.unit.scripted import AnsweringRuntime

Liar = Callable[[socket.socket], None]


class LyingRuntime(AnsweringRuntime):
    """Sandboxes whose agent runs ``liar`` on each connection (after reading the request)."""

    liar: Liar = staticmethod(lambda sock: None)

    def answer(self, sock: socket.socket) -> None:
        self.liar(sock)


@pytest.fixture
def runtime() -> LyingRuntime:
    return LyingRuntime()


def _accepted_then(*frames: bytes) -> Liar:
    return lambda sock: sock.sendall(protocol.frame(protocol.ACCEPTED) + b"".join(frames))


LIES: dict[str, tuple[Liar, int]] = {
    "hangs up at once": (lambda sock: None, 502),
    "garbage instead of a frame": (lambda sock: sock.sendall(b"HTTP/1.1 200 OK\r\n\r\n"), 502),
    "a frame larger than allowed": (
        lambda sock: sock.sendall(struct.pack(">cII", b"J", 1, protocol.MAX_FRAME + 1)), 502),
    "accepts, then JSON that is not JSON": (
        _accepted_then(protocol.frame(protocol.JSON, b"{nope")), 502),
    "accepts, then a JSON list": (_accepted_then(protocol.frame(protocol.JSON, b"[1]")), 502),
    "a reply without the fields the route needs": (
        _accepted_then(protocol.json_frame({"ok": True})), 502),
    "a reply with mistyped fields": (
        _accepted_then(protocol.json_frame({"ok": True, "exitCode": "zero"})), 502),
    "an error reply claiming success status": (
        _accepted_then(protocol.json_frame({"ok": False, "status": 200, "code": "X",
                                            "message": "fine"})), 502),  # fmt: skip
    "an error reply claiming a server error": (
        _accepted_then(protocol.json_frame({"ok": False, "status": 500, "code": "X",
                                            "message": "boom"})), 502),  # fmt: skip
    "an error reply with mistyped fields": (
        _accepted_then(protocol.json_frame({"ok": False, "status": "404", "code": 1})), 502),
    "a truncated frame": (_accepted_then(struct.pack(">cII", b"J", 1, 100) + b"{"), 502),
    "never answers": (lambda sock: sock.recv(1), 504),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_agent_is_the_gateways_error(
    client: TestClient, runtime: LyingRuntime, monkeypatch: pytest.MonkeyPatch, lie: str
) -> None:
    liar, status = LIES[lie]
    runtime.liar = staticmethod(liar)
    monkeypatch.setattr(toolbox, "AGENT_ACCEPT_SECONDS", 0.5)
    sb = create_sandbox(client)
    for method, path, body in (
        ("POST", "/process/execute", {"command": "true"}),
        ("GET", "/user-home-dir", None),
        ("GET", "/env", None),
        ("GET", "/files/info?path=/etc", None),
        ("GET", "/git/status?path=/repo", None),
    ):
        r = client.request(method, f"/toolbox/{sb['id']}{path}", json=body, headers=AUTH)
        assert r.status_code == status, (lie, path, r.status_code, r.text)
        envelope = r.json()
        assert envelope["statusCode"] == status and envelope["source"] == "DAYTONA_DAEMON"


def test_an_unreachable_agent_is_unavailable(client: TestClient, runtime: LyingRuntime) -> None:
    sb = create_sandbox(client)
    runtime.agent_socket = _refuse  # type: ignore[method-assign]
    r = client.post(f"/toolbox/{sb['id']}/process/execute", json={"command": "true"},
                    headers=AUTH)  # fmt: skip
    assert r.status_code == 503
    assert r.json()["code"] == "SANDBOX_UNAVAILABLE"


def _refuse(sandbox_id: str) -> socket.socket:
    from cove.errors import Unavailable

    raise Unavailable("nothing listens")


def _chart(title: str, png: str = "") -> bytes:
    return json.dumps({"type": "chart", "value": {"type": "bar", "title": title,
                                                  "png": png}}).encode()  # fmt: skip


def test_charts_from_a_lying_agent_are_checked_and_bounded(
    client: TestClient, runtime: LyingRuntime
) -> None:
    """Chart frames are checked as strictly as the SDK reads them, and only CHART_LIMIT
    bytes of them are kept, whatever the agent sends; an execute ignores them."""
    big = "p" * (CHART_LIMIT - 60)  # (with its JSON around it, more than what is left)
    runtime.liar = staticmethod(_accepted_then(
        protocol.frame(protocol.CHART, _chart("small")),
        protocol.frame(protocol.CHART, b"{not json"),
        protocol.frame(protocol.CHART, b'{"type": "chart", "value": {"title": 7}}'),
        protocol.frame(protocol.CHART, _chart("over the budget", big)),
        protocol.frame(protocol.CHART, _chart("still fits")),
        protocol.frame(protocol.STDOUT, b"ok\n"),
        protocol.json_frame({"ok": True, "exitCode": 0}),
    ))  # fmt: skip
    sb = create_sandbox(client)
    r = client.post(f"/toolbox/{sb['id']}/process/code-run", json={"code": "x"}, headers=AUTH)
    assert r.status_code == 200
    assert r.json() == {"exitCode": 0, "result": "ok\n", "artifacts": {"charts": [
        {"type": "bar", "title": "small", "png": ""},
        {"type": "bar", "title": "still fits", "png": ""}]}}  # fmt: skip
    r = client.post(f"/toolbox/{sb['id']}/process/execute", json={"command": "x"}, headers=AUTH)
    assert r.json() == {"exitCode": 0, "result": "ok\n"}


def test_an_interpreter_run_whose_agent_is_silent_ends_when_its_client_leaves(
    client: TestClient, runtime: LyingRuntime
) -> None:
    """An interpreter run without a timeout, whose agent accepts it and then says
    nothing: once the WebSocket client has left, the server ends the request and its
    call to the agent (it does not wait, a task and a connection held, for an output
    that may never come)."""
    released = threading.Event()

    def silent(sock: socket.socket) -> None:
        sock.sendall(protocol.frame(protocol.ACCEPTED))
        sock.recv(65536)  # the server ends the call (or hangs up)
        released.set()

    path = f"/toolbox/{create_sandbox(client)['id']}/process/interpreter/execute"
    runtime.liar = staticmethod(silent)
    scope = {"type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"),
                         (b"authorization", AUTH["Authorization"].encode())],
             "client": ("10.9.9.9", 1234), "server": ("testserver", 80),
             "subprotocols": []}  # fmt: skip
    frames = [{"type": "websocket.connect"},
              {"type": "websocket.receive", "text": json.dumps({"code": "x", "timeout": 0})}]
    sent: list[dict] = []

    async def attack() -> None:
        left = anyio.Event()

        async def receive() -> dict:
            if frames:
                return frames.pop(0)
            await left.wait()
            return {"type": "websocket.disconnect", "code": 1001}

        async def send(message: dict) -> None:
            sent.append(message)

        with anyio.fail_after(10):  # the request ends (the app returns)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(client.app, scope, receive, send)
                while not sent:  # accepted; the run asked of the agent
                    await anyio.sleep(0.02)
                await anyio.sleep(0.2)
                left.set()

    client.portal.call(attack)  # type: ignore[union-attr]
    assert sent[0]["type"] == "websocket.accept"
    assert released.wait(5)


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/process/session/s1", b""),
    ("GET", "/computeruse/recordings/r1/download", b""),
    ("POST", "/computeruse/mouse/move", b'{"x": 1, "y": 1}'),
    ("GET", "/process/pty", b"a body no route reads"),
    ("POST", "/process/execute", b'{"command": "true"}'),  # (cove.api.fastpath)
])
def test_a_call_whose_agent_is_silent_ends_when_its_client_leaves(
    client: TestClient, runtime: LyingRuntime, method: str, path: str, body: bytes
) -> None:
    """An agent that accepts a request and then says nothing: once the HTTP client has
    hung up, the server ends the request and its call to the agent (it does not hold
    a task and an agent request, until the sandbox stops, for every call a client
    sent and dropped), whether the request had a body or not."""
    released = threading.Event()

    def silent(sock: socket.socket) -> None:
        sock.sendall(protocol.frame(protocol.ACCEPTED))
        sock.recv(65536)  # the server ends the call (or hangs up)
        released.set()

    path = f"/toolbox/{create_sandbox(client)['id']}{path}"
    runtime.liar = staticmethod(silent)
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"authorization", AUTH["Authorization"].encode())],
             "client": ("10.9.9.9", 1234), "server": ("testserver", 80)}  # fmt: skip
    sent: list[dict] = []

    async def attack() -> None:
        left = anyio.Event()
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        with anyio.fail_after(10):  # the request ends (the app returns)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(client.app, scope, receive, send)
                await anyio.sleep(0.5)  # the agent accepted the call and is silent
                left.set()

    client.portal.call(attack)  # type: ignore[union-attr]
    assert released.wait(5)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499


def _chatty(first: dict, released: threading.Event) -> Liar:
    """An agent that answers ``first``, then sends output (within its window) and waits
    for the server to end the call."""

    def chatty(sock: socket.socket) -> None:
        sock.sendall(protocol.frame(protocol.ACCEPTED) + protocol.json_frame(first))
        for _ in range(6):
            sock.sendall(protocol.frame(protocol.DATA, b"y" * 65536)
                         + protocol.frame(protocol.STDOUT, b"y" * 65536))
        sock.recv(65536)  # the server ends the call (or hangs up)
        released.set()

    return chatty


@pytest.mark.parametrize(("scope_type", "path", "first"), [
    ("websocket", "/process/session/s1/command/c1/logs?follow=true",
     {"event": "command", "id": "c1", "command": "yes", "exitCode": None}),
    ("http", "/files/bulk-download", {"file": "/big", "size": None}),
])
def test_a_client_that_takes_nothing_is_let_go(
    client: TestClient, runtime: LyingRuntime, monkeypatch: pytest.MonkeyPatch,
    scope_type: str, path: str, first: dict,
) -> None:  # fmt: skip
    """A client that stops reading (a TCP window of zero) while its stream's output
    comes: the server's send to it waits for ever (uvicorn's keepalive gives up on a
    WebSocket without ending it, and no sandbox's stop or deletion reaches a send).
    After ``SEND_SECONDS`` without taking anything it is gone: the relay or download
    ends, and its call to the agent with it (whose window of output the server held)."""
    monkeypatch.setattr(hangup, "SEND_SECONDS", 0.5)
    released = threading.Event()
    runtime.liar = staticmethod(_chatty(first, released))
    path = f"/toolbox/{create_sandbox(client)['id']}{path}"
    route, _, query = path.partition("?")
    body = json.dumps({"paths": ["/big"]}).encode()
    scope = {"type": scope_type, "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": route, "raw_path": route.encode(),
             "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"authorization", AUTH["Authorization"].encode())],
             "client": ("10.9.9.9", 1234), "server": ("testserver", 80),
             "subprotocols": []}  # fmt: skip
    sent: list[dict] = []

    async def attack() -> None:
        messages = [{"type": "websocket.connect"} if scope_type == "websocket"
                    else {"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: dict) -> None:
            sent.append(message)
            if message["type"] in ("websocket.send", "http.response.body"):
                await anyio.sleep_forever()  # (the client's window is full)

        with anyio.fail_after(10):  # the request ends (the app returns)
            await client.app(scope, receive, send)

    client.portal.call(attack)  # type: ignore[union-attr]
    assert sent[0]["type"] in ("websocket.accept", "http.response.start")
    assert released.wait(5)


def test_a_client_that_takes_nothing_of_a_large_answer_holds_little_of_it(
    client: TestClient, runtime: LyingRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An execute whose output is COVE_OUTPUT_LIMIT bytes of control characters answers
    ~6 times that in JSON (each one ``\\u0001``). uvicorn writes a body it is given into
    its transport's buffer at once, waiting only before a write while the buffer is
    full: given the answer whole, the server kept all of it (25 MB) for a client that
    never reads, for as long as that client kept its connection (past any keep-alive
    timeout or the sandbox's deletion), one such answer per connection. The answer now
    goes in pieces, each waiting for the client to take the last: it holds about one
    piece, and lets the client go after ``SEND_SECONDS``."""
    monkeypatch.setattr(hangup, "SEND_SECONDS", 0.5)
    chunk = b"\x01" * 262144

    def printer(sock: socket.socket) -> None:
        sock.sendall(protocol.frame(protocol.ACCEPTED))
        for _ in range(output.DEFAULT_LIMIT // len(chunk)):
            sock.sendall(protocol.frame(protocol.STDOUT, chunk))
        sock.sendall(protocol.json_frame({"ok": True, "exitCode": 0}))
        sock.recv(1)

    runtime.liar = staticmethod(printer)
    path = f"/toolbox/{create_sandbox(client)['id']}/process/execute"
    body = b'{"command": "x"}'
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode()),
                         (b"authorization", AUTH["Authorization"].encode())],
             "client": ("10.9.9.9", 1234), "server": ("testserver", 80)}  # fmt: skip
    buffered: list[int] = [0]

    async def attack() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def send(message: dict) -> None:  # (as uvicorn's, to a client reading nothing)
            if buffered[0] > 65536:
                await anyio.sleep_forever()  # (its transport's writing is paused)
            buffered[0] += len(message.get("body", b""))

        with anyio.fail_after(10):  # the request ends (the app returns)
            await client.app(scope, receive, send)

    client.portal.call(attack)  # type: ignore[union-attr]
    assert 0 < buffered[0] <= 4 * 65536
