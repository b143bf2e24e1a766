"""Computer use: mouse, keyboard, screenshots and display (``computeruse_*`` ops).

Everything runs on the desktop ``computer`` started, as its user, through
``computer_run.run_x``: xdotool for input and windows, Python with PIL (the sandbox's,
not the agent's) for screenshots. Input is hostile: it only ever reaches argv
(after ``--`` where a value could look like an option), and is checked first.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from . import protocol
from .agent import Request, op
from .computer import SCREEN
from .computer_run import run_x

BUTTONS = {"left": "1", "middle": "2", "right": "3"}
WHEEL = {"up": "4", "down": "5", "left": "6", "right": "7"}
MODIFIERS = {"ctrl": "ctrl", "control": "ctrl", "alt": "alt", "option": "alt", "shift": "shift",
             "cmd": "super", "command": "super", "meta": "super", "win": "super",
             "super": "super"}  # fmt: skip
KEYS = {"enter": "Return", "return": "Return", "esc": "Escape", "escape": "Escape",
        "backspace": "BackSpace", "tab": "Tab", "space": "space", "delete": "Delete",
        "del": "Delete", "insert": "Insert", "up": "Up", "down": "Down", "left": "Left",
        "right": "Right", "home": "Home", "end": "End", "pageup": "Prior", "pagedown": "Next",
        "capslock": "Caps_Lock", **{f"f{n}": f"F{n}" for n in range(1, 13)}}  # fmt: skip
KEY_RE = re.compile(r"[\x21-\x7e]{1,32}")
MAX_TEXT = 10_000
MAX_TYPING_MS = 120_000
MAX_WINDOWS = 100
MAX_TITLE = 1024
FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
SHOT = """
import sys
from PIL import ImageDraw, ImageGrab
fmt, quality, scale, x, y, w, h, cx, cy, cursor = sys.argv[1:]
x, y, w, h, cx, cy, quality = map(int, (x, y, w, h, cx, cy, quality))
image = ImageGrab.grab(xdisplay=":0").convert("RGB").crop((x, y, x + w, y + h))
if cursor == "1":
    cx, cy = cx - x, cy - y
    ImageDraw.Draw(image).polygon([(cx, cy), (cx, cy + 16), (cx + 4, cy + 12), (cx + 11, cy + 11)],
                                  fill="white", outline="black")
if float(scale) != 1.0:
    image = image.resize((max(1, round(w * float(scale))), max(1, round(h * float(scale)))))
options = {"quality": quality} if fmt != "PNG" else {}
image.save(sys.stdout.buffer, fmt, **options)
"""


def _int(request: Request, name: str, default: Any = ..., low: int = 0,
         high: int = 100_000) -> int:  # fmt: skip
    value = request.arg(name, int, default)
    if isinstance(value, bool) or not low <= value <= high:
        raise protocol.bad_request(f"{name} must be an integer from {low} to {high}")
    return value


def _button(request: Request) -> str:
    name = request.arg("button", str, None) or "left"
    if name not in BUTTONS:
        raise protocol.bad_request(f"button must be one of {', '.join(BUTTONS)}")
    return BUTTONS[name]


def _modifiers(names: Any) -> list[str]:
    if names is None:
        return []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise protocol.bad_request("modifiers must be a list of strings")
    unknown = [n for n in names if n.lower() not in MODIFIERS]
    if unknown:
        raise protocol.bad_request(f"unknown modifier '{unknown[0]}' (ctrl, alt, shift, cmd)")
    return list(dict.fromkeys(MODIFIERS[n.lower()] for n in names))


def _key(name: Any) -> str:
    if not isinstance(name, str) or not KEY_RE.fullmatch(name):
        raise protocol.bad_request("key must be 1 to 32 printable characters without spaces")
    return MODIFIERS.get(name.lower()) or KEYS.get(name.lower(), name)


def _shell_values(out: str) -> dict[str, int]:
    """``xdotool ... --shell`` output (``X=1`` lines) as numbers (0 when missing)."""
    values = dict(line.split("=", 1) for line in out.split() if "=" in line)
    keys = ("X", "Y", "WIDTH", "HEIGHT")
    return {k: int(values[k]) if values.get(k, "").isdigit() else 0 for k in keys}


async def position() -> dict[str, int]:
    """Where the pointer is."""
    values = _shell_values((await run_x(["xdotool", "getmouselocation", "--shell"])).decode())
    return {"x": values["X"], "y": values["Y"]}


async def _with_modifiers(mods: list[str], argv: list[str]) -> None:
    """Run ``xdotool argv`` with ``mods`` held down (released whatever happens)."""
    if mods:
        await run_x(["xdotool", "keydown", "--", *mods])
    try:
        await run_x(["xdotool", *argv])
    finally:
        if mods:
            await run_x(["xdotool", "keyup", "--", *mods])


def _at(request: Request, x: str = "x", y: str = "y") -> list[str]:
    return ["mousemove", str(_int(request, x)), str(_int(request, y))]


@op("computeruse_mouse_position")
async def mouse_position(request: Request) -> dict[str, Any]:
    """Where the pointer is (x, y)."""
    return await position()


@op("computeruse_mouse_move")
async def mouse_move(request: Request) -> dict[str, Any]:
    """Move the pointer to x, y; where it is then."""
    await run_x(["xdotool", *_at(request)])
    return await position()


@op("computeruse_mouse_click")
async def mouse_click(request: Request) -> dict[str, Any]:
    """Click ``clicks`` times (1 to 10; ``double``: 2) with ``modifiers`` held."""
    clicks = request.arg("clicks", int, None)
    if clicks is None:
        clicks = 2 if request.arg("double", bool, False) else 1
    elif isinstance(clicks, bool) or not 1 <= clicks <= 10:
        raise protocol.bad_request("clicks must be from 1 to 10")
    button, mods = _button(request), _modifiers(request.arg("modifiers", list, None))
    await _with_modifiers(mods, [*_at(request), "click", "--repeat", str(clicks), button])
    return await position()


@op("computeruse_mouse_drag")
async def mouse_drag(request: Request) -> dict[str, Any]:
    """Press ``button`` at startX, startY, move to endX, endY, release (``modifiers`` held)."""
    button, mods = _button(request), _modifiers(request.arg("modifiers", list, None))
    await _with_modifiers(mods, [*_at(request, "startX", "startY"), "mousedown", button,
                                 *_at(request, "endX", "endY"), "mouseup", button])  # fmt: skip
    return await position()


@op("computeruse_mouse_button")
async def mouse_button(request: Request) -> dict[str, Any]:
    """Press (``down``: true) or release a button, where the pointer is or at x, y."""
    action = "mousedown" if request.arg("down", bool) else "mouseup"
    move = _at(request) if request.arg("x", int, None) is not None else []
    await run_x(["xdotool", *move, action, _button(request)])
    return await position()


@op("computeruse_mouse_scroll")
async def mouse_scroll(request: Request) -> dict[str, Any]:
    """Turn the wheel ``amount`` notches ``direction`` (up, down, left, right) at x, y."""
    direction = request.arg("direction", str, None)
    if direction not in WHEEL:
        raise protocol.bad_request(f"direction must be one of {', '.join(WHEEL)}")
    amount = _int(request, "amount", 1, 0, 100)
    mods = _modifiers(request.arg("modifiers", list, None))
    if amount:
        await _with_modifiers(mods, [*_at(request), "click", "--repeat", str(amount),
                                     WHEEL[direction]])  # fmt: skip
    return {"success": True}


@op("computeruse_keyboard_type")
async def keyboard_type(request: Request) -> dict[str, Any]:
    """Type ``text`` (``delay`` ms between keystrokes, default 12) into the focused window."""
    text = request.arg("text", str)
    delay = 12 if request.arg("delay", int, None) is None else _int(request, "delay", 12, 0, 1000)
    if len(text) > MAX_TEXT or len(text) * delay > MAX_TYPING_MS:
        raise protocol.bad_request(f"text must be at most {MAX_TEXT} characters and take at "
                                   f"most {MAX_TYPING_MS // 1000} s to type")  # fmt: skip
    if text:
        await run_x(["xdotool", "type", "--delay", str(delay), "--", text],
                    timeout=30 + len(text) * delay / 1000)
    return {}


@op("computeruse_keyboard_press")
async def keyboard_press(request: Request) -> dict[str, Any]:
    """Press a key (``key``, with ``modifiers``) or a combination (``keys``: "ctrl+c")."""
    combo = request.arg("keys", str, None)
    if combo is not None:
        *mods, key = combo.split("+") if combo != "+" else ["+"]
    else:
        key, mods = request.arg("key", str), request.arg("modifiers", list, None) or []
    chord = [*_modifiers(mods), _key(key)]
    await run_x(["xdotool", "key", "--", "+".join(chord)])
    return {}


@op("computeruse_keyboard_hold")
async def keyboard_hold(request: Request) -> dict[str, Any]:
    """Hold (``down``: true) or release one key."""
    action = "keydown" if request.arg("down", bool) else "keyup"
    await run_x(["xdotool", action, "--", _key(request.arg("key", str))])
    return {}


@op("computeruse_screenshot")
async def screenshot(request: Request) -> dict[str, Any]:
    """The screen (or a region: x, y, width, height) as base64 PNG, JPEG or WebP."""
    fmt = FORMATS.get((request.arg("format", str, None) or "png").lower())
    if fmt is None:
        raise protocol.bad_request(f"format must be one of {', '.join(FORMATS)}")
    quality = _int(request, "quality", 85, 1, 100) if request.arg("quality", int, None) else 85
    scale = request.arg("scale", (int, float), None) or 1.0
    if isinstance(scale, bool) or not 0.1 <= scale <= 1.0:
        raise protocol.bad_request("scale must be from 0.1 to 1.0")
    x, y = _int(request, "x", 0, 0, SCREEN[0] - 1), _int(request, "y", 0, 0, SCREEN[1] - 1)
    width = _int(request, "width", SCREEN[0] - x, 1, SCREEN[0] - x)
    height = _int(request, "height", SCREEN[1] - y, 1, SCREEN[1] - y)
    cursor = await position()
    show = "1" if request.arg("showCursor", bool, False) else "0"
    image = await run_x(["python3", "-I", "-c", SHOT, fmt, str(quality), str(float(scale)),
                         str(x), str(y), str(width), str(height), str(cursor["x"]),
                         str(cursor["y"]), show])  # fmt: skip
    return {"screenshot": base64.b64encode(image).decode(), "sizeBytes": len(image),
            "cursorPosition": cursor}  # fmt: skip


@op("computeruse_display_info")
async def display_info(request: Request) -> dict[str, Any]:
    """The one display: its size, at 0, 0."""
    width, height = (int(v) for v in (await run_x(["xdotool", "getdisplaygeometry"])).split())
    return {"displays": [{"id": 0, "x": 0, "y": 0, "width": width, "height": height,
                          "isActive": True}]}  # fmt: skip


@op("computeruse_windows")
async def windows(request: Request) -> dict[str, Any]:
    """The visible, named windows (at most MAX_WINDOWS) and which one is active."""
    found = await run_x(["xdotool", "search", "--onlyvisible", "--name", "."], codes=(0, 1))
    ids = [int(w) for w in found.split()[:MAX_WINDOWS]]
    try:
        active = int(await run_x(["xdotool", "getactivewindow"]))
    except (protocol.AgentError, ValueError):
        active = None
    listed = []
    for wid in ids:
        try:
            title = (await run_x(["xdotool", "getwindowname", str(wid)])).decode(errors="replace")
            shell = (await run_x(["xdotool", "getwindowgeometry", "--shell", str(wid)])).decode()
        except protocol.AgentError:
            continue  # closed meanwhile
        geo = _shell_values(shell)
        listed.append({"id": wid, "title": title.rstrip("\n")[:MAX_TITLE], "x": geo["X"],
                       "y": geo["Y"], "width": geo["WIDTH"], "height": geo["HEIGHT"],
                       "isActive": wid == active})  # fmt: skip
    return {"windows": listed}
