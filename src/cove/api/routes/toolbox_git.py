"""Toolbox: git, run as the sandbox user inside the sandbox (``/toolbox/{id}/git``)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from cove.api.deps import AgentDep
from cove.api.params import SandboxPathQuery
from cove.schemas.toolbox_git import (
    GitAddRequest,
    GitBranchRequest,
    GitCheckoutRequest,
    GitCloneRequest,
    GitCommitRequest,
    GitCommitResponse,
    GitPullRequest,
    GitPushRequest,
    GitStatus,
    ListBranchResponse,
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
