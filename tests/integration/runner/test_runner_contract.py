"""The Runner port's contract, held by the local runner over the real host runtime
(crun and gVisor) and over the fake one the unit tests use: the same calls give
the same answers, so what the unit tests prove with the fake holds for real."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

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
from cove.runner.remote import RemoteRunner
from cove.testing_remote import RunnerProcess, make_pki
from tests.leaks import leaks
from tests.nettools import FakeDns, sandbox_pool

C = ContainerStatus


@pytest.fixture(scope="module")
def runner_process(tmp_path_factory: pytest.TempPathFactory, fake_dns: FakeDns,
                   default_rootfs: Path) -> Iterator[RunnerProcess]:  # fmt: skip
    """A real ``cove runner`` on loopback (its own data dir), reached over mutual TLS."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    proc = RunnerProcess(tmp_path_factory.mktemp("cove-runner"), pki,
                         {"COVE_NETWORK_POOL": sandbox_pool(10),
                          "COVE_DNS_UPSTREAM": fake_dns.upstream})  # fmt: skip
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
        left = OciRuntime(proc.settings).list_ids()
        assert not left and not leaks(proc.data_dir, proc.cgroup_parent), left


@pytest.fixture(params=["fake", "crun", "gvisor", "remote"])
async def runner(request: pytest.FixtureRequest, runtime: OciRuntime) -> AsyncIterator[Runner]:
    if request.param == "remote":
        proc: RunnerProcess = request.getfixturevalue("runner_process")
        request.node.tier = "crun"
        remote = RemoteRunner.connect(proc.url, proc.pki.ca, *proc.pki.api)
        yield remote
        await remote.close()
        return
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
    if isinstance(getattr(runner, "host", None), FakeRuntime):
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
    if isinstance(runner, RemoteRunner):  # another host: ports are reached as streams
        assert await runner.preview_upstream(spec.sandbox_id, 3000) is None
    else:
        upstream = await runner.preview_upstream(spec.sandbox_id, 3000)
        assert upstream is not None and upstream.startswith("http://")
        assert upstream.endswith(":3000")


async def test_a_port_of_a_running_sandbox_is_a_byte_stream(
    runner: LocalRunner, spec: ContainerSpec
) -> None:
    if isinstance(getattr(runner, "host", None), FakeRuntime):
        pytest.skip("the fake runtime runs no process")
    with pytest.raises(Unavailable):
        await runner.open_port(spec.sandbox_id, 8080)  # not running
    await runner.create(spec)
    await runner.start(spec)
    await _exec(runner, spec.sandbox_id, "nohup python3 -m http.server 8080 "
                ">/dev/null 2>&1 & for i in $(seq 100); do "
                "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8080))' "
                "2>/dev/null && break; sleep 0.1; done")  # fmt: skip
    reader, writer = await runner.open_port(spec.sandbox_id, 8080)
    try:
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await writer.drain()
        reply = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    assert reply.startswith(b"HTTP/1.0 200") and b"Directory listing" in reply
    with pytest.raises(Unavailable):
        await runner.open_port(spec.sandbox_id, 8081)  # nothing listens there


async def _exec(runner: Runner, sandbox_id: str, command: str) -> bytes:
    channel = Channel(*await asyncio.wait_for(runner.open_agent(sandbox_id), 30))
    try:
        async with AgentCall(channel.open()) as call:
            await call.send({"op": "exec", "command": command, "user": "root",
                             "env": {}, "cwd": None, "timeout": 30, "separate": True})  # fmt: skip
            await asyncio.wait_for(call.accepted(), 30)
            out = b"".join([p async for k, p in call.frames() if k == protocol.STDOUT])
        assert call.result["exitCode"] == 0, out
        return out
    finally:
        await channel.close()



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
    host = runner.host if isinstance(runner, LocalRunner) else None
    if isinstance(host, FakeRuntime):
        return
    if host is None:  # a remote runner: what the sandbox shows, through its agent
        assert await _exec(runner, spec.sandbox_id, "hostname") == b"adopted-name\n"
        assert await _exec(runner, spec.sandbox_id, "cat /etc/hostname") == b"adopted-name\n"
        await runner.stop(spec.sandbox_id)
        with pytest.raises(CoveError):
            await runner.adopt(wanted)
        return

    async def run(*argv: str) -> str:
        done = await asyncio.to_thread(host.exec, spec.sandbox_id, argv)
        return done.stdout.decode()

    assert await run("hostname") == "adopted-name\n"
    assert await run("cat", "/etc/hostname") == "adopted-name\n"
    assert "adopted-name" in await run("cat", "/etc/hosts")
    assert await run("id", "-un") == "root\n"  # the runtime's own execs: the claim's user
    settings = host._settings
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
