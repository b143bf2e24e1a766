"""The agent's idle exit: it stops only when nothing of it is going or kept."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cove.agent import agent, mux, process
from tests.unit.agent.test_drain import SlowRequest, _run, _until


@pytest.fixture
def no_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent, "_has_children", lambda: False)  # (pytest's own are not ours)


async def test_what_a_handler_keeps_holds_the_agent_until_it_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_children: None
) -> None:
    kept = [True]
    monkeypatch.setattr(agent, "KEEP_ALIVE", [lambda: kept[0]])
    server = await agent.serve(str(tmp_path / "agent.sock"), check_peer=False)
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(agent.exit_when_idle(server, 0.1, stop))
    await asyncio.sleep(0.5)
    assert not stop.is_set() and server.is_serving()
    kept[0] = False
    await asyncio.wait_for(stop.wait(), 30)
    assert watcher.done() and not server.is_serving()


async def test_an_open_request_holds_the_agent_and_idle_exit_closes_connections(
    tmp_path: Path, no_children: None
) -> None:
    path = tmp_path / "agent.sock"
    server = await agent.serve(str(path), check_peer=False)
    reader, writer = await asyncio.open_unix_connection(str(path))
    client = mux.Channel(reader, writer)
    stream = client.open()
    await stream.send(b"J", b'{"op": "pipe_exec", "command": "cat", "user": "root", "env": {}}')
    assert (await stream.receive())[0] == b"A"  # accepted: cat runs, waiting for input
    assert agent.busy()
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(agent.exit_when_idle(server, 0.1, stop))
    await asyncio.sleep(0.5)
    assert not stop.is_set()
    stream.reset()  # the server abandons it: the command is killed, the agent idle
    await asyncio.wait_for(stop.wait(), 30)
    await asyncio.wait_for(client.closed.wait(), 30)  # the agent closed the connection
    assert watcher.done()


async def test_a_pipe_a_background_process_holds_keeps_the_agent(
    tmp_path: Path, no_children: None
) -> None:
    """A process a finished command left behind, holding the command's output pipe
    (whose output the agent reads and drops), keeps the agent from its idle exit (which
    would close the pipe under it) until it closes the pipe."""
    request = SlowRequest(0.0)
    await _run(request, "sleep 1.5 &")
    assert await _until(lambda: bool(process._discarded))
    server = await agent.serve(str(tmp_path / "agent.sock"), check_peer=False)
    stop = asyncio.Event()
    watcher = asyncio.ensure_future(agent.exit_when_idle(server, 0.1, stop))
    await asyncio.sleep(0.5)
    assert not stop.is_set() and server.is_serving()
    await asyncio.wait_for(stop.wait(), 30)  # (once sleep ended)
    assert watcher.done() and not process._discarded
