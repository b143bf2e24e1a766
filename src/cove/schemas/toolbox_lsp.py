"""Wire models of the toolbox's language server API (``/lsp/...``), as the SDK's
toolbox client defines them (``LspServerRequest``, ``CompletionList``, ``LspSymbol``...)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from cove.schemas.base import WireModel


class LspServerRequest(WireModel):
    """``POST /lsp/start`` and ``/lsp/stop``."""

    language_id: str = Field(min_length=1)
    path_to_project: str = Field(min_length=1)


class LspDocumentRequest(LspServerRequest):
    """``POST /lsp/did-open`` and ``/lsp/did-close``: ``uri`` is ``file://`` + a path
    (a relative one is below the project)."""

    uri: str = Field(min_length=1)


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
