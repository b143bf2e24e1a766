"""An agent that exits when idle (COVE_AGENT_IDLE_SECONDS) and is started again by
init on the next connection: calls still answer, and nothing a user made is lost."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.core.config import Settings
from cove.core.toolbox import AgentLinks, agent_client
from cove.runner.local import LocalRunner
from cove.runner.oci.runtime import OciRuntime
from cove.schemas.toolbox_sessions import PtyCreate
from tests.integration.conftest import SandboxFactory, sandbox_factory
from tests.integration.runner.util import agent_pids, ok

pytestmark = pytest.mark.integration
IDLE = 1.0


@pytest.fixture(scope="module")
def idle_runtime(it_settings: Settings, default_rootfs: Path) -> OciRuntime:
    """A runtime (same data dir and cgroups) whose agents exit after IDLE seconds."""
    return OciRuntime(it_settings.model_copy(update={"agent_idle_seconds": IDLE}))


@pytest.fixture
def make_idle(idle_runtime: OciRuntime) -> Iterator[SandboxFactory]:
    with sandbox_factory(idle_runtime) as make:
        yield make


def agents(runtime: OciRuntime, sandbox_id: str) -> list[int]:
    """Host pid of the agent while it runs."""
    return agent_pids(runtime, sandbox_id)


def wait_for_idle_exit(runtime: OciRuntime, sandbox_id: str) -> None:
    deadline = time.monotonic() + 30
    while agents(runtime, sandbox_id):
        assert time.monotonic() < deadline, "the idle agent did not exit"
        time.sleep(0.1)


def client(runtime: OciRuntime, sandbox_id: str, links: AgentLinks):  # noqa: ANN201
    return agent_client(LocalRunner(runtime), sandbox_id, "daytona", {}, links)


def test_an_idle_agent_exits_and_the_next_call_starts_it(
    idle_runtime: OciRuntime, make_idle: SandboxFactory
) -> None:
    sid = make_idle().sandbox_id

    async def body() -> None:
        links = AgentLinks(LocalRunner(idle_runtime))
        agent = client(idle_runtime, sid, links)
        try:
            assert (await agent.exec("echo one")).output == "one\n"
            wait_for_idle_exit(idle_runtime, sid)
            # the same persistent channel: it was closed by the agent, made again
            assert (await agent.exec("echo two")).output == "two\n"
        finally:
            await links.close()

    asyncio.run(body())


def test_a_running_command_keeps_its_agent(
    idle_runtime: OciRuntime, make_idle: SandboxFactory
) -> None:
    sid = make_idle().sandbox_id
    # (only the agent that started the command can return its end: one that exited
    # meanwhile would have failed the call)
    assert ok(idle_runtime, sid, f"sleep {IDLE * 4}; echo done") == "done\n"


def test_sessions_terminals_and_contexts_keep_the_agent(
    idle_runtime: OciRuntime, make_idle: SandboxFactory
) -> None:
    sid = make_idle().sandbox_id

    async def body() -> None:
        links = AgentLinks(LocalRunner(idle_runtime))
        agent = client(idle_runtime, sid, links)
        try:
            await agent.session_create("kept")
            await agent.session_exec("kept", "export KEPT=session-state")
            await agent.pty_create(PtyCreate(id="kept-pty"))
            context = await agent.interpreter_create(None)
            async for _ in agent.interpreter_run("kept = 41", context.id, {}, 30):
                pass
            before = agents(idle_runtime, sid)
            await asyncio.sleep(IDLE * 5)
            assert agents(idle_runtime, sid) == before  # nothing of it was lost
            assert (await agent.session_exec("kept", "echo $KEPT")).stdout == "session-state\n"
            assert any(p.id == "kept-pty" for p in (await agent.pty_list()).sessions)
            out = [e async for e in agent.interpreter_run("print(kept + 1)", context.id, {}, 30)]
            assert any(getattr(e, "text", "") == "42\n" for e in out), out
        finally:
            await links.close()

    asyncio.run(body())


def test_an_agent_with_nothing_left_exits_after_its_session_is_deleted(
    idle_runtime: OciRuntime, make_idle: SandboxFactory
) -> None:
    sid = make_idle().sandbox_id

    async def body() -> None:
        links = AgentLinks(LocalRunner(idle_runtime))
        agent = client(idle_runtime, sid, links)
        try:
            await agent.session_create("brief")
            await agent.session_delete("brief")
            wait_for_idle_exit(idle_runtime, sid)
            assert (await agent.exec("echo back")).output == "back\n"
        finally:
            await links.close()

    asyncio.run(body())


def test_sandbox_root_cannot_stop_or_replace_the_lazily_started_agent(
    idle_runtime: OciRuntime, make_idle: SandboxFactory
) -> None:
    """Root of the sandbox kills whatever it can, again and again, while the agent is
    gone and while it starts again; it finds no socket leading to the agent."""
    sid = make_idle().sandbox_id
    assert "agent.sock" not in ok(idle_runtime, sid, "cat /proc/net/unix")
    # (init and the agent are the processes of an id the workload does not map: nobody)
    assert ok(idle_runtime, sid, "stat -c %u /proc/1") == "65534\n"
    hostile = ("while :; do kill -9 1; for p in /proc/[0-9]*; do [ $(stat -c %u $p) = 65534 ] "
               "&& kill -9 ${p#/proc/}; done; sleep 0.01; done")
    ok(idle_runtime, sid, f"setsid sh -c '{hostile}' >/dev/null 2>&1 </dev/null &")
    wait_for_idle_exit(idle_runtime, sid)
    for _ in range(3):
        assert ok(idle_runtime, sid, "echo alive") == "alive\n"
    assert "kill -9 1" in ok(idle_runtime, sid, "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
