"""Lifecycle events over Socket.IO: built and sent only where a client may hear them."""

from __future__ import annotations

import asyncio
from typing import Any

from cove.api.events import SocketEvents
from cove.core.ports import Resources
from cove.core.sandbox import Sandbox, SandboxState
from cove.errors import Unauthorized


def _sandbox(org: str) -> Sandbox:
    return Sandbox(id="sb", organization_id=org, name="sb", snapshot="s", user="daytona",
                   resources=Resources(cpu=1, memory=1, disk=3), state=SandboxState.STARTED)


def _no_auth() -> Any:
    raise Unauthorized("no keys here")


def test_events_reach_the_organizations_room_only_when_someone_is_in_it() -> None:
    events = SocketEvents("http://proxy", _no_auth)
    sent: list[tuple[str, str]] = []

    async def emit(event: str, data: Any, room: str) -> None:
        sent.append((event, room))
        assert data  # (built only for a listener)

    events.server.emit = emit  # type: ignore[method-assign]

    async def lifecycle() -> None:
        await events.sandbox_created(_sandbox("org-a"))
        await events.sandbox_state_updated(_sandbox("org-a"), SandboxState.STARTING)
        assert sent == []  # no client: nothing built, nothing sent
        events.server.manager.basic_enter_room("client-1", "/", "org:org-a", eio_sid="e1")
        await events.sandbox_created(_sandbox("org-a"))
        await events.sandbox_state_updated(_sandbox("org-a"), SandboxState.STARTING)
        await events.sandbox_created(_sandbox("org-b"))  # another organization's: unheard

    asyncio.run(lifecycle())
    assert sent == [("sandbox.created", "org:org-a"), ("sandbox.state.updated", "org:org-a")]


def test_with_replicas_every_event_is_published() -> None:
    events = SocketEvents("http://proxy", _no_auth, url="redis://127.0.0.1:1")
    assert events._heard("anyone")  # noqa: SLF001 - another replica's clients may listen
