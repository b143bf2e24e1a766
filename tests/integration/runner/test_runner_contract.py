"""The Runner port's contract, held by the local runner over the real host runtime
(crun and gVisor) and over the fake one the unit tests use: the same calls give
the same answers, so what the unit tests prove with the fake holds for real."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator

import pytest

from cove.agent import protocol
from cove.agent.mux import Channel
from cove.core.agent_call import AgentCall
from cove.core.ports import ContainerSpec, ContainerStatus, NetworkPolicy, Resources, Runner
from cove.errors import CoveError, Unavailable
from cove.runner.fake import FakeRuntime
from cove.runner.layout import SandboxPaths
from cove.runner.local import LocalRunner
from cove.runner.oci.runtime import OciRuntime

C = ContainerStatus


@pytest.fixture(params=["fake", "crun", "gvisor"])
async def runner(request: pytest.FixtureRequest, runtime: OciRuntime) -> AsyncIterator[Runner]:
    host = FakeRuntime() if request.param == "fake" else runtime
    request.node.tier = "crun" if request.param == "fake" else request.param
    yield LocalRunner(host)


@pytest.fixture
async def spec(runner: LocalRunner, request: pytest.FixtureRequest) -> AsyncIterator[ContainerSpec]:
    sandbox_id = f"it-{uuid.uuid4().hex[:12]}"
    yield ContainerSpec(
        sandbox_id=sandbox_id, hostname="contract", snapshot="cove-default",
        resources=Resources(cpu=1, memory=1, disk=3), env={}, network=NetworkPolicy(),
        isolation=request.node.tier,
    )  # fmt: skip
    await runner.destroy(sandbox_id)


async def test_a_sandbox_goes_through_its_lifecycle(
    runner: LocalRunner, spec: ContainerSpec
) -> None:
    sid = spec.sandbox_id
    assert await runner.status(sid) is C.ABSENT
    assert runner.has_snapshot("cove-default") and not runner.has_snapshot("no-such-snapshot")
    await runner.create(spec)
    assert await runner.status(sid) is C.STOPPED and sid in await runner.list_ids()
    await runner.start(spec)
    assert await runner.status(sid) is C.RUNNING
    stats = await runner.stats(sid)
    assert stats.pids >= 1 and stats.memory_bytes >= 0
    await runner.pause(sid)
    assert await runner.status(sid) is C.PAUSED
    await runner.resume(sid)
    assert await runner.status(sid) is C.RUNNING
    await runner.stop(sid)
    await runner.stop(sid)  # idempotent
    assert await runner.status(sid) is C.STOPPED
    assert await runner.archive(sid) > 0
    assert await runner.status(sid) is C.ARCHIVED
    await runner.restore(spec)
    assert await runner.status(sid) is C.STOPPED
    await runner.destroy(sid)
    await runner.destroy(sid)  # idempotent
    assert await runner.status(sid) is C.ABSENT and sid not in await runner.list_ids()


async def test_what_cannot_be_done_is_an_error_and_leaves_nothing(
    runner: LocalRunner, spec: ContainerSpec
) -> None:
    sid = spec.sandbox_id
    with pytest.raises(CoveError):
        await runner.start(spec)  # never created
    with pytest.raises(CoveError):
        await runner.pause(sid)
    assert await runner.status(sid) is C.ABSENT and sid not in await runner.list_ids()
    with pytest.raises(Unavailable):
        await runner.open_agent(sid)
    assert await runner.preview_upstream(sid, 8080) is None


async def test_the_agent_of_a_running_sandbox_answers(
    runner: LocalRunner, spec: ContainerSpec
) -> None:
    if isinstance(runner.host, FakeRuntime):
        pytest.skip("the fake runtime has no agent unless a test gives it one")
    await runner.create(spec)
    await runner.start(spec)
    channel = Channel(*await asyncio.wait_for(runner.open_agent(spec.sandbox_id), 30))
    try:
        async with AgentCall(channel.open()) as call:
            await call.send({"op": "exec", "command": "echo contract", "user": "root",
                             "env": {}, "cwd": None, "timeout": 30, "separate": True})  # fmt: skip
            await asyncio.wait_for(call.accepted(), 30)
            out = b"".join([p async for k, p in call.frames() if k == protocol.STDOUT])
        assert out == b"contract\n" and call.result["exitCode"] == 0
    finally:
        await channel.close()
    upstream = await runner.preview_upstream(spec.sandbox_id, 3000)
    assert upstream is not None and upstream.startswith("http://") and upstream.endswith(":3000")


async def test_a_running_sandbox_is_adopted_under_a_new_name_user_and_env(
    runner: LocalRunner, spec: ContainerSpec
) -> None:
    """A warm pool's claim: what the start baked in becomes the claim's."""
    from dataclasses import replace

    await runner.create(spec)
    wanted = replace(spec, hostname="adopted-name", user="root", env={"CLAIM": "yes"},
                     network=NetworkPolicy(block_all=True))  # fmt: skip
    with pytest.raises(CoveError):
        await runner.adopt(wanted)  # not running
    await runner.start(spec)
    if spec.isolation == "gvisor":
        with pytest.raises(CoveError):  # pools keep crun sandboxes only
            await runner.adopt(wanted)
        return
    with pytest.raises(CoveError):  # the kernel's limit on hostnames: refused, not cut
        await runner.adopt(replace(wanted, hostname="x" * 65))
    await runner.adopt(wanted)
    if isinstance(runner.host, FakeRuntime):
        return

    async def run(*argv: str) -> str:
        done = await asyncio.to_thread(runner.host.exec, spec.sandbox_id, argv)
        return done.stdout.decode()

    assert await run("hostname") == "adopted-name\n"
    assert await run("cat", "/etc/hostname") == "adopted-name\n"
    assert "adopted-name" in await run("cat", "/etc/hosts")
    assert await run("id", "-un") == "root\n"  # the runtime's own execs: the claim's user
    settings = runner.host._settings  # type: ignore[attr-defined]
    pid_file = SandboxPaths.of(settings.data_dir, spec.sandbox_id).bundle / "init.pid"
    real = pid_file.read_text()
    pid_file.write_text("1")  # a pid that is not the sandbox's init: never renamed
    with pytest.raises(CoveError):
        await runner.adopt(replace(wanted, hostname="not-the-host"))
    assert socket.gethostname() != "not-the-host"
    pid_file.write_text(real)
    await runner.stop(spec.sandbox_id)
    with pytest.raises(CoveError):
        await runner.adopt(wanted)
