"""Toolbox: git, run as the sandbox user inside the sandbox (``/toolbox/{id}/git``)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from cove.api.deps import StartedSandboxDep, ToolboxDep
from cove.core.sandbox import Sandbox
from cove.core.toolbox import ToolboxService
from cove.schemas.toolbox_git import (
    GitAddRequest,
    GitBranchRequest,
    GitCheckoutRequest,
    GitCloneRequest,
    GitCommitRequest,
    GitCommitResponse,
    GitModel,
    GitPullRequest,
    GitPushRequest,
    GitStatus,
    ListBranchResponse,
)

router = APIRouter(tags=["toolbox"], prefix="/git")


async def _git(toolbox: ToolboxService, sandbox: Sandbox, op: str,
               body: GitModel | None = None, **fields: object) -> dict:
    message = {"op": op, "user": sandbox.user, "env": dict(sandbox.env),
               **(body.model_dump(exclude_none=True) if body else {}), **fields}
    return await toolbox.request(sandbox, message)


@router.post("/clone")
async def clone(body: GitCloneRequest, sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> None:
    """Clone a repository into the sandbox."""
    await _git(toolbox, sandbox, "git_clone", body)


@router.get("/status")
async def status(path: str, sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> GitStatus:
    """The repository's branch and file states."""
    reply = await _git(toolbox, sandbox, "git_status", path=path)
    return GitStatus.model_validate(reply["status"])


@router.post("/add")
async def add(body: GitAddRequest, sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> None:
    """Stage files."""
    await _git(toolbox, sandbox, "git_add", body)


@router.post("/commit")
async def commit(body: GitCommitRequest, sandbox: StartedSandboxDep,
                 toolbox: ToolboxDep) -> GitCommitResponse:
    """Commit the staged changes."""
    reply = await _git(toolbox, sandbox, "git_commit", body)
    return GitCommitResponse(hash=reply["hash"])


@router.get("/branches")
async def branches(path: str, sandbox: StartedSandboxDep,
                   toolbox: ToolboxDep) -> ListBranchResponse:
    """The repository's local branches."""
    reply = await _git(toolbox, sandbox, "git_branches", path=path)
    return ListBranchResponse(branches=reply["branches"], current=reply["current"] or None)


@router.post("/branches", status_code=201)
async def create_branch(body: GitBranchRequest, sandbox: StartedSandboxDep,
                        toolbox: ToolboxDep) -> None:
    """Create a branch and switch to it."""
    await _git(toolbox, sandbox, "git_branch_create", body)


@router.delete("/branches", status_code=204)
async def delete_branch(body: GitBranchRequest, sandbox: StartedSandboxDep,
                        toolbox: ToolboxDep) -> Response:
    """Delete a branch."""
    await _git(toolbox, sandbox, "git_branch_delete", body)
    return Response(status_code=204)


@router.post("/checkout")
async def checkout(body: GitCheckoutRequest, sandbox: StartedSandboxDep,
                   toolbox: ToolboxDep) -> None:
    """Switch to a branch (or commit)."""
    await _git(toolbox, sandbox, "git_checkout", body)


@router.post("/pull")
async def pull(body: GitPullRequest, sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> None:
    """Pull from the remote (merging)."""
    await _git(toolbox, sandbox, "git_pull", body)


@router.post("/push")
async def push(body: GitPushRequest, sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> None:
    """Push a branch to the remote."""
    await _git(toolbox, sandbox, "git_push", body)
