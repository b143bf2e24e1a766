"""Toolbox agents started before their sandboxes (the host's side of
``cove/agent/prestart.py``, which says what such a process does and why).

A cold start hands a ready pre-started agent to the new sandbox instead of
letting init start one: the runtime moves it into init's cgroups, sends it the
order, and tells init the pid of the agent it became (the "p" go, see init.c),
which is init's child from then on. Anything that goes wrong on the way kills it
and falls back to init starting the agent, as before: a pre-started agent only
ever saves time. After each take a new one is started (``REFILL_DELAY`` later).
"""

from __future__ import annotations

import array
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cove.errors import RuntimeBackendError
from cove.runner.host import cgtree, proc
from cove.runner.host.waiting import readable

log = logging.getLogger(__name__)
REFILL_DELAY = 0.05  # s after a take (the new one loads at a lower priority)
HANDOVER_SECONDS = 2.0
REPLY_MAX = 512


class Prestarted:
    """One pre-started agent process and its order socket."""

    def __init__(self, command: Command) -> None:
        self.agent: int | None = None  # a pidfd of the agent it forked
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                command.argv, executable=command.executable, cwd=command.cwd, stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={"LANG": "C.UTF-8"},
                close_fds=True, start_new_session=True,
            )  # fmt: skip
        except OSError:
            self.control.close()
            raise
        finally:
            theirs.close()
        self._ready = False

    def ready(self) -> bool:
        """Whether it has loaded its modules (never blocks)."""
        if not self._ready and readable(self.control, 0):
            self._ready = self.control.recv(REPLY_MAX) == b"ready"
            if not self._ready:
                self.discard()
        return self._ready

    def hand_over(self, init_pid: int, group: str, order: dict[str, Any],
                  fds: Sequence[int]) -> int:  # fmt: skip
        """Make this process the agent of the sandbox whose init is ``init_pid``;
        returns the agent's pid in the sandbox. Call :meth:`run` once init knows it.

        Raises:
            RuntimeBackendError: it did not take; nothing of it is left running.
        """
        try:
            cgtree.join_like(group, init_pid, self.proc.pid)
            init = os.pidfd_open(init_pid)
            try:
                payload = json.dumps(order).encode()
                self.control.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                                  array.array("i", [init, *fds]))])  # fmt: skip
            finally:
                os.close(init)
            deadline = time.monotonic() + HANDOVER_SECONDS
            pid = None
            while self.agent is None or pid is None:  # (sent by two processes: any order)
                reply = self._reply(deadline)
                if reply.startswith(b"ok ") and pid is None:
                    pid = int(reply.split()[1])
                    if pid <= 1:
                        raise ValueError(f"agent pid {pid}")
                elif reply != b"forked" or self.agent is None:
                    raise RuntimeBackendError(f"pre-started agent: {reply[:200]!r}")
            proc.wait(self.proc, max(deadline - time.monotonic(), 0.01))
            return pid
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            self.discard()
            raise RuntimeBackendError(f"pre-started agent: {exc}") from exc
        except RuntimeBackendError:
            self.discard()
            raise

    def run(self) -> None:
        """The last word: the child becomes the agent (init knows its pid now)."""
        try:
            self.control.send(b"run")
        finally:
            self.control.close()
            self._close_agent()

    def _reply(self, deadline: float) -> bytes:
        if not readable(self.control, max(deadline - time.monotonic(), 0)):
            raise RuntimeBackendError("pre-started agent: no answer")
        fds = array.array("i")
        data, ancdata, _, _ = self.control.recvmsg(REPLY_MAX, socket.CMSG_LEN(fds.itemsize))
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
        for fd in fds:
            if self.agent is None and data == b"forked":
                self.agent = fd
            else:
                os.close(fd)
        return data

    def discard(self) -> None:
        """Kill it (and the agent it forked, if any) and forget it."""
        if self.agent is not None:
            try:
                signal.pidfd_send_signal(self.agent, signal.SIGKILL)
            except OSError:
                pass
        self._close_agent()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.control.close()
        self._ready = False

    def _close_agent(self) -> None:
        if self.agent is not None:
            os.close(self.agent)
            self.agent = None


class PrestartedAgents:
    """Keeps ``count`` pre-started agents ready (refilled after each take)."""

    def __init__(self, command: Command, count: int) -> None:
        self._command = command
        self._count = count
        self._lock = threading.Lock()
        self._spares: list[Prestarted] = []
        self._closed = False
        self._refill()

    def take(self) -> Prestarted | None:
        """A ready one, or None (the caller starts the agent the usual way)."""
        with self._lock:
            found = next((s for s in self._spares if s.ready()), None)
            if found is not None:
                self._spares.remove(found)
            for dead in [s for s in self._spares if s.proc.poll() is not None]:
                self._spares.remove(dead)
                dead.discard()
            short = not self._closed and len(self._spares) < self._count
        if short:  # (no thread when nothing left the pool)
            timer = threading.Timer(REFILL_DELAY, self._refill)
            timer.daemon = True
            timer.start()
        return found

    def wait_ready(self, timeout: float) -> bool:
        """Wait until one is ready (for benchmarks and tests); whether one is."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if any(s.ready() for s in self._spares):
                    return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)

    def _refill(self) -> None:
        with self._lock:
            while not self._closed and len(self._spares) < self._count:
                try:
                    self._spares.append(Prestarted(self._command))
                except OSError as exc:
                    log.warning("cannot pre-start a toolbox agent: %s", exc)
                    return

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spares, self._spares = self._spares, []
        for spare in spares:
            spare.discard()


@dataclass(frozen=True)
class Command:
    """How a pre-started agent is run: the packed runtime's loader, python and the
    script. Its command line is what the sandbox sees of the agent's: its first word
    as the agent init starts (``/dev/.cove/py/...``), the rest relative to ``cwd``,
    so that it names no host path."""

    executable: str
    argv: list[str]
    cwd: str | None = None

    @classmethod
    def of(cls, runtime_dir: Path, script: Path, shown_as: str, args: Sequence[str] = ()
           ) -> Command:  # fmt: skip
        """(``args``: the script's arguments, which name no host path either.)"""
        cwd = script.parent.parent

        def rel(path: Path) -> str:
            return os.path.relpath(path, cwd)

        lib = runtime_dir / "lib"
        return cls(str(lib / "ld.so"), [shown_as, "--library-path", rel(lib),
                                        rel(runtime_dir / "bin" / "python3"), "-I", "-S", "-B",
                                        rel(script), *args], str(cwd))  # fmt: skip
