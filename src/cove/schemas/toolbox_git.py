"""Wire models of the toolbox's git API (``/toolbox/{id}/git``).

Daytona's git bodies are snake_case on the wire (``commit_id``,
``insecure_skip_tls``, ``allow_empty``, ``set_upstream``), hence ``GitModel``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from cove.schemas.base import IntegralNumbers, WireModel
from cove.schemas.limits import NO_NUL, SandboxPath, Text

# A branch, remote, revision or tag: no space or control character, and no leading '-'
# (git would take it for an option; git refuses such names anyway).
GitName = Annotated[
    str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x20\x7f-][^\x00-\x20\x7f]*$")
]
# A remote's URL: no control character, no leading '-' (ssh would take it for an option).
GitUrl = Annotated[str, StringConstraints(
    min_length=1, max_length=8192, pattern=r"^[^\x00-\x1f\x7f-][^\x00-\x1f\x7f]*$")]
# A config key as git spells it: section[.subsection].name (the subsection may hold
# anything but NUL and newline).
GitConfigKey = Annotated[str, StringConstraints(
    max_length=1024, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]*(\.[^\x00\n]*)?\.[A-Za-z][A-Za-z0-9-]*$")]
# A credential field: git's credential protocol is line-based.
CredentialText = Annotated[str, StringConstraints(max_length=4096, pattern=r"^[^\x00\n\r]*$")]
GitScope = Literal["global", "local", "system"]


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


class GitInitRequest(GitRepoRequest):
    bare: bool | None = None
    initial_branch: GitName | None = None


class GitResetRequest(GitRepoRequest):
    mode: Literal["soft", "mixed", "hard", "merge", "keep"] | None = None
    target: GitName | None = None
    files: list[SandboxPath] | None = Field(default=None, max_length=10_000)


class GitRestoreRequest(GitRepoRequest):
    files: list[SandboxPath] = Field(min_length=1, max_length=10_000)
    staged: bool | None = None
    worktree: bool | None = None
    source: GitName | None = None


class GitAddRemoteRequest(GitRepoRequest):
    name: GitName
    url: GitUrl
    fetch: bool | None = None
    overwrite: bool | None = None


class GitScoped(GitModel):
    """A config request: ``path`` names the repository, needed for the local scope."""

    path: SandboxPath | None = None
    scope: GitScope | None = None


class GitSetConfigRequest(GitScoped):
    key: GitConfigKey
    value: Annotated[str, StringConstraints(max_length=32 * 1024, pattern=NO_NUL)]


class GitConfigureUserRequest(GitScoped):
    name: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^\x00\n]*$")]
    email: Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[^\x00\n]*$")]


class GitAuthenticateRequest(GitModel):
    username: CredentialText
    password: CredentialText
    host: Annotated[str, StringConstraints(
        min_length=1, max_length=255, pattern=r"^[A-Za-z0-9.\[\]:_-]+$")] | None = None
    protocol: Annotated[str, StringConstraints(
        min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9+.-]*$")] | None = None


class GitConfigResponse(WireModel):
    value: str | None = None


class GitRemote(WireModel):
    name: str
    url: str


class ListRemotesResponse(WireModel):
    remotes: list[GitRemote]


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
