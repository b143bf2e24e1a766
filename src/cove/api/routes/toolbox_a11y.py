"""Toolbox: the accessibility (AT-SPI) tree of the sandbox's desktop
(``/toolbox/{id}/computeruse/a11y/...``).

The agent (``cove.agent.computer_a11y``) asks AT-SPI inside the sandbox, as the
desktop's user; node ids are Daytona's, ``<bus name>:<object path>``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from cove.api.deps import AgentDep
from cove.schemas.toolbox_a11y import (
    AccessibilityInvokeRequest,
    AccessibilityNodeRequest,
    AccessibilityNodesResponse,
    AccessibilitySetValueRequest,
    AccessibilityTreeResponse,
    FindAccessibilityNodesRequest,
)

router = APIRouter(tags=["toolbox"], prefix="/computeruse/a11y")
Scope = Annotated[str | None, Query(pattern="^(focused|pid|all)?$")]
Pid = Annotated[int | None, Query(ge=1, le=4_194_304)]
Depth = Annotated[int | None, Query(alias="maxDepth", ge=-1, le=1000)]


@router.get("/tree")
async def get_tree(agent: AgentDep, scope: Scope = None, pid: Pid = None,
                   max_depth: Depth = None) -> AccessibilityTreeResponse:  # fmt: skip
    """The tree of the ``focused`` application (default), of ``pid``'s, or ``all``
    (``maxDepth`` -1: unbounded, 0: the root only; at most 5000 nodes, 64 levels)."""
    return await agent.a11y_tree(scope, pid, max_depth)


@router.post("/find")
async def find_nodes(body: FindAccessibilityNodesRequest,
                     agent: AgentDep) -> AccessibilityNodesResponse:  # fmt: skip
    """The nodes matching every filter given (role case-insensitive, name exact,
    substring or regex, all ``states``), as a flat list."""
    return await agent.a11y_find(body)


@router.post("/node/focus")
async def focus_node(body: AccessibilityNodeRequest, agent: AgentDep) -> dict[str, Any]:
    await agent.a11y_node("focus", body)
    return {}


@router.post("/node/invoke")
async def invoke_node(body: AccessibilityInvokeRequest, agent: AgentDep) -> dict[str, Any]:
    """Run the node's ``action`` (its first one when none is named)."""
    await agent.a11y_node("invoke", body)
    return {}


@router.post("/node/value")
async def set_node_value(body: AccessibilitySetValueRequest, agent: AgentDep) -> dict[str, Any]:
    """Set a text node's contents, or a numeric node's value."""
    await agent.a11y_node("value", body)
    return {}
