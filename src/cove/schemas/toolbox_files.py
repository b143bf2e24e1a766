"""Wire models of the toolbox's file system API (``/toolbox/{id}/files``)."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel
from cove.schemas.limits import SandboxPath, Text


class FileInfo(WireModel):
    """One file or directory, as Daytona's daemon describes it."""

    name: str
    is_dir: bool
    size: int
    mode: str
    permissions: str
    owner: str
    group: str
    mod_time: str
    path: str | None = None
    modified_at: str | None = None


class FilesDownloadRequest(WireModel):
    paths: list[SandboxPath] = Field(min_length=1, max_length=10_000)


class Match(WireModel):
    """A line of a file that contains the searched text."""

    file: str
    line: int
    content: str


class SearchFilesResponse(WireModel):
    files: list[str]


class ReplaceRequest(WireModel):
    files: list[SandboxPath] = Field(max_length=10_000)
    pattern: Text = Field(min_length=1)
    new_value: Text


class ReplaceResult(WireModel):
    file: str | None = None
    success: bool | None = None
    error: str | None = None


class UploadedFile(WireModel):
    path: str
    bytes: int


class UploadFilesResponse(WireModel):
    """The bulk upload's answer (an error answer has ``errors``)."""

    files: list[UploadedFile] = Field(default_factory=list)
    errors: list[str] | None = None
