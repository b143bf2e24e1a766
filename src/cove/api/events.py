"""Socket.IO: pushes sandbox events to every connection of the owning organization.

Several API replicas share their events through Redis (``COVE_EVENTS_URL``):
a replica publishes each event there and every replica emits it to its own
connections of the organization's room.

The SDK never subscribes: it connects with ``{"token": <key>}`` in the CONNECT
packet and expects the server to push ``sandbox.created`` and
``sandbox.state.updated`` for all sandboxes of its organization. A connection lasts
no longer than its key: once the key is revoked or expires, :meth:`SocketEvents.watch`
ends it (the events carry the sandboxes' environments).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import socketio

from cove.api.dto import sandbox_public
from cove.api.keybound import WATCH_SECONDS
from cove.core.auth import AuthService
from cove.core.sandbox import Sandbox, SandboxState
from cove.errors import Unauthorized

log = logging.getLogger(__name__)


def _room(organization_id: str) -> str:
    return f"org:{organization_id}"


class SocketEvents:
    """Implements :class:`cove.core.ports.EventSink` over a Socket.IO server."""

    def __init__(self, toolbox_proxy_url: str, auth: Callable[[], AuthService],
                 url: str | None = None) -> None:  # fmt: skip
        # With ``url`` (COVE_EVENTS_URL, a Redis), an event reaches the clients of every
        # replica publishing through it; else those of this process only.
        manager = socketio.AsyncRedisManager(url) if url else None
        self.server = socketio.AsyncServer(
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
