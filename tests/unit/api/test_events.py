"""Lifecycle events over Socket.IO: built and sent only where a client may hear them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import socketio

from cove.api.events import MAX_BEHIND, MAX_UNCONNECTED_PER_CLIENT, SocketEvents
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


class _Principal:
    organization_id = "org-a"


class _Keys:
    def authenticate(self, authorization: str) -> _Principal:
        if authorization != "Bearer good":
            raise Unauthorized("bad key")
        return _Principal()


def test_sessions_not_yet_connected_are_capped_per_address() -> None:
    """Engine.IO handshakes that never send the Socket.IO CONNECT with a key: each made
    a session kept until its ping timed out (~45 s; for ever while pings are answered),
    with the handshake's headers (some 76 KB each with 30 KB of them), and one address
    could make them without end. Now one address has MAX_UNCONNECTED_PER_CLIENT of them,
    then a 503; others are still served, and a session that connects with a key no
    longer counts."""
    events = SocketEvents("http://proxy", _Keys)
    app = socketio.ASGIApp(events.server, socketio_path="/api/socket.io")
    path = "/api/socket.io/?EIO=4&transport=polling"

    def client(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 5))
        return httpx.AsyncClient(transport=transport, base_url="http://cove")

    async def handshake(http: httpx.AsyncClient) -> httpx.Response:
        return await http.get(path, headers={"x-pad": "a" * 30_000})

    async def run() -> None:
        async with client("192.0.2.7") as attacker, client("192.0.2.8") as other:
            opened = [await handshake(attacker) for _ in range(MAX_UNCONNECTED_PER_CLIENT)]
            assert all(r.status_code == 200 for r in opened)
            refused = await handshake(attacker)
            assert refused.status_code == 503, refused.text
            body = refused.json()
            assert body["code"] == "TOO_MANY_CONNECTIONS" and body["statusCode"] == 503
            assert "not yet connected" in body["message"]
            assert len(events.server.eio.sockets) == MAX_UNCONNECTED_PER_CLIENT
            assert (await handshake(other)).status_code == 200  # another address

            # a bad key leaves the session counted; a good one frees its place
            sid = json.loads(opened[0].text[1:])["sid"]
            for token in ("bad", "good"):
                sent = await attacker.post(f"{path}&sid={sid}", content=f'40{{"token":"{token}"}}')
                assert sent.status_code == 200
                await asyncio.sleep(0.05)
                again = await handshake(attacker)
                assert again.status_code == (200 if token == "good" else 503), again.text

    asyncio.run(run())


def test_a_client_that_reads_nothing_is_let_go_before_its_events_pile_up() -> None:
    """A connected client that never polls (nor reads its WebSocket) while answering
    pings: every event of its organization was queued for it, without bound (each
    carries a sandbox's environment, up to 128 KiB), for as long as it stayed. Once
    more than MAX_BEHIND bytes wait for it, it is disconnected and they are dropped;
    a client that reads gets every event."""
    events = SocketEvents("http://proxy", _Keys)
    app = socketio.ASGIApp(events.server, socketio_path="/api/socket.io")
    path = "/api/socket.io/?EIO=4&transport=polling"
    big = _sandbox("org-a")
    big.env = {f"VAR{i}": "v" * 30_000 for i in range(3)}  # ~90 KB an event

    async def connected(http: httpx.AsyncClient) -> str:
        sid = json.loads((await http.get(path)).text[1:])["sid"]
        await http.post(f"{path}&sid={sid}", content='40{"token":"good"}')
        assert (await http.get(f"{path}&sid={sid}")).text.startswith("40")  # CONNECT
        return sid

    async def run() -> None:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 5))
        async with httpx.AsyncClient(transport=transport, base_url="http://cove") as http:
            reader, stuck = await connected(http), await connected(http)
            heard = 0
            for _ in range(200):  # ~18 MB of events
                await events.sandbox_state_updated(big, SandboxState.STARTING)
                await asyncio.sleep(0)
                got = await http.get(f"{path}&sid={reader}")
                heard += got.text.count("sandbox.state.updated")
            assert heard == 200
            socket = events.server.eio.sockets.get(stuck)
            assert socket is None or socket.closed
            held = sum(len(p.data) for p in socket.queue._queue if p) if socket else 0  # noqa: SLF001
            assert held <= MAX_BEHIND, held
            assert (await http.get(f"{path}&sid={stuck}")).status_code == 400  # gone

    asyncio.run(run())
