"""Fake runtimes whose sandboxes have a scripted toolbox agent (unit tests)."""

from __future__ import annotations

import json
import shlex
import socket
import threading

from cove.agent import protocol
from cove.runner.fake import FakeRuntime


class AnsweringRuntime(FakeRuntime):
    """Sandboxes whose agent reads the request, then runs :meth:`answer` on the
    connection (whatever a test's agent says, true or not), until it hangs up."""

    def agent_socket(self, sandbox_id: str) -> socket.socket:
        ours, theirs = socket.socketpair()
        threading.Thread(target=self._serve, args=(theirs,), daemon=True).start()
        return ours

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            try:
                header = sock.recv(protocol.HEADER.size, socket.MSG_WAITALL)
                sock.recv(protocol.HEADER.unpack(header)[2], socket.MSG_WAITALL)
                self.answer(sock)
            except OSError:
                pass

    def answer(self, sock: socket.socket) -> None:
        raise NotImplementedError


class ScriptedRuntime(FakeRuntime):
    """Its sandboxes' agent prints ``out:<last line of the command>``; a command
    containing ``fail`` exits 2. Every exec is recorded as (sandbox, argv, env, cwd)."""

    def __init__(self) -> None:
        super().__init__()
        self.execs: list[tuple[str, tuple[str, ...], dict[str, str], str | None]] = []

    def agent_socket(self, sandbox_id: str) -> socket.socket:
        ours, theirs = socket.socketpair()
        threading.Thread(target=self._agent, args=(sandbox_id, theirs), daemon=True).start()
        return ours

    def _agent(self, sandbox_id: str, sock: socket.socket) -> None:
        with sock, sock.makefile("rb") as stream:
            kind, _stream, size = protocol.HEADER.unpack(stream.read(protocol.HEADER.size))
            message = json.loads(stream.read(size))
            if message.get("op") == "ping":  # a warm pool keeps its waiting agents up
                sock.sendall(protocol.json_frame({"ok": True}))
                return
            assert kind == protocol.JSON and message["user"] == "root"
            argv = tuple(shlex.split(message["command"]))
            self.execs.append((sandbox_id, argv, dict(message["env"] or {}), message["cwd"]))
            printed = f"out:{argv[-1].splitlines()[-1]}\n".encode()
            reply = {"ok": True, "exitCode": 2 if "fail" in argv[-1] else 0}
            sock.sendall(protocol.frame(protocol.ACCEPTED)
                         + protocol.frame(protocol.STDOUT, printed) + protocol.json_frame(reply))
