"""Computer use: the accessibility tree (``computeruse_a11y_*`` ops), as Daytona's.

The desktop runs an AT-SPI bus (``computer.HIDDEN``); each request runs
``a11y_helper`` (AT-SPI through the sandbox's ``python3`` and ``gi``) as the
desktop's user through ``computer_run.run_x``, bounded in time and output. What the
helper prints is the sandbox's word: only its JSON answer of the expected shape
passes, and only the statuses 400, 404 and 503 are taken from it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from . import protocol
from .agent import Request, op
from .computer_run import run_x

HELPER = (Path(__file__).parent / "a11y_helper.py").read_text()
A11Y_SECONDS = 60.0
# The desktop's bus may still be coming up (a loaded host): a new helper each time,
# 0.25 s apart, doubling (about 32 s in all).
BUS_TRIES = 8
PASSED = {400, 404, 503}
MAX_DEPTH = 3 * 66  # JSON levels: a node is 3 deep (node, children, child); see a11y_helper
FIELDS = {"tree": ("scope", "pid", "maxDepth"),
          "find": ("scope", "pid", "role", "name", "nameMatch", "states", "limit"),
          "focus": ("id",), "invoke": ("id", "action"), "value": ("id", "value")}  # fmt: skip


async def _ask(request: Request, what: str) -> dict[str, Any]:
    query = json.dumps({"what": what, **{k: request.message.get(k) for k in FIELDS[what]}})
    for attempt in range(BUS_TRIES - 1):
        try:
            return await _ask_once(query.encode())
        except protocol.AgentError as exc:
            if exc.message != "accessibility bus not reachable":
                raise
            await asyncio.sleep(0.25 * 2**attempt)
    return await _ask_once(query.encode())


async def _ask_once(query: bytes) -> dict[str, Any]:
    out = await run_x(["python3", "-I", "-c", HELPER], stdin=query, timeout=A11Y_SECONDS)
    try:
        answer = json.loads(out)
    except (ValueError, RecursionError):
        raise protocol.AgentError(500, "A11Y_FAILED", "the accessibility helper answered "
                                  "no JSON (is python3-pyatspi installed?)") from None
    if not isinstance(answer, dict):
        raise protocol.AgentError(500, "A11Y_FAILED", "bad answer from the helper")
    error = answer.get("error")
    if isinstance(error, dict):
        status = error.get("status")
        status = status if status in PASSED else 500
        raise protocol.AgentError(status, str(error.get("code", "A11Y_FAILED"))[:64],
                                  str(error.get("message", ""))[:1000])  # fmt: skip
    result = answer.get("result")
    if not isinstance(result, dict) or _depth(result) > MAX_DEPTH:
        raise protocol.AgentError(500, "A11Y_FAILED", "bad answer from the helper")
    return result


def _depth(value: Any) -> int:
    """How deep ``value`` nests (lists and objects), counted without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


@op("computeruse_a11y_tree")
async def tree(request: Request) -> dict[str, Any]:
    """The tree under the scope's root (``focused`` app, ``pid``'s app, or ``all``)."""
    return await _ask(request, "tree")


@op("computeruse_a11y_find")
async def find(request: Request) -> dict[str, Any]:
    """The nodes matching role, name (exact, substring or regex) and states."""
    return await _ask(request, "find")


@op("computeruse_a11y_node")
async def node(request: Request) -> dict[str, Any]:
    """``focus``, ``invoke`` (an action) or set the ``value`` of a node."""
    what = request.arg("what", str)
    if what not in ("focus", "invoke", "value"):
        raise protocol.bad_request(f"unknown node operation '{what}'")
    await _ask(request, what)
    return {}
