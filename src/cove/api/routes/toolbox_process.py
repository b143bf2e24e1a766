"""Toolbox: running commands and code, and facts about the sandbox (``/toolbox/{id}``)."""

from __future__ import annotations

from fastapi import APIRouter

from cove.api.deps import StartedSandboxDep, ToolboxDep
from cove.core.validation import LANGUAGE_LABEL
from cove.schemas.toolbox import (
    CodeRunRequest,
    CodeRunResponse,
    DirResponse,
    ExecuteRequest,
    ExecuteResponse,
)
from cove.toolbox import protocol

router = APIRouter(tags=["toolbox"])


async def _collect(
    toolbox: ToolboxDep, sandbox: StartedSandboxDep, message: dict
) -> tuple[int, str]:
    chunks: list[bytes] = []
    async with toolbox.call(sandbox, message) as agent:
        async for kind, payload in agent.frames():
            if kind in (protocol.STDOUT, protocol.STDERR):
                chunks.append(payload)
        code = int(agent.result["exitCode"])
    return code, b"".join(chunks).decode(errors="replace")


@router.post("/process/execute")
async def execute(body: ExecuteRequest, sandbox: StartedSandboxDep,
                  toolbox: ToolboxDep) -> ExecuteResponse:
    """Run a shell command and wait for it."""
    code, output = await _collect(toolbox, sandbox, {
        "op": "exec", "command": body.command, "cwd": body.cwd,
        "env": {**sandbox.env, **(body.envs or {})},
        "timeout": body.timeout, "user": sandbox.user})
    return ExecuteResponse(exit_code=code, result=output)


@router.post("/process/code-run")
async def code_run(body: CodeRunRequest, sandbox: StartedSandboxDep,
                   toolbox: ToolboxDep) -> CodeRunResponse:
    """Run a snippet in the sandbox's language."""
    language = body.language or sandbox.labels.get(LANGUAGE_LABEL, "python")
    code, output = await _collect(toolbox, sandbox, {
        "op": "code_run", "code": body.code, "language": language, "argv": body.argv or [],
        "env": {**sandbox.env, **(body.envs or {})}, "timeout": body.timeout,
        "user": sandbox.user})
    return CodeRunResponse(exit_code=code, result=output)


def _info(sandbox: StartedSandboxDep) -> dict:
    return {"op": "info", "user": sandbox.user, "env": sandbox.env}


@router.get("/user-home-dir")
async def user_home_dir(sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> DirResponse:
    """The sandbox user's home directory."""
    info = await toolbox.request(sandbox, _info(sandbox))
    return DirResponse(dir=info["home"])


@router.get("/work-dir")
async def work_dir(sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> DirResponse:
    """The directory commands start in by default."""
    info = await toolbox.request(sandbox, _info(sandbox))
    return DirResponse(dir=info["workDir"])


@router.get("/env")
async def env(sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> dict[str, str]:
    """The environment processes of the sandbox user get."""
    info = await toolbox.request(sandbox, _info(sandbox))
    return dict(info["env"])


@router.get("/version")
async def version(sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> dict[str, str]:
    """The toolbox agent's version."""
    info = await toolbox.request(sandbox, _info(sandbox))
    return {"version": info["version"]}
