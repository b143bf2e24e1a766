"""Toolbox: running commands and code, and facts about the sandbox (``/toolbox/{id}``)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from cove.api.deps import AgentDep, StartedSandboxDep, ToolboxDep
from cove.api.streaming import unless_client_leaves
from cove.core.validation import LANGUAGE_LABEL
from cove.schemas.toolbox import (
    CodeRunArtifacts,
    CodeRunRequest,
    CodeRunResponse,
    DirResponse,
    ExecuteRequest,
    ExecuteResponse,
    UpdateEnvRequest,
)

router = APIRouter(tags=["toolbox"])


@router.post("/process/execute")
async def execute(body: ExecuteRequest, request: Request, agent: AgentDep) -> ExecuteResponse:
    """Run a shell command and wait for it (stopped if the client hangs up). The output
    is clipped to COVE_OUTPUT_LIMIT bytes: its start and its end, marked in between."""
    work = agent.exec(body.command, body.cwd, body.envs, body.timeout)
    done = await unless_client_leaves(request, work)
    return ExecuteResponse(exit_code=done.exit_code, result=done.output)


@router.post("/process/code-run", response_model_exclude_none=True)
async def code_run(body: CodeRunRequest, request: Request, sandbox: StartedSandboxDep,
                   agent: AgentDep) -> CodeRunResponse:
    """Run a snippet in the sandbox's language (stopped if the client hangs up; output
    clipped as for execute). Matplotlib figures a Python snippet shows come back in
    ``artifacts.charts`` (in the default snapshot), not in the output."""
    language = body.language or sandbox.labels.get(LANGUAGE_LABEL, "python")
    work = agent.code_run(body.code, language, body.argv, body.envs, body.timeout)
    done = await unless_client_leaves(request, work)
    return CodeRunResponse(exit_code=done.exit_code, result=done.output,
                           artifacts=CodeRunArtifacts(charts=list(done.charts)))


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


async def update_env(body: UpdateEnvRequest, sandbox: StartedSandboxDep,
                     toolbox: ToolboxDep) -> dict[str, str]:  # fmt: skip
    """Remove ``unset`` (and, with ``unsetValuePrefix``, the variables whose value starts
    with it), then add ``set``, for processes, sessions and terminals started later
    (running ones keep theirs) until the sandbox stops; the environment new processes
    now get."""
    updated = await toolbox.update_env(sandbox, body.set, body.unset, body.unset_value_prefix)
    agent = toolbox.agent(updated)
    if body.unset or body.unset_value_prefix:  # also what the sandbox started with
        await agent.forget_env(body.unset or [], body.unset_value_prefix, list(body.set or {}))
    return (await agent.info()).env


# Daytona's Python SDK sends this body with no Content-Type: JSON all the same.
router.add_api_route("/env", update_env, methods=["POST"], strict_content_type=False)


@router.get("/version")
async def version(agent: AgentDep) -> dict[str, str]:
    """The toolbox agent's version."""
    return {"version": (await agent.info()).version}
