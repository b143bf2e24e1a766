"""Wire models of the toolbox's git API (``/toolbox/{id}/git``).

Daytona's git bodies are snake_case on the wire (``commit_id``,
``insecure_skip_tls``, ``allow_empty``, ``set_upstream``), hence ``GitModel``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field

from cove.schemas.base import IntegralNumbers, WireModel
from cove.schemas.limits import SandboxPath, Text

GitName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x20\x7f]+$")]


class GitModel(IntegralNumbers):
    """A git request body: field names as they are, unknown fields ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)


class GitRepoRequest(GitModel):
    path: SandboxPath


class GitCredentials(GitRepoRequest):
    username: Text | None = Field(default=None, max_length=1024)
    password: Text | None = Field(default=None, max_length=4096)


class GitCloneRequest(GitCredentials):
    url: Text = Field(min_length=1, max_length=8192)
    branch: GitName | None = None
    commit_id: GitName | None = None
    insecure_skip_tls: bool | None = None
    depth: int | None = Field(default=None, ge=1, le=2**31 - 1)


class GitAddRequest(GitRepoRequest):
    files: list[SandboxPath] = Field(max_length=10_000)


class GitCommitRequest(GitRepoRequest):
    message: Text
    author: Text = Field(max_length=1024)
    email: Text = Field(max_length=1024)
    allow_empty: bool | None = None


class GitBranchRequest(GitRepoRequest):
    name: GitName


class GitCheckoutRequest(GitRepoRequest):
    branch: GitName


class GitPullRequest(GitCredentials):
    branch: GitName | None = None
    remote: GitName | None = None


class GitPushRequest(GitPullRequest):
    set_upstream: bool | None = None


class GitCommitResponse(WireModel):
    hash: str


class ListBranchResponse(WireModel):
    branches: list[str]
    current: str | None = None


class FileStatus(WireModel):
    name: str
    staging: str
    worktree: str
    extra: str


class GitStatus(WireModel):
    current_branch: str
    file_status: list[FileStatus]
    ahead: int | None = None
    behind: int | None = None
    branch_published: bool | None = None
    upstream: str | None = None
    detached: bool | None = None
