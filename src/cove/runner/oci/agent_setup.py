"""The toolbox agent of a sandbox: how init runs it, and how the server reaches it.

The agent (``cove.agent``) runs on a Python runtime packed from the host's
(``cove.runner.oci.pyrt``), both bind-mounted read-only under ``/dev/.cove``.

Its channel is a Unix socket the runtime binds on the host, in the sandbox's
directory (``agent.sock``), listens on, and hands to the container's init as a
descriptor; init passes it on to every agent it starts. Nothing in the sandbox
can see that path or hold that socket, so nothing can take the agent's place,
and the server reaches the agent with a plain ``connect`` (no namespace to
join, no process to start), also after a restart of the server.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cove.agent import protocol
from cove.errors import Busy, RuntimeBackendError, Unavailable
from cove.runner.host.waiting import readable
from cove.runner.oci.prestarted import Command

PKG_MOUNT = "/dev/.cove/pkg/toolbox"
BACKLOG = 128
_SUN_PATH_MAX = 107
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgentSetup:
    """What the container needs to run the agent."""

    argv: list[str]
    binds: dict[str, Path] = field(default_factory=dict)


@functools.lru_cache(maxsize=8)
def cached_setup(data_dir: Path) -> AgentSetup | None:
    """:func:`agent_setup`, once per data dir; None when ``cove.agent`` is absent."""
    try:
        return agent_setup(data_dir)
    except ImportError:
        log.warning("cove.agent is not installed: sandboxes run without agent")
        return None


def agent_setup(data_dir: Path) -> AgentSetup:
    """Pack the Python runtime if needed and describe the agent's command and mounts.

    Raises:
        RuntimeBackendError: the runtime cannot be packed.
    """
    import cove.agent
    from cove.runner.oci import pyrt

    source = Path(cove.agent.__file__).resolve().parent
    runtime_dir = pyrt.ensure_python_runtime(data_dir)
    package = pyrt.compiled_package(data_dir, source, runtime_dir) / source.name
    return AgentSetup(pyrt.argv(), {pyrt.MOUNT: runtime_dir, PKG_MOUNT: package})


def prestart_command(agent: AgentSetup) -> Command:
    """How the host runs a pre-started agent (``cove/agent/prestart.py``) of ``agent``."""
    from cove.runner.oci import pyrt

    package = agent.binds[PKG_MOUNT]
    return Command.of(agent.binds[pyrt.MOUNT], package / "prestart.py", agent.argv[0],
                      args=[pyrt.MOUNT, PKG_MOUNT])  # (as the sandbox sees them)


def listen(path: Path) -> socket.socket:
    """A new listening socket bound at ``path`` (replacing a stale one), mode 0600.

    Raises:
        RuntimeBackendError: it cannot be bound.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with _short(path) as name:
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
            sock.bind(name)
            os.chmod(name, 0o600)
        sock.listen(BACKLOG)
        return sock
    except OSError as exc:
        sock.close()
        raise RuntimeBackendError(f"cannot listen at {path}: {exc.strerror}") from exc


def connect(path: Path) -> socket.socket:
    """A non-blocking stream socket connected to the agent listening at ``path``, which
    must be the socket itself: on the gVisor tier its directory is the agent's uid's,
    and a symlink a process of the sandbox left there (to another sandbox's agent,
    say) is not followed.

    Raises:
        Busy: its accept queue is full right now.
        Unavailable: nothing listens (the sandbox does not run), or not a socket.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                         | socket.SOCK_CLOEXEC)  # fmt: skip
    fd = -1
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(errno.ENOTSOCK, "not a socket")
        sock.connect(f"/proc/self/fd/{fd}")  # (that very socket, whatever its path's length)
        return sock
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EAGAIN:
            raise Busy("the sandbox's toolbox agent accepts no more requests now") from exc
        raise Unavailable(f"the sandbox's toolbox agent cannot be reached ({exc.strerror}); "
                          "is the sandbox running?") from exc  # fmt: skip
    finally:
        if fd >= 0:
            os.close(fd)


def wait_ready(path: Path, timeout: float, *, alive: Callable[[], bool] | None = None) -> None:
    """Return once the agent listening at ``path`` answers a ``ping``.

    The socket accepts connections before the agent runs (init inherits it, already
    listening), so a connect proves nothing: the ping waits in its queue until the
    agent has started and loaded its handlers, and its reply is the readiness
    signal. The ping asks for a spare process (``cove.agent.spare``), readied as it
    is answered: the first command does not wait on a cgroup migration either. No
    polling on the crun tier; on the gVisor tier (the agent binds the socket itself)
    connecting is retried until the socket appears.

    Args:
        path: the agent's socket.
        timeout: seconds until the agent is given up on.
        alive: checked while waiting (every 0.2 s); False ends the wait at once.

    Raises:
        RuntimeBackendError: no answer within ``timeout``, or ``alive`` said no.
    """
    deadline = time.monotonic() + timeout
    sock = _connect_by(path, deadline, alive)
    try:
        sock.setblocking(True)
        sock.sendall(protocol.json_frame({"op": "ping", "spare": True}))
        _await_reply(sock, deadline, alive)
    except OSError as exc:
        raise RuntimeBackendError(f"the toolbox agent hung up at start ({exc})") from exc
    finally:
        sock.close()


def _connect_by(path: Path, deadline: float, alive: Callable[[], bool] | None) -> socket.socket:
    while True:
        try:
            return connect(path)
        except (Busy, Unavailable) as exc:
            if time.monotonic() > deadline or (alive is not None and not alive()):
                raise RuntimeBackendError(f"the toolbox agent did not start: {exc.message}"
                                          ) from exc  # fmt: skip
            time.sleep(0.005)


def _await_reply(sock: socket.socket, deadline: float, alive: Callable[[], bool] | None) -> None:
    """Read frames until the JSON reply of stream 1 (the agent's first frames may be
    ``A`` and window updates)."""
    buffer = b""
    while True:
        while len(buffer) >= protocol.HEADER.size:
            kind, _stream, size = protocol.HEADER.unpack_from(buffer)
            if size > protocol.MAX_FRAME:
                raise RuntimeBackendError("the toolbox agent broke the protocol at start")
            if len(buffer) < protocol.HEADER.size + size:
                break
            if kind == protocol.JSON:
                return
            buffer = buffer[protocol.HEADER.size + size:]
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeBackendError("the toolbox agent did not answer in time")
        if not readable(sock, min(left, 0.2)):
            if alive is not None and not alive():
                raise RuntimeBackendError("the sandbox's init exited before its agent answered")
            continue
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeBackendError("the toolbox agent hung up at start")
        buffer += chunk


class _short:
    """``path`` as a name that fits a socket address (through /proc/self/fd)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = -1

    def __enter__(self) -> str:
        name = str(self._path)
        if len(name.encode()) <= _SUN_PATH_MAX:
            return name
        self._fd = os.open(self._path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self._fd}/{self._path.name}"

    def __exit__(self, *exc: object) -> None:
        if self._fd >= 0:
            os.close(self._fd)
