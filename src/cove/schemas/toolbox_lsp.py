"""Wire models of the toolbox's language server API (``/lsp/...``), as the SDK's
toolbox client defines them (``LspServerRequest``, ``CompletionList``, ``LspSymbol``...)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from cove.schemas.base import WireModel
from cove.schemas.limits import MAX_PATH, NO_NUL, SandboxPath

# The languages whose servers the agent runs (``cove.agent.lsp.SERVERS``).
LanguageId = Literal["javascript", "python", "typescript"]
MAX_URI = len("file://") + MAX_PATH
Uri = Annotated[str, StringConstraints(min_length=1, max_length=MAX_URI, pattern=NO_NUL)]


class LspServerRequest(WireModel):
    """``POST /lsp/start`` and ``/lsp/stop``."""

    language_id: LanguageId
    path_to_project: SandboxPath


class LspDocumentRequest(LspServerRequest):
    """``POST /lsp/did-open`` and ``/lsp/did-close``: ``uri`` is ``file://`` + a path
    (a relative one is below the project)."""

    uri: Uri


class LspPosition(WireModel):
    line: int = Field(ge=0)
    character: int = Field(ge=0)


class CompletionContext(WireModel):
    trigger_kind: int
    trigger_character: str | None = None


class LspCompletionParams(LspDocumentRequest):
    """``POST /lsp/completions``."""

    position: LspPosition
    context: CompletionContext | None = None


class CompletionItem(WireModel):
    label: str
    kind: int | None = None
    detail: str | None = None
    documentation: dict[str, Any] | None = None
    sort_text: str | None = None
    filter_text: str | None = None
    insert_text: str | None = None


class CompletionList(WireModel):
    is_incomplete: bool
    items: list[CompletionItem]


class LspRange(WireModel):
    start: LspPosition
    end: LspPosition


class LspLocation(WireModel):
    uri: str
    range: LspRange


class LspSymbol(WireModel):
    name: str
    kind: int
    location: LspLocation
