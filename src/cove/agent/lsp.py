"""Language servers (``lsp_*`` ops): ``pylsp`` for Python, ``typescript-language-server``
for TypeScript and JavaScript, one per (language, project), started on request as
the sandbox user and kept until stopped.

The ops follow Daytona's LSP API: ``lsp_start`` (initialize), ``lsp_did_open`` /
``lsp_did_close`` (the agent reads the file), ``lsp_completions``,
``lsp_document_symbols``, ``lsp_workspace_symbols`` and ``lsp_stop`` (shutdown,
exit). Replies are reduced to the fields of Daytona's models, and bounded.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from typing import Any
from urllib.parse import quote

from . import files, fs_transfer, protocol, users
from .agent import KEEP_ALIVE, Request, op
from .lsp_client import LanguageServer, path_of

SERVERS = {
    "python": ["pylsp"],
    "typescript": ["typescript-language-server", "--stdio"],
    "javascript": ["typescript-language-server", "--stdio"],
}
MAX_SERVERS = 4
MAX_DOCUMENT = 4 * 1024 * 1024
MAX_ITEMS = 2000
INIT_SECONDS = 60.0
REQUEST_SECONDS = 30.0
_running: dict[tuple[str, str], LanguageServer] = {}
_starting = asyncio.Lock()
KEEP_ALIVE.append(lambda: bool(_running))


def _key(request: Request) -> tuple[str, str, users.User]:
    language = request.arg("languageId")
    if language not in SERVERS:
        raise protocol.bad_request(f"unsupported language '{language}' "
                                   f"(one of {', '.join(sorted(SERVERS))})")  # fmt: skip
    user = users.lookup(request.arg("user", str, None))
    return language, files.resolve(user, request.arg("pathToProject")), user


def _server(request: Request) -> tuple[LanguageServer, str, str]:
    """The running server the request names, its language and project."""
    language, project, _user = _key(request)
    server = _running.get((language, project))
    if server is None or server.gone is not None:
        raise protocol.bad_request(
            f"no {language} language server runs for {project}: start it first",
            "LSP_NOT_STARTED")  # fmt: skip
    return server, language, project


def _uri(path: str) -> str:
    return "file://" + quote(path)


@op("lsp_start")
async def start(request: Request) -> dict[str, Any]:
    """Start the language server of ``languageId`` for ``pathToProject`` (a no-op when it runs)."""
    language, project, user = _key(request)
    async with _starting:
        server = _running.get((language, project))
        if server is not None and server.gone is None:
            return {}
        for key in [k for k, s in _running.items() if s.gone is not None]:
            _running.pop(key).kill()
        if len(_running) >= MAX_SERVERS:
            raise protocol.AgentError(429, "TOO_MANY_LSP_SERVERS",
                                      f"at most {MAX_SERVERS} language servers may run at once; "
                                      "stop one first")  # fmt: skip
        env = request.arg("env", dict, None)
        argv = SERVERS[language]
        path = users.environment(user, env).get("PATH")
        if shutil.which(argv[0], path=path) is None:
            raise protocol.bad_request(f"the {language} language server ({argv[0]}) is not "
                                       "installed in the sandbox", "LSP_NOT_INSTALLED")  # fmt: skip
        server = await LanguageServer.spawn(argv, user, project, env)
        try:
            reply = await server.request("initialize", _initialize(project), INIT_SECONDS)
            await server.notify("initialized", {})
        except BaseException:
            server.kill()
            raise
        caps = reply.get("capabilities") if isinstance(reply, dict) else None
        server.capabilities = caps if isinstance(caps, dict) else {}
        _running[(language, project)] = server
    return {}


def _initialize(project: str) -> dict[str, Any]:
    return {
        # no processId: a server would watch a process it cannot see, and exit
        "processId": None, "rootPath": project, "rootUri": _uri(project),
        "workspaceFolders": [{"uri": _uri(project), "name": os.path.basename(project) or "/"}],
        "capabilities": {
            "textDocument": {
                "completion": {"completionItem": {"snippetSupport": False}},
                "documentSymbol": {"hierarchicalDocumentSymbolSupport": False},
                "synchronization": {"didSave": False},
            },
            "workspace": {"symbol": {}, "workspaceFolders": True, "configuration": True},
        },
    }  # fmt: skip


@op("lsp_stop")
async def stop(request: Request) -> dict[str, Any]:
    """Shut the language server down (and kill what is left of it)."""
    server, language, project = _server(request)
    _running.pop((language, project), None)
    await server.stop()
    return {}


@op("lsp_did_open")
async def did_open(request: Request) -> dict[str, Any]:
    """Tell the server a document is open; the agent reads it from the sandbox."""
    server, language, project = _server(request)
    path = path_of(request.arg("uri"), project)
    with open(_document(path), "rb") as f:
        data = f.read(MAX_DOCUMENT + 1)
    if len(data) > MAX_DOCUMENT:
        raise protocol.bad_request(f"{path} is larger than {MAX_DOCUMENT} bytes")
    await server.notify("textDocument/didOpen", {"textDocument": {
        "uri": _uri(path), "languageId": language, "version": 1,
        "text": data.decode(errors="replace")}})  # fmt: skip
    return {}


def _document(path: str) -> int:
    """A descriptor of the document ``path`` for reading: reached as ``files.reach``
    does, so that a link the user planted in its project does not make the agent read
    root's file into the user's server; a regular file only (see ``open_file``)."""
    with files.failing_as(path), files.reach(path) as place:
        if not place.exists():
            raise FileNotFoundError(errno.ENOENT, "no such file")
        return fs_transfer.open_file(place.inode, path)


@op("lsp_did_close")
async def did_close(request: Request) -> dict[str, Any]:
    server, _language, project = _server(request)
    path = path_of(request.arg("uri"), project)
    await server.notify("textDocument/didClose", {"textDocument": {"uri": _uri(path)}})
    return {}


@op("lsp_completions")
async def completions(request: Request) -> dict[str, Any]:
    """Completions at ``position`` (``{line, character}``) of an open document."""
    server, _language, project = _server(request)
    path = path_of(request.arg("uri"), project)
    position = request.arg("position", dict)
    params: dict[str, Any] = {"textDocument": {"uri": _uri(path)},
                              "position": {"line": _int(position, "line"),
                                           "character": _int(position, "character")}}
    context = request.arg("context", dict, None)
    if context is not None:
        params["context"] = context
    result = await server.request("textDocument/completion", params, REQUEST_SECONDS)
    if isinstance(result, list):
        result = {"isIncomplete": False, "items": result}
    if not isinstance(result, dict):
        return {"isIncomplete": False, "items": []}
    items = [item for raw in _list(result.get("items"))[:MAX_ITEMS]
             if (item := _item(raw)) is not None]
    return {"isIncomplete": bool(result.get("isIncomplete")), "items": items}


@op("lsp_document_symbols")
async def document_symbols(request: Request) -> dict[str, Any]:
    """The symbols of a document, flattened (``name``, ``kind``, ``location``)."""
    server, _language, project = _server(request)
    uri = _uri(path_of(request.arg("uri"), project))
    result = await server.request("textDocument/documentSymbol",
                                  {"textDocument": {"uri": uri}}, REQUEST_SECONDS)  # fmt: skip
    return {"symbols": _symbols(_list(result), uri)}


@op("lsp_workspace_symbols")
async def workspace_symbols(request: Request) -> dict[str, Any]:
    """Symbols matching ``query`` in the project (none when the server cannot search)."""
    server, _language, _project = _server(request)
    if not server.capabilities.get("workspaceSymbolProvider"):
        return {"symbols": []}
    result = await server.request("workspace/symbol", {"query": request.arg("query")},
                                  REQUEST_SECONDS)  # fmt: skip
    return {"symbols": _symbols(_list(result), None)}


def _int(value: dict[str, Any], name: str) -> int:
    number = value.get(name)
    if not isinstance(number, int) or isinstance(number, bool) or number < 0:
        raise protocol.bad_request(f"position.{name} must be a whole number >= 0")
    return number


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _item(raw: Any) -> dict[str, Any] | None:
    """A completion item with Daytona's fields only (``label`` required)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("label"), str):
        return None
    item: dict[str, Any] = {"label": raw["label"]}
    for name in ("detail", "sortText", "filterText", "insertText"):
        if _str(raw.get(name)) is not None:
            item[name] = raw[name]
    if isinstance(raw.get("kind"), int) and not isinstance(raw["kind"], bool):
        item["kind"] = raw["kind"]
    doc = raw.get("documentation")
    if isinstance(doc, str):
        item["documentation"] = {"kind": "plaintext", "value": doc}
    elif isinstance(doc, dict) and isinstance(doc.get("value"), str):
        item["documentation"] = {"kind": str(doc.get("kind", "plaintext")), "value": doc["value"]}
    return item


def _symbols(raw: list[Any], uri: str | None) -> list[dict[str, Any]]:
    """SymbolInformation or DocumentSymbol (with children) as Daytona's LspSymbol list."""
    found: list[dict[str, Any]] = []
    todo = list(raw)
    while todo and len(found) < MAX_ITEMS:
        entry = todo.pop(0)
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            continue
        location = entry.get("location")
        if isinstance(location, dict) and isinstance(location.get("uri"), str):
            where = {"uri": location["uri"], "range": _range(location.get("range"))}
        elif uri is not None and "range" in entry:
            where = {"uri": uri, "range": _range(entry.get("range"))}
            todo.extend(_list(entry.get("children")))
        else:
            continue
        kind = entry.get("kind")
        found.append({"name": entry["name"], "kind": kind if isinstance(kind, int) else 0,
                      "location": where})  # fmt: skip
    return found


def _range(raw: Any) -> dict[str, Any]:
    def position(value: Any) -> dict[str, int]:
        value = value if isinstance(value, dict) else {}
        return {k: v if isinstance(v := value.get(k), int) else 0 for k in ("line", "character")}

    raw = raw if isinstance(raw, dict) else {}
    return {"start": position(raw.get("start")), "end": position(raw.get("end"))}
