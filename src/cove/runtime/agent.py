"""The toolbox agent of a sandbox: how init runs it, and how the server reaches it.

The agent (``cove.toolbox``) runs on a Python runtime packed from the host's
(``cove.runtime.pyrt``), both bind-mounted read-only under ``/dev/.cove``; it
listens on an abstract Unix socket, which lives in the sandbox's network
namespace. The server connects from a short-lived thread that joins that
namespace only to create and connect the socket.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cove.errors import RuntimeBackendError

PKG_MOUNT = "/dev/.cove/pkg/toolbox"
log = logging.getLogger(__name__)
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


@dataclass(frozen=True)
class AgentSetup:
    """What the container needs to run the agent."""

    argv: list[str]
    binds: dict[str, Path] = field(default_factory=dict)


@functools.lru_cache(maxsize=8)
def cached_setup(data_dir: Path) -> AgentSetup | None:
    """:func:`agent_setup`, once per data dir; None when ``cove.toolbox`` is absent."""
    try:
        return agent_setup(data_dir)
    except ImportError:
        log.warning("cove.toolbox is not installed: sandboxes run without agent")
        return None


def agent_setup(data_dir: Path) -> AgentSetup:
    """Pack the Python runtime if needed and describe the agent's command and mounts.

    Raises:
        RuntimeBackendError: the runtime cannot be packed.
    """
    import cove.toolbox
    from cove.runtime import pyrt

    package = Path(cove.toolbox.__file__).resolve().parent
    runtime_dir = pyrt.ensure_python_runtime(data_dir)
    return AgentSetup(pyrt.argv(), {pyrt.MOUNT: runtime_dir, PKG_MOUNT: package})


def connect(init_pid: int) -> socket.socket:
    """A stream socket connected to the agent in the network namespace of ``init_pid``.

    Raises:
        RuntimeBackendError: the namespace cannot be joined or the agent does not answer.
    """
    from cove.toolbox.protocol import SOCKET_NAME

    result: list[socket.socket | BaseException] = []
    worker = threading.Thread(target=_connect_in, args=(init_pid, SOCKET_NAME, result))
    worker.start()
    worker.join()
    outcome = result[0]
    if isinstance(outcome, BaseException):
        raise RuntimeBackendError(f"toolbox agent unreachable: {outcome}") from outcome
    return outcome


def _connect_in(pid: int, name: bytes, result: list[socket.socket | BaseException]) -> None:
    """Thread body: join the netns (this thread only; it ends right after), connect."""
    try:
        pidfd = os.pidfd_open(pid)
        try:
            if _libc.setns(pidfd, _CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns: {os.strerror(err)}")
        finally:
            os.close(pidfd)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(name)
        except BaseException:
            sock.close()
            raise
        result.append(sock)
    except BaseException as exc:  # handed to the caller's thread
        result.append(exc)
