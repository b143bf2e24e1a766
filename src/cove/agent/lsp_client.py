"""One language server process, spoken to over its stdio with JSON-RPC 2.0 in LSP's
``Content-Length`` framing.

The server runs as the sandbox user in a cgroup of its own, so everything it
says is untrusted: a header block or a message over its bound ends the
connection, a request that is not answered in time fails, and what it asks of
the client (configuration, progress) gets an empty answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections import deque
from typing import Any

from . import confine, protocol, users
from .protocol import AgentError

MAX_HEADER = 8 * 1024
MAX_MESSAGE = 8 * 1024 * 1024
MAX_PENDING = 64
STDERR_TAIL = 2048
STOP_SECONDS = 3.0


class ServerGone(Exception):
    """The language server exited or broke the protocol."""


class LanguageServer:
    """A running language server: requests, notifications, and its end."""

    def __init__(self, proc: asyncio.subprocess.Process, group: confine.Group) -> None:
        self.proc = proc
        self.group = group
        self._next_id = 0
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._stderr: deque[bytes] = deque()
        self.capabilities: dict[str, Any] = {}
        self._tasks = [asyncio.ensure_future(self._read()),
                       asyncio.ensure_future(self._drain_stderr())]  # fmt: skip
        self.gone: str | None = None

    @classmethod
    async def spawn(cls, argv: list[str], user: users.User, cwd: str,
                    env: dict[str, str] | None) -> LanguageServer:  # fmt: skip
        """Start ``argv`` as ``user`` in ``cwd``."""
        group = confine.Group()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=MAX_HEADER,
                **users.spawn_kwargs(user, cwd, env, group))  # fmt: skip
        except BaseException:
            group.close()
            raise
        return cls(proc, group)

    async def request(self, method: str, params: Any, timeout: float) -> Any:
        """Send a request and wait for its result.

        Raises:
            AgentError: 400 if the server answers with an error; 502 if it exits or
                breaks the protocol; 504 if it does not answer within ``timeout`` seconds.
        """
        if self.gone is not None:
            raise _gone(self.gone)
        if len(self._pending) >= MAX_PENDING:
            raise AgentError(429, "TOO_MANY_REQUESTS", "too many language server requests")
        self._next_id += 1
        ident = self._next_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        try:
            await self._send({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AgentError(504, "LSP_TIMEOUT",
                             f"the language server did not answer {method} in {timeout:.0f} s"
                             ) from None  # fmt: skip
        finally:
            self._pending.pop(ident, None)

    async def notify(self, method: str, params: Any) -> None:
        if self.gone is not None:
            raise _gone(self.gone)
        await self._send({"jsonrpc": "2.0", "method": method, "params": params})

    async def stop(self) -> None:
        """Ask the server to shut down and exit; kill whatever is left after STOP_SECONDS."""
        if self.gone is None:
            with contextlib.suppress(AgentError, ServerGone, ConnectionError):
                await self.request("shutdown", None, STOP_SECONDS)
                await self.notify("exit", None)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), STOP_SECONDS)
        self.kill()

    def kill(self) -> None:
        """End the server and everything it started, now."""
        self._end("stopped")
        if not self.group.kill() and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        for task in self._tasks:
            task.cancel()
        self.group.close()

    async def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message, separators=(",", ":")).encode()
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
            await stdin.drain()
        except (ConnectionError, RuntimeError) as exc:
            self._end(f"its input is closed ({exc})")
            raise _gone(self.gone or "") from exc

    async def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        try:
            while True:
                message = await read_message(stdout)
                if isinstance(message, dict):
                    await self._dispatch(message)
        except (ServerGone, ConnectionError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError, ValueError) as exc:  # fmt: skip
            self._end(str(exc) or "it closed its output")

    async def _dispatch(self, message: dict[str, Any]) -> None:
        ident = message.get("id")
        if "method" in message:  # a request or notification of the server's
            if ident is not None:
                await self._answer(ident, message)
            return
        future = self._pending.get(ident) if isinstance(ident, int) else None
        if future is None or future.done():
            return
        error = message.get("error")
        if isinstance(error, dict):
            text = str(error.get("message", "error"))[:500]
            # the server refused the request (e.g. "No Project."): the caller's to fix
            future.set_exception(AgentError(400, "LSP_ERROR", f"language server: {text}"))
        else:
            future.set_result(message.get("result"))

    async def _answer(self, ident: Any, message: dict[str, Any]) -> None:
        """Answer what a server may ask of its client, with nothing."""
        result: Any = None
        params = message.get("params")
        if message.get("method") == "workspace/configuration" and isinstance(params, dict):
            items = params.get("items")
            result = [None] * min(len(items), 100) if isinstance(items, list) else []
        with contextlib.suppress(ServerGone):
            await self._send({"jsonrpc": "2.0", "id": ident, "result": result})

    async def _drain_stderr(self) -> None:
        stderr = self.proc.stderr
        assert stderr is not None
        size = 0
        while chunk := await stderr.read(4096):
            self._stderr.append(chunk)
            size += len(chunk)
            while size - len(self._stderr[0]) >= STDERR_TAIL:
                size -= len(self._stderr.popleft())

    def _end(self, why: str) -> None:
        if self.gone is not None:
            return
        tail = b"".join(self._stderr)[-STDERR_TAIL:].decode(errors="replace").strip()
        self.gone = why + (f"; its last words: {tail[-300:]}" if tail else "")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(_gone(self.gone))


def _gone(why: str) -> AgentError:
    return AgentError(502, "LSP_SERVER_GONE", f"the language server is not running: {why}")


async def read_message(stream: asyncio.StreamReader) -> Any:
    """One ``Content-Length``-framed JSON message.

    Raises:
        ServerGone: a header block or a message over its bound, or no length.
        asyncio.IncompleteReadError: the stream ended.
    """
    try:
        header = await stream.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as exc:
        raise ServerGone("a header block over its bound") from exc
    length = None
    for line in header.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None or not 0 <= length <= MAX_MESSAGE:
        raise ServerGone(f"a message of bad length ({length})")
    body = await stream.readexactly(length)
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ServerGone("a message that is not JSON") from exc


def path_of(uri: str, project: str) -> str:
    """The sandbox path a ``file://`` URI of the SDK names (relative ones below ``project``)."""
    path = uri.removeprefix("file://")
    if not path or "\0" in path:
        raise protocol.bad_request(f"bad document uri {uri!r}")
    return os.path.normpath(os.path.join(project, path))
