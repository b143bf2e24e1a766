"""Wire models of the accessibility tree (``/computeruse/a11y/...``), as the SDK's
toolbox client defines them (``ComputerUseAccessibilityNode``...)."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel

NodeId = Field(min_length=1, max_length=1024, description="<bus name>:<object path>")


class AccessibilityBounds(WireModel):
    height: int | None = None
    width: int | None = None
    x: int | None = None
    y: int | None = None


class ComputerUseAccessibilityNode(WireModel):
    actions: list[str] | None = None
    bounds: AccessibilityBounds | None = None
    children: list[ComputerUseAccessibilityNode] | None = None
    description: str | None = None
    id: str | None = None
    name: str | None = None
    role: str | None = None
    states: list[str] | None = None


class AccessibilityTreeResponse(WireModel):
    root: ComputerUseAccessibilityNode | None = None
    truncated: bool | None = None


class AccessibilityNodesResponse(WireModel):
    matches: list[ComputerUseAccessibilityNode] | None = None
    truncated: bool | None = None


class FindAccessibilityNodesRequest(WireModel):
    limit: int | None = Field(default=None, ge=0, le=100_000,
                              description="0: the default (500); at most 5000 are returned")
    name: str | None = Field(default=None, max_length=1000)
    name_match: str | None = Field(default=None, pattern="^(exact|substring|regex)?$",
                                   description='"exact" | "substring" | "regex"')
    pid: int | None = Field(default=None, ge=1, le=4_194_304)
    role: str | None = Field(default=None, max_length=100)
    scope: str | None = Field(default=None, pattern="^(focused|pid|all)?$")
    states: list[str] | None = Field(default=None, max_length=64)


class AccessibilityNodeRequest(WireModel):
    id: str = NodeId


class AccessibilityInvokeRequest(AccessibilityNodeRequest):
    action: str | None = Field(default=None, max_length=256)


class AccessibilitySetValueRequest(AccessibilityNodeRequest):
    value: str | None = Field(default=None, max_length=100_000)
