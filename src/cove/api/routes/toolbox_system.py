"""Toolbox: facts about the sandbox as a machine (``/toolbox/{id}/system``)."""

from __future__ import annotations

from fastapi import APIRouter

from cove.api.deps import StartedSandboxDep, ToolboxDep
from cove.core import metrics
from cove.schemas.toolbox_system import SystemMetrics

router = APIRouter(tags=["toolbox"])


@router.get("/system/metrics")
async def system_metrics(sandbox: StartedSandboxDep, toolbox: ToolboxDep) -> SystemMetrics:
    """The sandbox's current CPU, memory and disk use (from its cgroups and its disk)."""
    return await metrics.latest(toolbox.runner, sandbox)
