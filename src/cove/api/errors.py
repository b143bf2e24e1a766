"""Map CoveError (and request validation) to Daytona's error envelope, once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from cove.api.dto import iso
from cove.core.sandbox import utcnow
from cove.errors import CoveError


def envelope(
    request: Request, status: int, message: str, code: str, source: str = "DAYTONA_API",
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {
        "statusCode": status,
        "message": message,
        "code": code,
        "source": source,
        "error": _phrase(status),
        "timestamp": iso(utcnow()),
        "path": request.url.path,
        "method": request.scope.get("method", "GET"),  # a WebSocket upgrade is a GET
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _phrase(status: int) -> str:
    """The reason phrase; also of statuses outside RFC 9110 (499: the client left)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return {499: "Client Closed Request"}.get(status, "Error")


async def cove_error(request: Request, exc: Exception) -> JSONResponse:
    """The envelope of a CoveError (counted, as the agent's errors are)."""
    assert isinstance(exc, CoveError)
    telemetry = getattr(request.app.state, "telemetry", None)
    if telemetry is not None:
        telemetry.error(exc)  # agent errors are counted (cove.api.metrics)
    return envelope(request, exc.status_code, exc.message, exc.code, exc.source)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return envelope(request, 400, "; ".join(parts) or "invalid request", "BAD_REQUEST")


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTPStatus(exc.status_code).name
    headers = exc.headers
    if exc.status_code == 405:  # every route of the path, not only the first one matched
        headers = {**(headers or {}), "Allow": ", ".join(_allowed(request))}
    return envelope(request, exc.status_code, str(exc.detail), code, headers=headers)


def _allowed(request: Request) -> list[str]:
    """The methods of the operations whose path template matches the request's path
    most specifically (fewest parameters: ``.../session/entrypoint`` is not a session)."""
    found: dict[int, set[str]] = {}
    for template, operations in request.app.openapi().get("paths", {}).items():
        pattern = "".join("[^/]+" if part.startswith("{") else re.escape(part)
                          for part in re.split(r"(\{[^/]+\})", template))  # fmt: skip
        if re.fullmatch(pattern, request.url.path):
            found.setdefault(template.count("{"), set()).update(m.upper() for m in operations)
    methods = found[min(found)] if found else set()
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def install(app: FastAPI) -> None:
    app.add_exception_handler(CoveError, cove_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
