"""The served OpenAPI document, completed with what FastAPI cannot infer.

FastAPI documents each route's success answer and a 422 that Cove never sends
(validation errors are 400s). Here every operation gets the errors it can
answer, all in Daytona's error envelope, and the bearer key it needs:

- every API operation: 400, 401, 403 (the key lacks the permission) and 404; those
  with a body 413, those that change something 409 (also reading a key by a name
  that several keys share);
- a 400 may also be plain text: the HTTP server's own refusal of a request it cannot
  parse (a request line or headers above 16 KiB), before Cove sees it;
- toolbox operations also relay the sandbox agent's own 4xx errors (``4XX``),
  and answer 502 (the agent failed or lied), 503 (unreachable) and 504 (it did
  not accept the request in time).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from cove.schemas.base import ErrorEnvelope

ENVELOPE_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}
DESCRIPTIONS = {
    "400": "Invalid input (Daytona's error envelope)",
    "401": "Missing, wrong or expired API key",
    "403": "The API key lacks the permission the call needs",
    "404": "No such object in the caller's organization",
    "409": "Conflicts with an existing object or its use",
    "413": "Request body too large",
    "4XX": "An error reported by the sandbox's toolbox agent",
    "502": "The sandbox's toolbox agent failed or answered nonsense",
    "503": "The sandbox's toolbox agent cannot be reached now",
    "504": "The sandbox's toolbox agent did not accept the request in time",
}
PUBLIC = {"/api/health", "/api/config"}


def install(app: FastAPI) -> None:
    """Serve the completed document at ``/openapi.json``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = complete(document)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add the error answers and the security scheme to a FastAPI document."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ErrorEnvelope"] = ErrorEnvelope.model_json_schema(by_alias=True)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            _complete_operation(path, method, operation)
    return document


def _complete_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    responses.pop("422", None)
    if path in PUBLIC:
        return
    operation["security"] = [{"bearer": []}]
    codes = ["400", "401", "403", "404"]
    if "requestBody" in operation:
        codes.append("413")
    if method != "get" or path.startswith("/api/api-keys/"):
        codes.append("409")
    if path.startswith("/toolbox/"):
        codes += ["4XX", "502", "503", "504"]
    for code in codes:
        content: dict[str, Any] = {"application/json": {"schema": ENVELOPE_REF}}
        if code == "400":
            content["text/plain"] = {"schema": {"type": "string"}}
        responses.setdefault(code, {"description": DESCRIPTIONS[code], "content": content})
