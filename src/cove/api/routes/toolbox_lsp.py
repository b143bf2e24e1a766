"""Toolbox: language servers in the sandbox (``/toolbox/{id}/lsp/...``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from cove.api.deps import AgentDep
from cove.schemas.limits import MAX_PATH, NO_NUL
from cove.schemas.toolbox_lsp import (
    MAX_URI,
    CompletionList,
    LanguageId,
    LspCompletionParams,
    LspDocumentRequest,
    LspServerRequest,
    LspSymbol,
)

router = APIRouter(tags=["toolbox"], prefix="/lsp")
Language = Annotated[LanguageId, Query(alias="languageId")]
Project = Annotated[str, Query(alias="pathToProject", min_length=1, max_length=MAX_PATH,
                               pattern=NO_NUL)]  # fmt: skip
Uri = Annotated[str, Query(min_length=1, max_length=MAX_URI, pattern=NO_NUL)]


@router.post("/start", response_class=Response)
async def start(body: LspServerRequest, agent: AgentDep) -> Response:
    """Start the language server of ``languageId`` for ``pathToProject`` (as the sandbox
    user); a no-op when it already runs."""
    await agent.lsp_start(body)
    return Response(status_code=200)


@router.post("/stop", response_class=Response)
async def stop(body: LspServerRequest, agent: AgentDep) -> Response:
    """Shut the language server down."""
    await agent.lsp_stop(body)
    return Response(status_code=200)


@router.post("/did-open", response_class=Response)
async def did_open(body: LspDocumentRequest, agent: AgentDep) -> Response:
    """Open a document in the language server (read from the sandbox's disk)."""
    await agent.lsp_did_open(body)
    return Response(status_code=200)


@router.post("/did-close", response_class=Response)
async def did_close(body: LspDocumentRequest, agent: AgentDep) -> Response:
    await agent.lsp_did_close(body)
    return Response(status_code=200)


@router.post("/completions")
async def completions(body: LspCompletionParams, agent: AgentDep) -> CompletionList:
    """Completions at a position of an open document."""
    return await agent.lsp_completions(body)


@router.get("/document-symbols")
async def document_symbols(agent: AgentDep, language_id: Language, path_to_project: Project,
                           uri: Uri) -> list[LspSymbol]:  # fmt: skip
    """The symbols of a document (functions, classes, variables...)."""
    body = LspDocumentRequest(language_id=language_id, path_to_project=path_to_project, uri=uri)
    return await agent.lsp_document_symbols(body)


@router.get("/workspacesymbols")
async def workspace_symbols(agent: AgentDep, query: Annotated[str, Query(pattern=NO_NUL)],
                            language_id: Language, path_to_project: Project
                            ) -> list[LspSymbol]:  # fmt: skip
    """Symbols matching ``query`` across the project."""
    body = LspServerRequest(language_id=language_id, path_to_project=path_to_project)
    return await agent.lsp_workspace_symbols(body, query)
