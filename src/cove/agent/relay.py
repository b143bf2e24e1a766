"""Relays: ``exec`` answered without the agent on its way.

A command through the agent costs two wake-ups of a Python process on top of the
command itself: one to read the request and hand the order to the spare, one to
collect the output and the exit and send the reply. A *relay* talks to the server
itself: the server opens a second connection to the agent's socket whose first
frame is ``R`` (``{"user": ...}``), and the agent hands that connection to
``cove-init --relay`` (see init.c), spawned as a spare is. The relay joins the
cgroups every command joins, says it is ready, and then runs the server's plain
commands one after another: each in a spare (``cove-init --spare``) it starts ahead,
in a cgroup of its own that it makes below the agent's, which takes the user's ids,
user namespace and capabilities as the agent's spares do. It sends the output
(clipped as ``process.Clipped`` does) and the exit code straight to the server,
kills a command's cgroup past its timeout (or when the server hangs up), and
removes the cgroups of commands that are over. The agent only spawns it, and reaps
it; an idle relay exits after ``SPARE_SECONDS``.

What the agent would look up for a command is looked up when the relay is made
(the environment, the default working directory, the user's entry and groups); the
relay takes an order only while that still holds (``users.facts``,
``users.databases``: the user databases are the same files, home, shell and working
directory as they were) and while the agent keeps its control pipe open, which the
agent closes when the environment changes (``env_forget``) and when it exits idle.
Else it answers ``N`` and exits, and the server sends the command to the agent:
nothing ran, nothing runs twice.

The connection came from the server (the agent checked its peer before the first
frame). The relay runs as the agent does (root of the sandbox, the agent's
capabilities), so the sandbox's user cannot signal or trace it; its replies are as
untrusted on the server's side as the agent's (see ``cove.core.relay``).
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Any

from . import confine, protocol, spare, users

# How a relay kills a command's cgroup (see init.c): cgroup.kill, or round after round
# of SIGKILL to its processes; not the cgroup v1 freezer's way.
_KILL_MODES = ("kill", "loop")
SETUP_MAX = 1 << 20  # (init.c's RELAY_SETUP_MAX)
_SIZE = struct.Struct(">I")
_controls: dict[int, int] = {}  # relay pid -> the write end of its control pipe
_TASKS: set[asyncio.Task[None]] = set()


def hand_over(writer: asyncio.StreamWriter, payload: bytes) -> None:
    """Give the connection of ``writer`` (whose first frame, an ``R``, had ``payload``)
    to a new relay; close it when there can be none (no spares here: the gVisor tier,
    a unit test; an unknown user; user databases changed within the last moments),
    which the server takes as "not now"."""
    sock = writer.get_extra_info("socket")
    conn = os.dup(sock.fileno())  # (close-on-exec, as dup makes it)
    writer.transport.abort()  # the agent reads nothing more of it (the server sent nothing)
    try:
        _start(conn, payload)
    except (OSError, ValueError, protocol.AgentError, protocol.ProtocolError):
        pass
    finally:
        os.close(conn)


def pids() -> set[int]:
    """The relays alive (the agent's idle exit does not wait for them)."""
    return set(_controls)


def discard_all() -> None:
    """Let every relay that has no command yet go (the environment changed): a relay
    takes an order only while its control pipe is open."""
    for pid in list(_controls):
        _close_control(pid)


def _start(conn: int, payload: bytes) -> None:
    current = confine.CURRENT
    if not spare.ENABLED or spare.HELPER is None or current.kill_root is None \
            or current.kill_mode not in _KILL_MODES:
        return  # (without a cgroup per command, a timeout could not kill a whole tree)
    message = protocol.decode(payload)
    name = message.get("user")
    if name is not None and not isinstance(name, str):
        return
    user = users.lookup(name)
    setup = _setup(user)
    if setup is None:
        return
    control_r, control_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _spawn(conn, control_r)
    except BaseException:
        os.close(control_w)
        raise
    finally:
        os.close(control_r)
    _controls[pid] = control_w
    confine.RELAYS.add(str(pid))
    exited = spare.Exited(pid)
    framed = _SIZE.pack(len(setup)) + setup
    try:
        os.set_blocking(control_w, False)
        whole = os.write(control_w, framed) == len(framed)  # (a pipe takes 64 KiB at once)
    except OSError:
        whole = False
    if not whole:  # a setup larger than the pipe takes (a huge environment): no relay
        _close_control(pid)  # (it reads the end of its setup early, and exits)
    task = asyncio.ensure_future(_bury(pid, exited))
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


def _setup(user: users.User) -> bytes | None:
    """The relay's setup (see init.c), or None when a relay cannot stand in for the
    agent now."""
    facts = users.facts(user)
    databases = users.databases()
    if facts is None or databases is None:
        return None
    try:
        cwd = users.start_dir(user, None)
    except protocol.AgentError:
        return None
    env = users.environment(user)
    if any(not name or "=" in name or "\0" in name + value for name, value in env.items()):
        return None
    groups = [str(g) for g in user.groups()]
    fields = [str(user.uid), str(user.gid), str(len(groups)), *groups, cwd, *databases,
              str(len(facts)), *facts, str(int(protocol.SPARE_SECONDS)), str(len(env)),
              *(f"{name}={value}" for name, value in env.items())]  # fmt: skip
    if any("\0" in field for field in fields):
        return None
    setup = "".join(field + "\0" for field in fields).encode("utf-8", "surrogateescape")
    return setup if len(setup) <= SETUP_MAX else None


def _spawn(conn: int, control: int) -> int:
    """Start ``cove-init --relay`` with the connection, its control pipe, the root
    of per-command cgroups and the cgroups every command joins; only those
    descriptors are inherited."""
    assert spare.HELPER is not None
    current = confine.CURRENT
    userns = current.userns if current.userns is not None else -1
    root = current.kill_root
    assert root is not None
    passed = [conn, control, root, *current.join, *([userns] if userns >= 0 else [])]
    argv = [spare.HELPER, "--relay", str(conn), str(control), str(userns), str(root),
            ",".join(map(str, current.join)),
            ",".join(map(str, sorted(current.caps))) or "-"]  # fmt: skip
    actions: list[Any] = [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in passed]
    return os.posix_spawn(spare.HELPER, argv, {}, file_actions=actions)


async def _bury(pid: int, exited: spare.Exited) -> None:
    """Once the relay exited: the cgroups it made that are empty go (the others in
    a later sweep, once what runs in them is over)."""
    try:
        await exited.wait()
    finally:
        _close_control(pid)
        confine.RELAYS.discard(str(pid))
        confine.sweep()


def _close_control(pid: int) -> None:
    fd = _controls.pop(pid, None)
    if fd is not None:
        os.close(fd)
