"""A browser's WebSocket carries the API key as a subprotocol (it cannot set headers)."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, WebSocket
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from cove.api.wsauth import MARKER, SubprotocolBearer, bearer_protocol


def _client(accept_with: str | None = None) -> TestClient:
    app = FastAPI()

    @app.websocket("/ws")
    async def echo(ws: WebSocket) -> None:
        await ws.accept(subprotocol=accept_with)
        await ws.send_json({"authorization": ws.headers.get("authorization"),
                            "offered": ws.scope["subprotocols"],
                            "header": ws.headers.get("sec-websocket-protocol")})  # fmt: skip
        await ws.close()

    return TestClient(SubprotocolBearer(app))


def test_the_key_becomes_the_authorization_header_and_is_not_offered_on() -> None:
    key = "cove_k3y/with+odd=chars~!"
    with _client().websocket_connect("/ws", subprotocols=[MARKER, bearer_protocol(key)]) as ws:
        seen = ws.receive_json()
        assert ws.accepted_subprotocol == MARKER  # the browser needs one of its offers back
    assert seen == {"authorization": f"Bearer {key}", "offered": [MARKER], "header": None}


def test_a_route_choosing_its_own_subprotocol_keeps_it() -> None:
    client = _client(accept_with="X-Daytona-Pty-Exit-Control")
    offered = ["X-Daytona-Pty-Exit-Control", MARKER, bearer_protocol("k")]
    with client.websocket_connect("/ws", subprotocols=offered) as ws:
        assert ws.receive_json()["offered"] == ["X-Daytona-Pty-Exit-Control", MARKER]
        assert ws.accepted_subprotocol == "X-Daytona-Pty-Exit-Control"


def test_an_authorization_header_wins_over_the_subprotocol() -> None:
    headers = {"Authorization": "Bearer from-header"}
    with _client().websocket_connect("/ws", subprotocols=[bearer_protocol("other")],
                                     headers=headers) as ws:  # fmt: skip
        seen = ws.receive_json()
    assert seen["authorization"] == "Bearer from-header" and seen["offered"] == []


def test_without_the_subprotocol_nothing_changes() -> None:
    with _client().websocket_connect("/ws", subprotocols=["other"]) as ws:
        assert ws.receive_json() == {"authorization": None, "offered": ["other"],
                                     "header": "other"}  # fmt: skip


def test_a_malformed_key_is_no_key(client: TestClient) -> None:
    """The real app: a toolbox WebSocket with an undecodable or wrong key is refused."""
    for protocol in ("cove.bearer.%%%", bearer_protocol("wrong-key")):
        with pytest.raises(WebSocketDisconnect), client.websocket_connect(
                "/toolbox/x/process/interpreter/execute", subprotocols=[MARKER, protocol]) as ws:
            ws.receive_text()
