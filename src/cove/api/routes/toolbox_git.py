"""Toolbox: git, run as the sandbox user inside the sandbox (``/toolbox/{id}/git``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from cove.api.deps import AgentDep
from cove.api.params import OptionalPathQuery, SandboxPathQuery
from cove.schemas.toolbox_git import (
    GitAddRemoteRequest,
    GitAddRequest,
    GitAuthenticateRequest,
    GitBranchRequest,
    GitCheckoutRequest,
    GitCloneRequest,
    GitCommitRequest,
    GitCommitResponse,
    GitConfigKey,
    GitConfigResponse,
    GitConfigureUserRequest,
    GitInitRequest,
    GitPullRequest,
    GitPushRequest,
    GitResetRequest,
    GitRestoreRequest,
    GitScope,
    GitSetConfigRequest,
    GitStatus,
    ListBranchResponse,
    ListRemotesResponse,
)

router = APIRouter(tags=["toolbox"], prefix="/git")


@router.post("/clone")
async def clone(body: GitCloneRequest, agent: AgentDep) -> None:
    """Clone a repository into the sandbox."""
    await agent.git_clone(body)


@router.get("/status")
async def status(path: SandboxPathQuery, agent: AgentDep) -> GitStatus:
    """The repository's branch and file states."""
    return await agent.git_status(path)


@router.post("/add")
async def add(body: GitAddRequest, agent: AgentDep) -> None:
    """Stage files."""
    await agent.git_add(body)


@router.post("/commit")
async def commit(body: GitCommitRequest, agent: AgentDep) -> GitCommitResponse:
    """Commit the staged changes."""
    return GitCommitResponse(hash=await agent.git_commit(body))


@router.get("/branches")
async def branches(path: SandboxPathQuery, agent: AgentDep) -> ListBranchResponse:
    """The repository's local branches."""
    return await agent.git_branches(path)


@router.post("/branches", status_code=201)
async def create_branch(body: GitBranchRequest, agent: AgentDep) -> None:
    """Create a branch and switch to it."""
    await agent.git_branch_create(body)


@router.delete("/branches", status_code=204, response_class=Response)
async def delete_branch(body: GitBranchRequest, agent: AgentDep) -> Response:
    """Delete a branch."""
    await agent.git_branch_delete(body)
    return Response(status_code=204)


@router.post("/checkout")
async def checkout(body: GitCheckoutRequest, agent: AgentDep) -> None:
    """Switch to a branch (or commit)."""
    await agent.git_checkout(body)


@router.post("/pull")
async def pull(body: GitPullRequest, agent: AgentDep) -> None:
    """Pull from the remote (merging)."""
    await agent.git_pull(body)


@router.post("/push")
async def push(body: GitPushRequest, agent: AgentDep) -> None:
    """Push a branch to the remote."""
    await agent.git_push(body)


@router.post("/init", status_code=201)
async def init(body: GitInitRequest, agent: AgentDep) -> None:
    """Create a repository (or re-initialize one) at ``path``."""
    await agent.git_init(body)


@router.post("/reset")
async def reset(body: GitResetRequest, agent: AgentDep) -> None:
    """Reset HEAD (mixed by default, to HEAD by default), or only the given files."""
    await agent.git_reset(body)


@router.post("/restore")
async def restore(body: GitRestoreRequest, agent: AgentDep) -> None:
    """Restore files in the working tree (by default) and/or the index."""
    await agent.git_restore(body)


@router.get("/remotes")
async def remotes(path: SandboxPathQuery, agent: AgentDep) -> ListRemotesResponse:
    """The repository's remotes and their fetch URLs."""
    return await agent.git_remotes(path)


@router.post("/remotes", status_code=201)
async def add_remote(body: GitAddRemoteRequest, agent: AgentDep) -> None:
    """Add a remote (or, with ``overwrite``, change its URL), and fetch it if asked."""
    await agent.git_remote_add(body)


@router.get("/config")
async def get_config(key: Annotated[GitConfigKey, Query()], agent: AgentDep,
                     path: OptionalPathQuery = None,
                     scope: Annotated[GitScope | None, Query()] = None,
                     ) -> GitConfigResponse:  # fmt: skip
    """A config value (global scope by default); ``value`` is null when it is not set."""
    return await agent.git_config_get(key, scope, path)


@router.post("/config")
async def set_config(body: GitSetConfigRequest, agent: AgentDep) -> None:
    """Set a config value (global scope by default; ``local`` needs ``path``)."""
    await agent.git_config_set(body)


@router.post("/config/user")
async def configure_user(body: GitConfigureUserRequest, agent: AgentDep) -> None:
    """Set ``user.name`` and ``user.email`` (global scope by default)."""
    await agent.git_config_user(body)


@router.post("/credentials")
async def credentials(body: GitAuthenticateRequest, agent: AgentDep) -> None:
    """Store credentials for a host (github.com over https by default) in git's
    credential store in the sandbox user's home (``~/.git-credentials``, mode 0600)."""
    await agent.git_credentials(body)
