"""``POST /toolbox/{sandbox_id}/process/execute``, the toolbox's hottest call, served
without FastAPI's per-request machinery.

A command's round trip aims at a couple of milliseconds over a bare HTTP one, and
FastAPI spent ~0.4 ms of it on this route alone on this project's 2-core host: a
match of the path against each toolbox route, five middleware layers of its own
(each wrapping every message sent), a walk of the route's dependencies, and a
validation of the answer it had just built. Here the route's own parts do the
same work in the same order: the key is checked and the sandbox looked up by the
route's dependencies (``cove.api.deps``), the body is validated by its model, the
route's endpoint runs, and the answer and any :class:`cove.errors.CoveError` become
the JSON FastAPI would send (``cove.api.errors``).

Whatever is not plainly a call this path serves goes to FastAPI, whose answer,
errors included, is then the route's own: a query string, a body that is not
JSON (``Content-Type``, parse) or that its model refuses. The body read here is
handed on as it came.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import Message, Receive, Scope, Send

from cove.api import deps, errors
from cove.api.routes import toolbox_process
from cove.errors import CoveError


class FastExecute:
    """The execute route of ``app`` (the toolbox's FastAPI app, which includes
    :mod:`cove.api.routes.toolbox_process` under ``/toolbox/{sandbox_id}``), as an ASGI
    app for the requests :meth:`serves` picks; it hands the others to ``app``."""

    TAIL = ["process", "execute"]

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.route = _route(toolbox_process.router.routes, toolbox_process.execute)
        body = self.route.body_field
        assert body is not None and isinstance(body.field_info.annotation, type)
        assert issubclass(body.field_info.annotation, BaseModel)
        self.model: type[BaseModel] = body.field_info.annotation
        self.body_name = body.name

    @staticmethod
    def serves(scope: Scope) -> bool:
        """Whether the request is one for this path: ``POST`` to the route's path
        exactly, no query string, a JSON body."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["query_string"]:
            return False
        parts = scope["path"].split("/")  # "", "toolbox", the id, "process", "execute"
        return len(parts) == 5 and parts[1] == "toolbox" and bool(parts[2]) \
            and parts[3:] == FastExecute.TAIL and _json(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sandbox_id = scope["path"].split("/")[2]
        scope["app"], scope["route"] = self.app, self.route  # as FastAPI's routing sets them
        scope["path_params"] = {"sandbox_id": sandbox_id}
        messages = await _body(receive)
        try:
            if messages[-1]["type"] != "http.request":
                raise ValueError("the client hung up")
            decoded = json.loads(b"".join(m.get("body", b"") for m in messages))
        except Exception:  # noqa: BLE001 - not JSON (nested too deep: RecursionError), a
            # hang-up: FastAPI's answer, which it gives before the key is checked
            return await self.app(scope, _replay(messages, receive), send)
        request = Request(scope, receive)
        try:
            sandbox = await deps.get_started_sandbox(sandbox_id, request)
            agent = await deps.get_agent(sandbox, request)
            try:
                body = self.model.model_validate(decoded)
            except Exception:  # noqa: BLE001 - (ValidationError) FastAPI's answer
                return await self.app(scope, _replay(messages, receive), send)
            result = await self.route.endpoint(**{self.body_name: body}, request=request,
                                               agent=agent)  # fmt: skip
        except CoveError as exc:
            response = await errors.cove_error(request, exc)
        else:
            response = JSONResponse(result.model_dump(mode="json", by_alias=True))
        await response(scope, receive, send)


def _route(routes: list[BaseRoute], endpoint: Callable[..., Any]) -> APIRoute:
    """The route of ``endpoint``, the object FastAPI's routing puts in the scope."""
    for route in routes:
        if isinstance(route, APIRoute) and route.endpoint is endpoint:
            return route
    raise LookupError(f"no route serves {endpoint}")


def _json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return value.lower() == b"application/json"
    return False


async def _body(receive: Receive) -> list[Message]:
    """The request's messages up to the end of its body (``cove.api.bodylimit``
    bounds it) or a hang-up (then last, its body no JSON)."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """``receive``, the ``messages`` read before given first."""
    kept = deque(messages)

    async def replayed() -> Message:
        return kept.popleft() if kept else await receive()

    return replayed
