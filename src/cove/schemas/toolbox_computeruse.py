"""Wire models of the toolbox's computer-use API (``/computeruse/...``), as the SDK's
toolbox client defines them (``MouseClickRequest``, ``ScreenshotResponse``...)."""

from __future__ import annotations

from pydantic import Field

from cove.schemas.base import WireModel

Coordinate = Field(default=None, ge=0, le=100_000)


class Done(WireModel):
    """The agent's answer to an action that returns nothing."""


class ProcessStatus(WireModel):
    auto_restart: bool | None = None
    pid: int | None = None
    priority: int | None = None
    running: bool | None = None


class ComputerUseStartResponse(WireModel):
    """``POST /computeruse/start`` (and ``/stop``: ``ComputerUseStopResponse``)."""

    message: str | None = None
    status: dict[str, ProcessStatus] | None = None


ComputerUseStopResponse = ComputerUseStartResponse


class ComputerUseStatusResponse(WireModel):
    """``active`` (every process runs), ``partial`` or ``inactive``."""

    status: str | None = None


class ProcessStatusResponse(WireModel):
    process_name: str | None = None
    running: bool | None = None


class ProcessLogsResponse(WireModel):
    logs: str | None = None
    process_name: str | None = None


class ProcessErrorsResponse(WireModel):
    errors: str | None = None
    process_name: str | None = None


class ProcessRestartResponse(WireModel):
    message: str | None = None
    process_name: str | None = None


class Position(WireModel):
    """``MousePositionResponse``, ``MouseClickResponse``, ``MouseDragResponse``."""

    x: int | None = None
    y: int | None = None


class MouseMoveRequest(WireModel):
    x: int | None = Coordinate
    y: int | None = Coordinate


class MouseButtonRequest(MouseMoveRequest):
    """``MouseDownRequest`` and ``MouseUpRequest``: x and y are optional."""

    button: str | None = None


class MouseClickRequest(MouseButtonRequest):
    clicks: int | None = None
    double: bool | None = None
    modifiers: list[str] | None = None


class MouseDragRequest(WireModel):
    button: str | None = None
    end_x: int | None = Coordinate
    end_y: int | None = Coordinate
    modifiers: list[str] | None = None
    start_x: int | None = Coordinate
    start_y: int | None = Coordinate


class MouseScrollRequest(MouseMoveRequest):
    amount: int | None = Field(default=None, ge=0)
    direction: str | None = None
    modifiers: list[str] | None = None


class ScrollResponse(WireModel):
    success: bool | None = None


class KeyboardTypeRequest(WireModel):
    delay: int | None = Field(default=None, description="milliseconds between keystrokes")
    text: str | None = None


class KeyboardPressRequest(WireModel):
    key: str | None = None
    modifiers: list[str] | None = None


class KeyboardHotkeyRequest(WireModel):
    keys: str | None = Field(default=None, description='e.g. "ctrl+c"')


class KeyboardKeyRequest(WireModel):
    """``KeyboardKeyDownRequest`` and ``KeyboardKeyUpRequest``."""

    key: str


class ScreenshotResponse(WireModel):
    cursor_position: Position | None = None
    screenshot: str | None = None
    size_bytes: int | None = None


class DisplayInfo(WireModel):
    height: int | None = None
    id: int | None = None
    is_active: bool | None = None
    width: int | None = None
    x: int | None = None
    y: int | None = None


class DisplayInfoResponse(WireModel):
    displays: list[DisplayInfo] | None = None


class WindowInfo(DisplayInfo):
    title: str | None = None


class WindowsResponse(WireModel):
    windows: list[WindowInfo] | None = None
