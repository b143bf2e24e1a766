"""Wire models of the toolbox's computer-use API (``/computeruse/...``), as the SDK's
toolbox client defines them (``MouseClickRequest``, ``ScreenshotResponse``...)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from cove.schemas.base import WireModel

# What the agent accepts (``cove.agent.computer_input``; a unit test keeps them equal).
SCREEN = (1024, 768)
MAX_COORDINATE = 100_000
MAX_TEXT = 10_000
_MODIFIER = "(?i:ctrl|control|alt|option|shift|cmd|command|meta|win|super)"
FORMAT = r"^(?i:png|jpeg|jpg|webp)$"  # of a compressed screenshot
KEY = r"^[\x21-\x7e]{1,32}$"  # a key name or a printable character
# "ctrl+shift+t": modifiers and one key (no "+" in it), or "+" alone.
HOTKEY = rf"^(?:\+|(?:{_MODIFIER}\+)*[\x21-\x2a\x2c-\x7e]{{1,32}})$"
Coordinate = Annotated[int, Field(ge=0, le=MAX_COORDINATE)]


def _given(value: object) -> object:
    if value is None:
        raise ValueError("must be an integer (or left out)")
    return value


# An optional coordinate: left out, or an integer (not null).
MaybeCoordinate = Annotated[
    Coordinate | None, BeforeValidator(_given),
    WithJsonSchema({"type": "integer", "minimum": 0, "maximum": MAX_COORDINATE}),
]
Button = Literal["left", "middle", "right"]
Modifiers = list[Annotated[str, StringConstraints(pattern=f"^{_MODIFIER}$")]]
Key = Annotated[str, StringConstraints(pattern=KEY)]


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
    x: Coordinate
    y: Coordinate


class MouseButtonRequest(WireModel):
    """``MouseDownRequest`` and ``MouseUpRequest``: where the pointer is, or at x and y
    (both or neither)."""

    x: MaybeCoordinate = None
    y: MaybeCoordinate = None
    button: Button | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> MouseButtonRequest:
        if (self.x is None) != (self.y is None):
            raise ValueError("x and y: give both or neither")
        return self

    model_config = ConfigDict(json_schema_extra={"dependentRequired": {"x": ["y"], "y": ["x"]}})


class MouseClickRequest(MouseMoveRequest):
    button: Button | None = None
    clicks: int | None = Field(default=None, ge=1, le=10)
    double: bool | None = None
    modifiers: Modifiers | None = None


class MouseDragRequest(WireModel):
    button: Button | None = None
    end_x: Coordinate
    end_y: Coordinate
    modifiers: Modifiers | None = None
    start_x: Coordinate
    start_y: Coordinate


class MouseScrollRequest(MouseMoveRequest):
    amount: int | None = Field(default=None, ge=0, le=100)
    direction: Literal["up", "down", "left", "right"]
    modifiers: Modifiers | None = None


class ScrollResponse(WireModel):
    success: bool | None = None


class KeyboardTypeRequest(WireModel):
    """Typing takes at most 120 s (``len(text) * delay`` ms)."""

    delay: int | None = Field(default=None, ge=0, le=1000,
                              description="milliseconds between keystrokes (12)")
    text: str = Field(max_length=MAX_TEXT)


class KeyboardPressRequest(WireModel):
    key: Key
    modifiers: Modifiers | None = None


class KeyboardHotkeyRequest(WireModel):
    keys: str = Field(pattern=HOTKEY, description='e.g. "ctrl+c"')


class KeyboardKeyRequest(WireModel):
    """``KeyboardKeyDownRequest`` and ``KeyboardKeyUpRequest``."""

    key: Key


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
