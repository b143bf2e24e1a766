"""The toolbox agent: init runs it, restarts it, and the server can reach it."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import time
from pathlib import Path

import pytest

from cove.errors import CoveError, Unavailable
from cove.runtime.oci import OciRuntime
from tests.integration.conftest import SandboxFactory
from tests.integration.runtime.util import init_pid, ok

pytestmark = pytest.mark.integration


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
    body = json.dumps(message).encode()
    sock.sendall(struct.pack(">cI", b"J", len(body)) + body)
    with sock.makefile("rb") as stream:
        kind, size = struct.unpack(">cI", stream.read(5))
        assert kind == b"J"
        return json.loads(stream.read(size))


def agent_host_pid(runtime: OciRuntime, sandbox_id: str) -> int:
    """Host pid of the sandbox's agent (init's only child)."""
    init = init_pid(runtime, sandbox_id)
    children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_agent_answers_and_is_restarted(runtime: OciRuntime, make_sandbox: SandboxFactory) -> None:
    box = make_sandbox()
    sid = box.sandbox_id
    with _connect(runtime, sid) as sock:
        reply = _request(sock, {"op": "no-such-op"})
    assert "ok" in reply  # a protocol answer (the op itself is refused)
    first = agent_host_pid(runtime, sid)
    os.kill(first, signal.SIGKILL)  # from the host: nothing in the sandbox can (test_escape)
    with _connect(runtime, sid) as sock:
        assert "ok" in _request(sock, {"op": "no-such-op"})
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
    assert not (upper / "dev").exists()


def sh_fails(runtime: OciRuntime, sandbox_id: str, script: str) -> bool:
    return runtime.exec(sandbox_id, ["sh", "-c", script], user="root").exit_code != 0
