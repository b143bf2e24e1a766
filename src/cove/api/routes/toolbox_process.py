"""Toolbox: running commands and code, and facts about the sandbox (``/toolbox/{id}``)."""

from __future__ import annotations

from fastapi import APIRouter

from cove.api.deps import AgentDep, StartedSandboxDep
from cove.core.validation import LANGUAGE_LABEL
from cove.schemas.toolbox import (
    CodeRunRequest,
    CodeRunResponse,
    DirResponse,
    ExecuteRequest,
    ExecuteResponse,
)

router = APIRouter(tags=["toolbox"])


@router.post("/process/execute")
async def execute(body: ExecuteRequest, agent: AgentDep) -> ExecuteResponse:
    """Run a shell command and wait for it."""
    done = await agent.exec(body.command, body.cwd, body.envs, body.timeout)
    return ExecuteResponse(exit_code=done.exit_code, result=done.output)


@router.post("/process/code-run")
async def code_run(body: CodeRunRequest, sandbox: StartedSandboxDep,
                   agent: AgentDep) -> CodeRunResponse:
    """Run a snippet in the sandbox's language."""
    language = body.language or sandbox.labels.get(LANGUAGE_LABEL, "python")
    done = await agent.code_run(body.code, language, body.argv, body.envs, body.timeout)
    return CodeRunResponse(exit_code=done.exit_code, result=done.output)


@router.get("/user-home-dir")
async def user_home_dir(agent: AgentDep) -> DirResponse:
    """The sandbox user's home directory."""
    return DirResponse(dir=(await agent.info()).home)


@router.get("/work-dir")
async def work_dir(agent: AgentDep) -> DirResponse:
    """The directory commands start in by default."""
    return DirResponse(dir=(await agent.info()).work_dir)


@router.get("/env")
async def env(agent: AgentDep) -> dict[str, str]:
    """The environment processes of the sandbox user get."""
    return (await agent.info()).env


@router.get("/version")
async def version(agent: AgentDep) -> dict[str, str]:
    """The toolbox agent's version."""
    return {"version": (await agent.info()).version}
