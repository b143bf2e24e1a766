"""Wire models of the toolbox's git API (``/toolbox/{id}/git``).

Daytona's git bodies are snake_case on the wire (``commit_id``,
``insecure_skip_tls``, ``allow_empty``, ``set_upstream``), hence ``GitModel``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cove.schemas.base import WireModel


class GitModel(BaseModel):
    """A git request body: field names as they are, unknown fields ignored."""

    model_config = ConfigDict(extra="ignore")


class GitRepoRequest(GitModel):
    path: str


class GitCredentials(GitRepoRequest):
    username: str | None = None
    password: str | None = None


class GitCloneRequest(GitCredentials):
    url: str = Field(min_length=1)
    branch: str | None = None
    commit_id: str | None = None
    insecure_skip_tls: bool | None = None
    depth: int | None = Field(default=None, ge=1)


class GitAddRequest(GitRepoRequest):
    files: list[str]


class GitCommitRequest(GitRepoRequest):
    message: str
    author: str
    email: str
    allow_empty: bool | None = None


class GitBranchRequest(GitRepoRequest):
    name: str = Field(min_length=1)


class GitCheckoutRequest(GitRepoRequest):
    branch: str = Field(min_length=1)


class GitPullRequest(GitCredentials):
    branch: str | None = None
    remote: str | None = None


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
