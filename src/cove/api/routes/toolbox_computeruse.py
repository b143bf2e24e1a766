"""Toolbox: computer use, the sandbox's desktop (``/toolbox/{id}/computeruse/...``).

The agent (``cove.agent.computer``) runs Xvfb, a window manager, x11vnc and noVNC
(port 6080, reached through preview URLs) as the sandbox user, and drives them with
xdotool; these routes only translate. Screen recordings are in ``toolbox_recordings``,
the accessibility tree in ``toolbox_a11y``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from cove.api.deps import AgentDep
from cove.schemas.toolbox_computeruse import (
    FORMAT,
    SCREEN,
    ComputerUseStartResponse,
    ComputerUseStatusResponse,
    DisplayInfoResponse,
    Done,
    KeyboardHotkeyRequest,
    KeyboardKeyRequest,
    KeyboardPressRequest,
    KeyboardTypeRequest,
    MouseButtonRequest,
    MouseClickRequest,
    MouseDragRequest,
    MouseMoveRequest,
    MouseScrollRequest,
    Position,
    ProcessErrorsResponse,
    ProcessLogsResponse,
    ProcessRestartResponse,
    ProcessStatusResponse,
    ScreenshotResponse,
    ScrollResponse,
    WindowsResponse,
)

router = APIRouter(tags=["toolbox"], prefix="/computeruse")
Cursor = Annotated[bool, Query(alias="showCursor")]
# A region of the screen (one past its edge is refused by the agent).
X = Annotated[int, Query(ge=0, le=SCREEN[0] - 1)]
Y = Annotated[int, Query(ge=0, le=SCREEN[1] - 1)]
Width = Annotated[int, Query(ge=1, le=SCREEN[0])]
Height = Annotated[int, Query(ge=1, le=SCREEN[1])]
Quality = Annotated[int | None, Query(ge=1, le=100)]
Format = Annotated[str | None, Query(alias="format", pattern=FORMAT)]
Scale = Annotated[float | None, Query(ge=0.1, le=1.0)]


@router.post("/start")
async def start(agent: AgentDep) -> ComputerUseStartResponse:
    """Start the desktop (Xvfb, window manager, x11vnc, noVNC on port 6080)."""
    return await agent.computer_start()


@router.post("/stop")
async def stop(agent: AgentDep) -> ComputerUseStartResponse:
    """Stop every desktop process."""
    return await agent.computer_stop()


@router.get("/status")
@router.get("/process-status")
async def status(agent: AgentDep) -> ComputerUseStatusResponse:
    """``active``, ``partial`` or ``inactive``."""
    return await agent.computer_status()


@router.get("/process/{process_name}/status")
async def process_status(process_name: str, agent: AgentDep) -> ProcessStatusResponse:
    return await agent.computer_process(process_name, "status", ProcessStatusResponse)


@router.get("/process/{process_name}/logs")
async def process_logs(process_name: str, agent: AgentDep) -> ProcessLogsResponse:
    """The newest 64 KiB the process printed on stdout."""
    return await agent.computer_process(process_name, "logs", ProcessLogsResponse)


@router.get("/process/{process_name}/errors")
async def process_errors(process_name: str, agent: AgentDep) -> ProcessErrorsResponse:
    """The newest 64 KiB the process printed on stderr."""
    return await agent.computer_process(process_name, "errors", ProcessErrorsResponse)


@router.post("/process/{process_name}/restart")
async def process_restart(process_name: str, agent: AgentDep) -> ProcessRestartResponse:
    return await agent.computer_process(process_name, "restart", ProcessRestartResponse)


@router.get("/mouse/position")
async def mouse_position(agent: AgentDep) -> Position:
    return await agent.computer_pointer("mouse_position")


@router.post("/mouse/move")
async def mouse_move(body: MouseMoveRequest, agent: AgentDep) -> Position:
    return await agent.computer_pointer("mouse_move", body)


@router.post("/mouse/click")
async def mouse_click(body: MouseClickRequest, agent: AgentDep) -> Position:
    return await agent.computer_pointer("mouse_click", body)


@router.post("/mouse/drag")
async def mouse_drag(body: MouseDragRequest, agent: AgentDep) -> Position:
    return await agent.computer_pointer("mouse_drag", body)


@router.post("/mouse/down")
async def mouse_down(body: MouseButtonRequest, agent: AgentDep) -> Position:
    return await agent.computer_pointer("mouse_button", body, down=True)


@router.post("/mouse/up")
async def mouse_up(body: MouseButtonRequest, agent: AgentDep) -> Position:
    return await agent.computer_pointer("mouse_button", body, down=False)


@router.post("/mouse/scroll")
async def mouse_scroll(body: MouseScrollRequest, agent: AgentDep) -> ScrollResponse:
    return await agent.computer_input("mouse_scroll", body, ScrollResponse)


@router.post("/keyboard/type")
async def keyboard_type(body: KeyboardTypeRequest, agent: AgentDep) -> dict[str, Any]:
    await agent.computer_input("keyboard_type", body, Done)
    return {}


@router.post("/keyboard/key")
async def keyboard_key(body: KeyboardPressRequest, agent: AgentDep) -> dict[str, Any]:
    await agent.computer_input("keyboard_press", body, Done)
    return {}


@router.post("/keyboard/hotkey")
async def keyboard_hotkey(body: KeyboardHotkeyRequest, agent: AgentDep) -> dict[str, Any]:
    await agent.computer_input("keyboard_press", body, Done)
    return {}


@router.post("/keyboard/down")
async def keyboard_down(body: KeyboardKeyRequest, agent: AgentDep) -> dict[str, Any]:
    await agent.computer_input("keyboard_hold", body, Done, down=True)
    return {}


@router.post("/keyboard/up")
async def keyboard_up(body: KeyboardKeyRequest, agent: AgentDep) -> dict[str, Any]:
    await agent.computer_input("keyboard_hold", body, Done, down=False)
    return {}


@router.get("/screenshot")
async def screenshot(agent: AgentDep, show_cursor: Cursor = False) -> ScreenshotResponse:
    """The whole screen as base64 PNG."""
    return await agent.computer_screenshot(showCursor=show_cursor)


@router.get("/screenshot/region")
async def screenshot_region(
    agent: AgentDep, x: X, y: Y, width: Width, height: Height,
    show_cursor: Cursor = False,
) -> ScreenshotResponse:  # fmt: skip
    return await agent.computer_screenshot(x=x, y=y, width=width, height=height,
                                           showCursor=show_cursor)  # fmt: skip


@router.get("/screenshot/compressed")
async def screenshot_compressed(agent: AgentDep, show_cursor: Cursor = False,
                                fmt: Format = None, quality: Quality = None,
                                scale: Scale = None) -> ScreenshotResponse:  # fmt: skip
    """The screen as PNG, JPEG or WebP (``quality`` 1-100), scaled by 0.1-1.0."""
    return await agent.computer_screenshot(showCursor=show_cursor, format=fmt,
                                           quality=quality, scale=scale)  # fmt: skip


@router.get("/screenshot/region/compressed")
async def screenshot_region_compressed(agent: AgentDep, x: X, y: Y,
                                       width: Width, height: Height, show_cursor: Cursor = False,
                                       fmt: Format = None, quality: Quality = None,
                                       scale: Scale = None) -> ScreenshotResponse:  # fmt: skip
    return await agent.computer_screenshot(x=x, y=y, width=width, height=height,
                                           showCursor=show_cursor, format=fmt,
                                           quality=quality, scale=scale)  # fmt: skip


@router.get("/display/info")
async def display_info(agent: AgentDep) -> DisplayInfoResponse:
    return await agent.computer_display()


@router.get("/display/windows")
async def display_windows(agent: AgentDep) -> WindowsResponse:
    return await agent.computer_windows()
