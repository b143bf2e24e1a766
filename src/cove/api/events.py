"""Socket.IO: pushes sandbox events to every connection of the owning organization.

Several API replicas share their events through Redis (``COVE_EVENTS_URL``):
a replica publishes each event there and every replica emits it to its own
connections of the organization's room.

The SDK never subscribes: it connects with ``{"token": <key>}`` in the CONNECT
packet and expects the server to push ``sandbox.created`` and
``sandbox.state.updated`` for all sandboxes of its organization. A connection lasts
no longer than its key: once the key is revoked or expires, :meth:`SocketEvents.watch`
ends it (the events carry the sandboxes' environments).

Each Engine.IO handshake (``GET /api/socket.io/?EIO=4&transport=polling``, no key)
makes a session the server keeps until its ping times out (some 45 s; for ever while
the client answers pings), with the handshake's headers and a task: one address making
them in a loop, never sending the CONNECT with its key, grew the server by some 76 KB
each (with 30 KB of headers), gigabytes within the timeout. Sessions not yet connected
with a key are counted by client address (an IPv6 one by its /64), as connections are
(:mod:`cove.api.httpguard`): ``MAX_UNCONNECTED_PER_CLIENT`` per address and
``MAX_UNCONNECTED`` in all; a handshake past either gets a 503.

A connected client that takes nothing (never polls, or does not read its WebSocket)
while it answers pings stays: python-engineio queued every event for it, without
bound, each with a sandbox's environment (up to 128 KiB), for as long as it stayed.
Once ``MAX_BEHIND`` bytes of events wait for a client, it is disconnected and they
are dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import engineio
import socketio

from cove.api.dto import sandbox_public
from cove.api.httpguard import Gate, client_key, refusal_body
from cove.api.keybound import WATCH_SECONDS
from cove.core.auth import AuthService
from cove.core.sandbox import Sandbox, SandboxState
from cove.errors import Unauthorized

log = logging.getLogger(__name__)
# Engine.IO sessions without a Socket.IO CONNECT, by address (an SDK's is one for a few
# milliseconds: a burst of clients from one host connecting at once must fit), and in all
MAX_UNCONNECTED_PER_CLIENT = 128
MAX_UNCONNECTED = 4096
MAX_BEHIND = 1024 * 1024  # bytes of events waiting for one client


def _room(organization_id: str) -> str:
    return f"org:{organization_id}"


class _Refused(str):
    """Why a handshake is refused: answered as a 503 in Daytona's envelope (Engine.IO
    answers a refusal with a 401, which says the key is wrong)."""


class _EngineIO(engineio.AsyncServer):
    def _unauthorized(self, message: Any = None) -> dict[str, Any]:
        if not isinstance(message, _Refused):
            return super()._unauthorized(message)
        return {"status": "503 SERVICE UNAVAILABLE",
                "headers": [("Content-Type", "application/json")],
                "response": refusal_body(503, str(message))}  # fmt: skip


class _Server(socketio.AsyncServer):
    """python-socketio's server, with its sessions not yet connected counted (see the
    module's docstring)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.unconnected = Gate(MAX_UNCONNECTED_PER_CLIENT, MAX_UNCONNECTED,
                                "Socket.IO sessions to the server not yet connected")  # fmt: skip
        self._clients: dict[str, str] = {}  # each unconnected session's client (by eio sid)

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return _EngineIO

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        key = client_key(environ["asgi.scope"].get("client"))
        refused = self.unconnected.admit(key)
        if refused is not None:
            return _Refused(refused)
        self._clients[eio_sid] = key
        return await super()._handle_eio_connect(eio_sid, environ)

    def connected(self, sid: str) -> None:
        """The session ``sid`` (of the namespace ``/``) connected with a key."""
        self._release(self.manager.eio_sid_from_sid(sid, "/"))

    async def _handle_eio_disconnect(self, eio_sid: str, reason: Any) -> None:
        self._release(eio_sid)
        await super()._handle_eio_disconnect(eio_sid, reason)

    async def _send_eio_packet(self, eio_sid: str, eio_pkt: Any) -> None:
        """Send, unless the client is ``MAX_BEHIND`` bytes behind: then let it go."""
        socket = self.eio.sockets.get(eio_sid)
        if socket is not None and socket.queue.qsize() > 8 and not socket.closing:
            waiting = socket.queue._queue  # noqa: SLF001 - (asyncio.Queue has no peek)
            if sum(len(p.data) for p in waiting if p is not None and p.data) > MAX_BEHIND:
                log.info("a Socket.IO client fell %d bytes of events behind: disconnected",
                         MAX_BEHIND)  # fmt: skip
                await socket.close(wait=False, abort=True,
                                   reason=self.reason.SERVER_DISCONNECT)  # fmt: skip
                while not socket.queue.empty():  # (what it holds is dropped now)
                    socket.queue.get_nowait()
                    socket.queue.task_done()
                return
        await super()._send_eio_packet(eio_sid, eio_pkt)

    def _release(self, eio_sid: str | None) -> None:
        key = self._clients.pop(eio_sid, None) if eio_sid is not None else None
        if key is not None:
            self.unconnected.release(key)


class SocketEvents:
    """Implements :class:`cove.core.ports.EventSink` over a Socket.IO server."""

    def __init__(self, toolbox_proxy_url: str, auth: Callable[[], AuthService],
                 url: str | None = None) -> None:  # fmt: skip
        # With ``url`` (COVE_EVENTS_URL, a Redis), an event reaches the clients of every
        # replica publishing through it; else those of this process only.
        manager = socketio.AsyncRedisManager(url) if url else None
        self.server = _Server(
            async_mode="asgi", cors_allowed_origins="*", logger=False, engineio_logger=False,
            client_manager=manager,
        )
        self._toolbox_proxy_url = toolbox_proxy_url
        self._auth = auth
        self._shared = manager is not None
        # This process's connections, each with the ``Authorization`` it was made with.
        self._members: dict[str, str] = {}
        self.server.on("connect", self._connect)
        self.server.on("disconnect", self._disconnect)

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        authorization = f"Bearer {token or ''}"
        try:
            principal = self._auth().authenticate(authorization)
        except Unauthorized as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.message) from exc
        self._members[sid] = authorization
        self.server.connected(sid)
        await self.server.enter_room(sid, _room(principal.organization_id))

    async def _disconnect(self, sid: str, *args: Any) -> None:
        self._members.pop(sid, None)

    async def watch(self, every: float = WATCH_SECONDS) -> None:
        """Run for ever: every ``every`` seconds, end the connections whose key no
        longer works (revoked, expired)."""
        while True:
            await asyncio.sleep(every)
            auth = self._auth()
            for sid, authorization in list(self._members.items()):
                if not auth.works(authorization):
                    self._members.pop(sid, None)
                    await self.server.disconnect(sid)

    def _dto(self, sandbox: Sandbox) -> dict[str, Any]:
        return sandbox_public(sandbox, self._toolbox_proxy_url).model_dump(by_alias=True)

    def _heard(self, organization_id: str) -> bool:
        """Whether a client may hear the organization's events (with replicas sharing
        them, any may): else an event is not even built (every create and state change
        announces one)."""
        if self._shared:
            return True
        room = _room(organization_id)
        return next(iter(self.server.manager.get_participants("/", room)), None) is not None

    async def sandbox_created(self, sandbox: Sandbox) -> None:
        if not self._heard(sandbox.organization_id):
            return
        await self.server.emit(
            "sandbox.created", self._dto(sandbox), room=_room(sandbox.organization_id)
        )

    async def sandbox_state_updated(self, sandbox: Sandbox, old_state: SandboxState) -> None:
        if not self._heard(sandbox.organization_id):
            return
        payload = {
            "sandbox": self._dto(sandbox),
            "oldState": str(old_state),
            "newState": str(sandbox.state),
        }
        await self.server.emit(
            "sandbox.state.updated", payload, room=_room(sandbox.organization_id)
        )
