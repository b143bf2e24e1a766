"""The toolbox agent: init runs it, restarts it, and the server can reach it."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time

import pytest

from cove.agent import protocol
from cove.errors import CoveError, Unavailable
from cove.runner.host import mounts, rootfs
from cove.runner.layout import SandboxPaths
from cove.runner.oci.runtime import OciRuntime
from tests.integration.conftest import SandboxFactory
from tests.integration.runner.util import (
    agent_pids,
    both_tiers,
    inside_as_host,
    ok,
    tier_of,
)

pytestmark = pytest.mark.integration
tier = both_tiers  # every test here runs on both isolation tiers


def _connect(runtime: OciRuntime, sandbox_id: str, within: float = 15.0) -> socket.socket:
    deadline = time.monotonic() + within
    while True:
        try:
            sock = runtime.agent_socket(sandbox_id)
            sock.setblocking(True)
            return sock
        except CoveError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _request(sock: socket.socket, message: dict) -> dict:
    """One request on stream 1 of a fresh connection; its final reply."""
    sock.sendall(protocol.frame(protocol.JSON, json.dumps(message).encode(), 1))
    with sock.makefile("rb") as stream:
        while True:
            kind, stream_id, size = protocol.HEADER.unpack(stream.read(protocol.HEADER.size))
            payload = stream.read(size)
            assert stream_id == 1
            if kind == protocol.JSON:
                return json.loads(payload)


def _ask_again(runtime: OciRuntime, sandbox_id: str, message: dict, within: float = 15.0
               ) -> dict:  # fmt: skip
    """A request to an agent that is being restarted. crun: the host's socket stays,
    the request waits in its queue. gVisor: the agent binds its socket anew, and
    a request in between may be refused, cut or never accepted (runsc keeps the
    dead agent's socket open a while): it is tried again."""
    deadline = time.monotonic() + within
    gvisor = tier_of(runtime, sandbox_id) == "gvisor"
    while True:
        try:
            with _connect(runtime, sandbox_id) as sock:
                sock.settimeout(2.0 if gvisor else None)
                return _request(sock, message)
        except (ConnectionError, TimeoutError, struct.error):
            if not gvisor or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def agent_host_pid(runtime: OciRuntime, sandbox_id: str) -> int:
    """Host pid of the sandbox's agent (init's child, or a pre-started agent that
    entered the sandbox). gVisor: the sentry runs it, it has no host pid: its pid
    inside, as gVisor itself reports it."""
    if tier_of(runtime, sandbox_id) == "gvisor":
        children = inside_as_host(runtime, sandbox_id, "cat /proc/1/task/1/children").split()
        assert len(children) == 1, children
        return int(children[0])
    agents = agent_pids(runtime, sandbox_id)
    assert len(agents) == 1, agents
    return agents[0]


def kill_agent(runtime: OciRuntime, sandbox_id: str) -> int:
    """SIGKILL the agent from the host (nothing in the sandbox can: test_escape)."""
    agent = agent_host_pid(runtime, sandbox_id)
    if tier_of(runtime, sandbox_id) == "gvisor":
        inside_as_host(runtime, sandbox_id, f"kill -9 {agent}")
    else:
        os.kill(agent, signal.SIGKILL)
    return agent


def test_agent_answers_and_is_restarted(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox()
    sid = box.sandbox_id
    with _connect(runtime, sid) as sock:
        reply = _request(sock, {"op": "no-such-op"})
    assert "ok" in reply  # a protocol answer (the op itself is refused)
    first = kill_agent(runtime, sid)
    assert "ok" in _ask_again(runtime, sid, {"op": "no-such-op"})
    assert agent_host_pid(runtime, sid) != first


def test_agent_socket_of_stopped_sandbox_fails(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox(start=False)
    with pytest.raises(Unavailable):
        runtime.agent_socket(box.sandbox_id)


def test_agent_is_not_in_the_users_rootfs(
    runtime: OciRuntime, make_sandbox: SandboxFactory
) -> None:
    box = make_sandbox()
    sid = box.sandbox_id
    assert "toolbox" in ok(runtime, sid, "ls /dev/.cove/pkg")
    assert sh_fails(runtime, sid, "touch /dev/.cove/pkg/toolbox/x")
    assert sh_fails(runtime, sid, "touch /dev/.cove/py/x")
    upper = runtime._settings.data_dir / "sandboxes" / sid / "disk" / "upper"
    if tier_of(runtime, sid) == "gvisor":
        # runsc's gofer makes an empty mount point for /dev/.cove in the rootfs (under
        # /dev, hidden by a tmpfs in the sandbox; those of the binds in it are in the
        # host's read-only /dev/.cove); nothing of the agent is in it, and it goes
        # when the sandbox stops
        placed = [str(p.relative_to(upper)) for p in (upper / "dev").rglob("*")]
        assert placed == ["dev/.cove"], placed
        runtime.stop(sid)
        paths = SandboxPaths.of(runtime._settings.data_dir, sid)
        rootfs.mount_disk(paths)  # (look at the stopped sandbox's layer)
        try:
            assert not (upper / "dev" / ".cove").exists()
        finally:
            mounts.unmount(paths.disk)
        return
    assert not (upper / "dev").exists()


def sh_fails(runtime: OciRuntime, sandbox_id: str, script: str) -> bool:
    return runtime.exec(sandbox_id, ["sh", "-c", script], user="root").exit_code != 0
