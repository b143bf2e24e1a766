"""The typed agent client checks every reply: a reply or event of the wrong shape is
the agent's failure (a 502 AGENT_ERROR), never a crash of the server or a value
passed on unchecked; well-formed replies come back as typed values."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from cove.agent import protocol
from cove.core.agent_client import AgentClient
from cove.core.agent_types import ExecResult, FileData, FileEnd, FileStart, RunEnded
from cove.core.toolbox import agent_client
from cove.errors import ToolboxError
from cove.runner.local import LocalRunner
from cove.schemas.toolbox_git import GitCommitRequest
from tests.unit.scripted import AnsweringRuntime

J, D, OUT = protocol.JSON, protocol.DATA, protocol.STDOUT
DEEP = b"[" * 100_000 + b"]" * 100_000  # (Python's parser raises RecursionError on it)


def ok(**fields: Any) -> tuple[bytes, dict[str, Any]]:
    return J, {"ok": True, **fields}


class ScriptedRuntime(AnsweringRuntime):
    """Sandboxes whose agent accepts the request, sends ``script``, then reads until the
    server hangs up."""

    script: list[tuple[bytes, Any]] = []

    def answer(self, sock: socket.socket) -> None:
        frames = [protocol.frame(protocol.ACCEPTED)]
        for kind, body in self.script:
            payload = protocol.encode(body) if isinstance(body, dict) else body
            frames.append(protocol.frame(kind, payload))
        sock.sendall(b"".join(frames))
        while sock.recv(65536):
            pass


@pytest.fixture
def runtime() -> ScriptedRuntime:
    return ScriptedRuntime()


@pytest.fixture
def agent(runtime: ScriptedRuntime) -> AgentClient:
    return agent_client(LocalRunner(runtime), "sb", "daytona", {"A": "1"})


async def _drain(events: Any) -> list[Any]:
    return [event async for event in events]


async def _upload(agent: AgentClient) -> int:
    upload = await agent.write_file("/f")
    await upload.send(b"data")
    return await upload.finish()


async def _follow(agent: AgentClient) -> list[Any]:
    async with agent.session_follow("s", "c", follow=True) as output:
        return await _drain(output)


async def _pty(agent: AgentClient) -> list[bytes]:
    async with agent.pty_attach("t") as pty:
        return await _drain(pty.output())


Call = Callable[[AgentClient], Awaitable[Any]]
BAD: dict[str, tuple[Call, list[tuple[bytes, Any]]]] = {
    "exec: no exit code": (lambda a: a.exec("true"), [ok()]),
    "exec: a mistyped exit code": (lambda a: a.exec("true"), [ok(exitCode="zero")]),
    "exec: a reply nested past the parser's depth": (lambda a: a.exec("true"), [(J, DEEP)]),
    "info: missing fields": (lambda a: a.info(), [ok(home="/root")]),
    "info: a mistyped environment": (
        lambda a: a.info(), [ok(home="/", workDir="/", env=["A"], version="1")]),
    "file info: a mistyped file": (lambda a: a.file_info("/x"), [ok(file={"name": 1})]),
    "listing: a mistyped entry": (
        lambda a: _drain(a.list_files("/")), [(J, {"items": [{"name": 3}]}), ok()]),
    "listing: a batch nested past the parser's depth": (
        lambda a: _drain(a.list_files("/")), [(J, b'{"items":' + DEEP + b"}"), ok()]),
    "search: a non-string name": (
        lambda a: _drain(a.search_files("/", "*")), [(J, {"items": [1]}), ok()]),
    "replace: results not a list": (
        lambda a: a.replace_in_files(["/x"], "a", "b"), [ok(results="all")]),
    "read: a mistyped file header": (
        lambda a: _drain(a.read_files(["/x"])), [(J, {"file": 5}), ok()]),
    "read: a negative size": (
        lambda a: _drain(a.read_files(["/x"])), [(J, {"file": "/x", "size": -1}), ok()]),
    "read: a size past any file's": (
        lambda a: _drain(a.read_files(["/x"])), [(J, {"file": "/x", "size": 2**64}), ok()]),
    "read: a mistyped file error": (
        lambda a: _drain(a.read_files(["/x"])), [(J, {"error": {"status": "x"}, "path": "/x"}),
                                                 ok()]),  # fmt: skip
    "upload: no ready": (_upload, [(D, b"x"), ok(bytes=4)]),
    "upload: a mistyped size": (_upload, [(J, {"ready": True}), ok(bytes="four")]),
    "git status: a mistyped status": (lambda a: a.git_status("/r"), [ok(status={"ahead": 1})]),
    "git commit: no hash": (
        lambda a: a.git_commit(GitCommitRequest(path="/r", message="m", author="a",
                                                email="e")), [ok()]),  # fmt: skip
    "git branches: not a list": (
        lambda a: a.git_branches("/r"), [ok(branches="main", current="main")]),
    "session exec: a mistyped command id": (
        lambda a: a.session_exec("s", "ls"), [ok(cmdId=1, exitCode=0)]),
    "session list: mistyped sessions": (lambda a: a.session_list(), [ok(sessions=[{"x": 1}])]),
    "session follow: no command event": (_follow, [ok(exitCode=0)]),
    "pty attach: output before attaching": (_pty, [(D, b"$ "), ok(exitCode=0)]),
    "pty attach: a mistyped exit code": (_pty, [(J, {"event": "connected"}), ok(exitCode="x")]),
    "pty get: missing fields": (lambda a: a.pty_get("t"), [ok(id="t")]),
    "interpreter run: an unknown event": (
        lambda a: _drain(a.interpreter_run("1", None, {}, None)), [(J, {"type": "bogus"}),
                                                                   ok(outcome="completed")]),
    "interpreter list: mistyped contexts": (
        lambda a: a.interpreter_list(), [ok(contexts=[{"id": 1}])]),
}


@pytest.mark.parametrize("case", sorted(BAD))
async def test_a_malformed_reply_is_the_agents_error(
    agent: AgentClient, runtime: ScriptedRuntime, case: str
) -> None:
    call, runtime.script = BAD[case]
    with pytest.raises(ToolboxError) as caught:
        await call(agent)
    assert (caught.value.status_code, caught.value.code) == (502, "AGENT_ERROR"), case
    assert caught.value.source == "DAYTONA_DAEMON"


async def test_a_refusal_keeps_the_agents_status(
    agent: AgentClient, runtime: ScriptedRuntime
) -> None:
    runtime.script = [(J, {"ok": False, "status": 404, "code": "NOT_FOUND", "message": "gone"})]
    with pytest.raises(ToolboxError) as caught:
        await agent.file_info("/x")
    assert (caught.value.status_code, caught.value.code, caught.value.message) == (
        404, "NOT_FOUND", "gone")


async def test_well_formed_replies_are_typed_values(
    agent: AgentClient, runtime: ScriptedRuntime
) -> None:
    runtime.script = [(OUT, b"hi\n"), (protocol.STDERR, b"oops\n"), ok(exitCode=3)]
    assert await agent.exec("x") == ExecResult(3, "hi\noops\n")
    runtime.script = [(J, {"file": "/a", "size": 2}), (D, b"ab"), (protocol.END, b""), ok()]
    assert await _drain(agent.read_files(["/a"])) == [FileStart("/a", 2), FileData(b"ab"),
                                                      FileEnd()]  # fmt: skip
    runtime.script = [(J, {"type": "stdout", "text": "1\n"}), ok(outcome="timeout")]
    events = await _drain(agent.interpreter_run("print(1)", None, {}, 5))
    assert events[0].text == "1\n" and events[-1] == RunEnded(timed_out=True)
    runtime.script = [(J, {"ready": True}), ok(bytes=4)]
    assert await _upload(agent) == 4


async def _stalls(gaps: list[float]) -> None:
    """Record how long the event loop keeps a 10 ms timer waiting."""
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(0.01)
        gaps.append(loop.time() - start - 0.01)


async def test_a_reply_of_countless_values_does_not_hold_the_server(
    agent: AgentClient, runtime: ScriptedRuntime
) -> None:
    """The server decodes the agent's JSON on the event loop every sandbox shares: a
    frame of tiny values (MAX_FRAME bytes of them took seconds and hundreds of MB) is
    the agent's error, refused before it is decoded."""
    values = b"[]," * ((protocol.MAX_FRAME - 100) // 3)
    runtime.script = [(J, b'{"ok":true,"home":"/","workDir":"/","env":{},"version":"1",'
                          b'"x":[' + values + b"0]}")]  # fmt: skip
    gaps: list[float] = []
    watch = asyncio.ensure_future(_stalls(gaps))
    try:
        with pytest.raises(ToolboxError) as caught:
            await agent.info()
    finally:
        watch.cancel()
    assert (caught.value.status_code, caught.value.code) == (502, "AGENT_ERROR")
    assert max(gaps) < 0.5, max(gaps)


async def test_text_full_of_commas_is_no_count_of_values(
    agent: AgentClient, runtime: ScriptedRuntime
) -> None:
    """Only a frame's structure counts: a string of a million commas and colons (a
    command's CSV output, a listing's names) is one value."""
    text = '\\",:{[' * 200_000
    runtime.script = [(J, json.dumps({"ok": True, "home": text, "workDir": "/", "env": {},
                                      "version": "1"}).encode())]  # fmt: skip
    assert (await agent.info()).home == text


async def test_a_reply_after_countless_frames_is_the_agents_error(
    agent: AgentClient, runtime: ScriptedRuntime
) -> None:
    """A request answered in one piece (its agent sends nothing before the reply): a
    lying agent that sends frames first, endless ones, does not keep the server reading
    them (the HTTP client may be long gone); the first one fails the request."""
    runtime.script = [(OUT, b"")] * 2_000_000 + [ok(home="/", workDir="/", env={}, version="1")]
    with pytest.raises(ToolboxError) as caught:
        await asyncio.wait_for(agent.info(), 5)
    assert (caught.value.status_code, caught.value.code) == (502, "AGENT_ERROR")
