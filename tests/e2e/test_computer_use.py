"""Computer use through the official SDK: the desktop starts (Xvfb, window manager,
x11vnc, noVNC), a window opens, the keyboard types into it and the mouse moves,
screenshots show the change, noVNC answers through a preview URL, bad input is a
400, another organization gets 404, and stop leaves no desktop process behind."""

from __future__ import annotations

import base64
import json
import shutil
import struct
import subprocess
import time
import zlib

import httpx
import pytest
from daytona import Daytona, DaytonaError
from daytona.common.computer_use import ScreenshotOptions, ScreenshotRegion
from websockets.sync.client import connect

from tests.e2e.conftest import KEY, Server, run_ok
from tests.e2e.test_tenancy import _key
from tests.e2e.test_ts_sdk import TS

pytestmark = pytest.mark.e2e
PROCESSES = {"xvfb", "wm", "x11vnc", "novnc"}
DESKTOP_COMMANDS = ("Xvfb", "matchbox-window", "x11vnc", "websockify")


def png(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed (filtered) scanlines of a PNG: two images
    with equal scanlines have equal pixels, and unequal ones differ (the encoder is
    deterministic)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (size,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + size]
        pos += 12 + size
    return width, height, zlib.decompress(idat)


def shot(sb) -> tuple[int, int, bytes]:  # noqa: ANN001
    taken = sb.computer_use.screenshot.take_full_screen()
    data = base64.b64decode(taken.screenshot)
    assert taken.size_bytes == len(data)
    return png(data)


def wait_for(check, what: str, seconds: float = 20.0, explain=None):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {explain() if explain else ''}")


def explain_desktop(sb):  # noqa: ANN001, ANN201
    cu = sb.computer_use
    errors = {n: cu.get_process_errors(n).errors[-300:] for n in sorted(PROCESSES)}
    running = {n: cu.get_process_status(n).running for n in sorted(PROCESSES)}
    return f"{running} {errors} {run_ok(sb, 'ps -eo pid,args | cut -c1-60')}"


def desktop_processes(sb) -> list[str]:  # noqa: ANN001
    listed = run_ok(sb, "ps -eo args").splitlines()
    return [p for p in listed if any(p.startswith(c) or f"/{c}" in p for c in DESKTOP_COMMANDS)]


def test_desktop_through_the_sdk(daytona: Daytona, sandboxes: list) -> None:
    sb = daytona.create()
    sandboxes.append(sb)
    cu = sb.computer_use
    with pytest.raises(DaytonaError) as not_started:
        cu.mouse.get_position()
    assert not_started.value.status_code == 400

    started = cu.start()
    assert set(started.status) == PROCESSES and all(s.running for s in started.status.values())
    assert cu.get_status().status == "active"
    assert cu.get_process_status("xfce4").running  # Daytona's name of the window manager
    info = cu.display.get_info()
    assert (info.displays[0].width, info.displays[0].height) == (1024, 768)

    cu.keyboard.type("$(touch /tmp/pwned)`touch /tmp/pwned`")  # no window: nobody gets it
    assert "pwned" not in run_ok(sb, "ls /tmp")
    empty = shot(sb)
    assert cu.display.get_windows().windows == []
    run_ok(sb, "DISPLAY=:0 nohup xterm >/dev/null 2>&1 &")
    term = wait_for(lambda: cu.display.get_windows().windows, "the xterm window")[0]
    assert term.is_active and term.width > 0 and term.height > 0 and "daytona@" in term.title
    with_window = wait_for(lambda: (s := shot(sb)) != empty and s, "the window on screen")
    assert with_window[:2] == (1024, 768)

    assert (cu.mouse.move(200, 300).x, cu.mouse.get_position().y) == (200, 300)
    clicked = cu.mouse.click(term.x + 50, term.y + 50)
    assert (clicked.x, clicked.y) == (term.x + 50, term.y + 50)
    cu.keyboard.type("echo --delay typed-$((6*7)) > /tmp/typed")
    cu.keyboard.press("enter")
    typed_text = wait_for(lambda: run_ok(sb, "cat /tmp/typed 2>/dev/null").strip(), "typed")
    assert typed_text == "--delay typed-42"
    typed = shot(sb)
    assert typed[2] != with_window[2]  # the pixels changed
    cu.keyboard.hotkey("ctrl+l")
    assert cu.mouse.scroll(300, 300, "down", 2) is True
    dragged = cu.mouse.drag(10, 10, 40, 60)
    assert (dragged.x, dragged.y) == (40, 60)

    region = cu.screenshot.take_region(ScreenshotRegion(x=10, y=20, width=100, height=50))
    assert png(base64.b64decode(region.screenshot))[:2] == (100, 50)
    small = cu.screenshot.take_compressed(ScreenshotOptions(fmt="jpeg", quality=40, scale=0.5))
    assert base64.b64decode(small.screenshot)[:2] == b"\xff\xd8"
    assert small.size_bytes < len(base64.b64decode(region.screenshot)) * 100

    restarted = cu.restart_process("x11vnc")
    assert restarted.process_name == "x11vnc"
    wait_for(lambda: cu.get_process_status("x11vnc").running, "x11vnc again")
    assert isinstance(cu.get_process_errors("xvfb").errors, str)
    assert cu.get_process_logs("novnc").process_name == "novnc"

    listening = wait_for(lambda: "127.0.0.1:5901" in (s := run_ok(sb, "ss -ltnH")) and s, "VNC")
    vnc = [line.split()[3] for line in listening.splitlines() if ":590" in line.split()[3]]
    assert vnc and all(a.startswith(("127.0.0.1:", "[::1]:")) for a in vnc)  # inside only
    link = sb.get_preview_link(6080)
    token = {"X-Daytona-Preview-Token": link.token}
    page = httpx.get(f"{link.url}/vnc.html", headers=token, timeout=10)
    assert page.status_code == 200 and "noVNC" in page.text
    ws_url = link.url.replace("http://", "ws://") + "/websockify"
    banner = wait_for(lambda: _rfb_banner(ws_url, token), "the VNC server through noVNC")
    assert banner.startswith(b"RFB 003.")

    stopped = cu.stop()
    assert not any(s.running for s in stopped.status.values())
    assert cu.get_status().status == "inactive"
    assert desktop_processes(sb) == []


def _answers(call) -> bool:  # noqa: ANN001
    try:
        return bool(call())
    except DaytonaError:
        return False


def _rfb_banner(url: str, headers: dict[str, str]) -> bytes | None:
    try:
        with connect(url, additional_headers=headers, subprotocols=["binary"]) as ws:
            data = ws.recv(timeout=5)
    except Exception:  # noqa: BLE001 - x11vnc may still be restarting
        return None
    return data if isinstance(data, bytes) else None


BAD_INPUT = [
    ("POST", "mouse/click", {"x": 1, "y": 1, "clicks": 0}),
    ("POST", "mouse/click", {"x": 1, "y": 1, "button": "nope"}),
    ("POST", "mouse/move", {"x": -1, "y": 1}),
    ("POST", "mouse/scroll", {"x": 1, "y": 1, "direction": "sideways"}),
    ("POST", "keyboard/key", {"key": "a b"}),
    ("POST", "keyboard/key", {"key": "a", "modifiers": ["hyper"]}),
    ("POST", "keyboard/hotkey", {"keys": "ctrl+"}),
    ("POST", "keyboard/down", {"key": "0{VLed"}),  # no such key (schemathesis: was a 502)
    ("POST", "keyboard/up", {"key": "\\"}),
    ("POST", "keyboard/type", {"text": "x" * 20_000}),
    ("GET", "screenshot/region?x=2000&y=0&width=10&height=10", None),
    ("GET", "screenshot/compressed?scale=5", None),
    ("GET", "screenshot/compressed?format=bmp", None),
]


def test_bad_input_and_other_organizations(server: Server, daytona: Daytona,
                                           sandboxes: list) -> None:  # fmt: skip
    sb = daytona.create()
    sandboxes.append(sb)
    sb.computer_use.start()
    base = f"{server.url}/toolbox/{sb.id}/computeruse"
    mine = {"Authorization": f"Bearer {KEY}"}
    for method, path, body in BAD_INPUT:
        r = httpx.request(method, f"{base}/{path}", json=body, headers=mine, timeout=30)
        assert r.status_code == 400, (path, body, r.text)
        assert r.json()["statusCode"] == 400
    r = httpx.get(f"{base}/process/nope/status", headers=mine)
    assert r.status_code == 404

    theirs = {"Authorization": f"Bearer {_key(server, 'computer-other')}"}
    for method, path in [("POST", "stop"), ("GET", "screenshot"), ("POST", "keyboard/type"),
                         ("GET", "process/xvfb/logs")]:  # fmt: skip
        r = httpx.request(method, f"{base}/{path}", json={"text": "x"}, headers=theirs)
        assert r.status_code == 404, (path, r.text)
    assert sb.computer_use.get_status().status == "active"
    sb.computer_use.stop()


def test_a_hostile_sandbox_cannot_hurt_the_agent(server: Server, daytona: Daytona,
                                                 sandboxes: list) -> None:  # fmt: skip
    """The desktop's processes are the tenant's: killed, they come back; a fake xdotool
    (planted by sandbox root) that floods its output gets an error, and the agent serves on."""
    sb = daytona.create()
    sandboxes.append(sb)
    cu = sb.computer_use
    pid = cu.start().status["xvfb"].pid
    run_ok(sb, f"kill -9 {pid}")
    wait_for(lambda: cu.get_status().status == "active" and _answers(cu.display.get_info),
             "the desktop back after Xvfb was killed", explain=lambda: explain_desktop(sb))
    assert cu.get_process_status("xvfb").running and cu.mouse.move(5, 6).x == 5
    assert "exited" in cu.get_process_errors("xvfb").errors

    flood = "#!/bin/sh\nhead -c 100000000 /dev/zero\n"
    server.runtime().exec(sb.id, ["sh", "-c", f"printf '{flood}' > /usr/bin/xdotool"], user="root")
    with pytest.raises(DaytonaError) as failed:
        cu.mouse.get_position()
    assert failed.value.status_code in (500, 502) and "too large" in str(failed.value)
    assert run_ok(sb, "echo alive").strip() == "alive"
    cu.stop()
    assert desktop_processes(sb) == []


def test_the_desktop_starts_again_after_the_sandbox_restarts(daytona: Daytona,
                                                            sandboxes: list) -> None:  # fmt: skip
    sb = daytona.create()
    sandboxes.append(sb)
    sb.computer_use.start()
    sb.stop()
    sb.start()
    assert sb.computer_use.get_status().status == "inactive"
    started = sb.computer_use.start()
    assert all(s.running for s in started.status.values())
    assert sb.computer_use.display.get_info().displays[0].width == 1024


def test_the_typescript_sdk_drives_the_desktop(server: Server) -> None:
    node = shutil.which("node")
    if node is None or not (TS / "node_modules" / "@daytonaio" / "sdk").is_dir():
        pytest.fail("Node.js and tests/ts/node_modules are needed: run scripts/install")
    done = subprocess.run([node, "computer_check.js", server.api_url, KEY], cwd=TS,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"started": sorted(PROCESSES), "status": "active", "moved": [120, 80],
                   "display": [1024, 768], "png": "PNG", "recording": "recording",
                   "listed": ["completed"], "download": [True, "ftyp"], "afterDelete": 0,
                   "tree": ["desktop frame", ["TS form"]], "saved": "from TS",
                   "stopped": "inactive"}  # fmt: skip
