"""A toolbox call whose client hangs up before the answer is ended; watching for the
hang-up never takes (or reorders) the body the route reads."""

from __future__ import annotations

import asyncio
from typing import Any

from cove.api import hangup
from cove.api.hangup import UntilClientLeaves

Message = dict[str, Any]


def _client(chunks: list[tuple[float, Message]]) -> Any:
    """A client's ``receive``: each message after its delay, then a hang-up only once
    ``leave`` is set."""
    leave = asyncio.Event()

    async def receive() -> Message:
        if chunks:
            delay, message = chunks.pop(0)
            await asyncio.sleep(delay)
            return message
        await leave.wait()
        return {"type": "http.disconnect"}

    return receive, leave


def _run(app: Any, chunks: list[tuple[float, Message]], path: str = "/toolbox/x/y",
         leave_after: float | None = None) -> list[Message]:  # fmt: skip
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def main() -> None:
        receive, leave = _client(chunks)
        if leave_after is not None:
            asyncio.get_running_loop().call_later(leave_after, leave.set)
        scope = {"type": "http", "path": path, "method": "POST", "headers": [],
                 "query_string": b""}  # fmt: skip
        watched = UntilClientLeaves(app, lambda p: p.endswith("/upload"), every=0.05)
        await asyncio.wait_for(watched(scope, receive, send), 5)

    asyncio.run(main())
    return sent


def _body(data: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": data, "more_body": more}


async def _answer(send: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_a_body_that_comes_slowly_reaches_the_route_whole_and_in_order() -> None:
    """The watcher starts while the body still comes: what it reads is the route's."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(0.2)  # (the route reads its body late)
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message["body"], message["more_body"]
        await _answer(send, body)

    sent = _run(app, [(0, _body(b"a", True)), (0.1, _body(b"b", True)),
                      (0.1, _body(b"c", False))], leave_after=1)  # fmt: skip
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"abc"


def test_an_upload_is_watched_only_once_the_route_read_it() -> None:
    read: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        more = True
        while more:
            await asyncio.sleep(0.1)  # (the sandbox takes it slowly)
            message = await receive()
            read.append(message["body"])
            more = message["more_body"]
        await asyncio.sleep(10)  # (a silent agent)

    sent = _run(app, [(0, _body(b"a", True)), (0, _body(b"b", False))], path="/x/upload",
                leave_after=0.5)  # fmt: skip
    assert read == [b"a", b"b"]
    assert sent[0]["status"] == 499


def test_a_call_answered_is_not_cancelled_by_a_later_hang_up() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await asyncio.sleep(0.1)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.3)  # the client leaves meanwhile: the body is the route's
        await send({"type": "http.response.body", "body": b"done"})

    sent = _run(app, [(0, _body(b"", False))], leave_after=0.15)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"done"


def test_a_large_answer_goes_out_whole_and_in_order_in_pieces() -> None:
    """(uvicorn waits for its client only between two sends: see the module.)"""
    first, last = bytes(range(256)) * 1000, b"z" * (hangup.PIECE + 1)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": first, "more_body": True})
        await send({"type": "http.response.body", "body": last})

    sent = _run(app, [(0, _body(b"", False))])[1:]
    assert b"".join(m["body"] for m in sent) == first + last
    assert all(len(m["body"]) <= hangup.PIECE for m in sent)
    assert [m["more_body"] for m in sent] == [True] * (len(sent) - 1) + [False]
