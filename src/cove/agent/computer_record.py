"""Computer use: screen recordings (``computeruse_recording_*`` ops), as Daytona's.

A recording is ``ffmpeg -f x11grab`` of the desktop's display (30 frames a second,
H.264 in MP4), run as the desktop's user in a cgroup of its own, writing
``~/.daytona/recordings/{id}_{label}_{time}.mp4`` (``{id}_session_{time}.mp4`` without
a label). Bounds: ``MAX_SECONDS`` and ``MAX_BYTES`` per recording (ffmpeg's ``-t`` and
``-fs``: it then ends the file properly and the recording is ``completed``), at most
``MAX_ACTIVE`` at once. Stopping sends SIGINT (ffmpeg then writes the MP4's index),
then kills the cgroup after ``STOP_SECONDS``. Stopping the desktop stops them first.

Recordings this agent did not start (made before a restart) are found on disk; only
regular files the user owns are listed, read or deleted (see ``computer_files``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import computer, confine, protocol, users
from .agent import Request, op
from .computer import DESKTOP_ENV, DISPLAY, desktop_user
from .computer_files import RECORDINGS, listing, open_recording, recordings_dir
from .process import kill_tree

MAX_SECONDS = 30 * 60
MAX_BYTES = 1024 * 1024 * 1024
MAX_ACTIVE = 2
MAX_KNOWN = 1000  # ended recordings whose facts are kept
FRAMERATE = 30
STOP_SECONDS = 10.0
READY_SECONDS = 5.0
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class Active:
    """A recording ffmpeg is making."""

    info: dict[str, Any]
    proc: asyncio.subprocess.Process
    group: confine.Group
    started: float = field(default_factory=time.monotonic)
    err: bytearray = field(default_factory=bytearray)
    stopping: bool = False


_active: dict[str, Active] = {}
_known: dict[str, dict[str, Any]] = {}  # ended recordings of this agent: their facts
_lock = asyncio.Lock()


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _argv(path: str) -> list[str]:
    return ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
            "-f", "x11grab", "-framerate", str(FRAMERATE), "-i", DISPLAY,
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-t", str(MAX_SECONDS), "-fs", str(MAX_BYTES), "-y", path]  # fmt: skip


def _name(rec_id: str, label: str | None) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    return f"{rec_id}_{label or 'session'}_{stamp}.mp4"


@op("computeruse_recording_start")
async def start(request: Request) -> dict[str, Any]:
    """Start recording the screen; the new recording (status ``recording``)."""
    user = desktop_user()
    label = request.arg("label", str, None) or None
    if label is not None and not LABEL.fullmatch(label):
        raise protocol.bad_request("label must be 1-64 letters, digits, '.', '_' or '-' "
                                   "(starting with a letter or digit)", "INVALID_LABEL")
    if shutil.which("ffmpeg", path=users.environment(user).get("PATH")) is None:
        raise protocol.bad_request("FFmpeg must be installed and available in PATH to use "
                                   "screen recording", "FFMPEG_NOT_FOUND")  # fmt: skip
    async with _lock:
        if len(_active) >= MAX_ACTIVE:
            raise protocol.bad_request(f"at most {MAX_ACTIVE} recordings at once",
                                       "TOO_MANY_RECORDINGS")  # fmt: skip
        rec_id = str(uuid.uuid4())
        name = _name(rec_id, label)
        with recordings_dir(user, create=True):
            pass
        path = os.path.join(user.home, *RECORDINGS, name)
        active = await _spawn(rec_id, name, path, user)
        _active[rec_id] = active
    await _wait_ready(active, user)
    return dict(active.info)


async def _spawn(rec_id: str, name: str, path: str, user: users.User) -> Active:
    group = confine.Group()
    try:
        proc = await asyncio.create_subprocess_exec(
            *_argv(path), stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, limit=protocol.CHUNK,
            **users.spawn_kwargs(user, user.home, DESKTOP_ENV, group))
    except BaseException:
        group.close()
        raise
    info = {"id": rec_id, "fileName": name, "filePath": path, "startTime": _now(),
            "status": "recording"}  # fmt: skip
    active = Active(info, proc, group)
    asyncio.ensure_future(_watch(rec_id, active))
    return active


async def _watch(rec_id: str, active: Active) -> None:
    """Keep the end of ffmpeg's stderr; when it exits, the recording has ended."""
    assert active.proc.stderr is not None
    while chunk := await active.proc.stderr.read(protocol.CHUNK):
        active.err = (active.err + chunk)[-4096:]
    await active.proc.wait()
    if not active.stopping:
        async with _lock:
            if _active.get(rec_id) is active:
                _finish(rec_id, active)


def _finish(rec_id: str, active: Active) -> dict[str, Any]:
    """Record the end of ``active`` (ffmpeg has exited) and forget the process."""
    info = active.info
    code = active.proc.returncode
    info["status"] = "completed" if active.stopping or code == 0 else "failed"
    info["endTime"] = _now()
    info["durationSeconds"] = round(time.monotonic() - active.started, 3)
    with contextlib.suppress(OSError):
        info["sizeBytes"] = os.stat(info["filePath"], follow_symlinks=False).st_size
    active.group.close()
    _active.pop(rec_id, None)
    _known[rec_id] = info
    while len(_known) > MAX_KNOWN:  # the oldest are then listed from the disk alone
        del _known[next(iter(_known))]
    return info


async def _wait_ready(active: Active, user: users.User) -> None:
    """Wait until ffmpeg has made the file (it then records). Raises AgentError 500
    when ffmpeg exits first."""
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline and active.proc.returncode is None:
        with contextlib.suppress(OSError):
            os.stat(active.info["filePath"], follow_symlinks=False)
            return
        await asyncio.sleep(0.02)
    if active.proc.returncode is not None:
        await asyncio.sleep(0.05)  # let the watcher read the last of stderr
        message = active.err.decode(errors="replace").strip()[-500:]
        raise protocol.AgentError(500, "RECORDING_FAILED",
                                  f"ffmpeg exited ({active.proc.returncode}): {message}")


async def _stop(rec_id: str, active: Active) -> dict[str, Any]:
    active.stopping = True
    proc = active.proc
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), STOP_SECONDS)
    with contextlib.suppress(FileNotFoundError):
        kill_tree(proc.pid, active.group)
    await proc.wait()
    return _finish(rec_id, active)


@op("computeruse_recording_stop")
async def stop(request: Request) -> dict[str, Any]:
    """Stop a recording; it is then ``completed``, with its end, duration and size."""
    rec_id = request.arg("id", str)
    async with _lock:
        active = _active.get(rec_id)
        if active is None:
            if _find(rec_id, _user(request)) is not None:
                raise protocol.bad_request("recording is not active", "RECORDING_NOT_ACTIVE")
            raise protocol.not_found("recording not found")
        return await _stop(rec_id, active)


async def stop_all() -> None:
    """Stop every recording (before the display goes away)."""
    async with _lock:
        for rec_id, active in list(_active.items()):
            await _stop(rec_id, active)


computer.BEFORE_STOP.append(stop_all)


def _user(request: Request) -> users.User:
    """Whose recordings: the desktop's user (else the request's)."""
    return computer.owner() or users.lookup(request.arg("user", str, None))


def _on_disk(user: users.User) -> dict[str, dict[str, Any]]:
    """The finished recordings in the directory: by id, their facts."""
    found: dict[str, dict[str, Any]] = {}
    with recordings_dir(user) as directory:
        if directory is None:
            return {}
        for rec_id, name, st in listing(directory, user):
            if rec_id in _active:
                continue
            when = datetime.fromtimestamp(st.st_mtime, UTC).isoformat().replace("+00:00", "Z")
            info: dict[str, Any] = {"id": rec_id, "fileName": name,
                                    "filePath": os.path.join(user.home, *RECORDINGS, name),
                                    "startTime": when, "endTime": when,
                                    "status": "completed"}  # fmt: skip
            known = _known.get(rec_id)
            if known is not None and known["fileName"] == name:
                info = dict(known)
            info["sizeBytes"] = st.st_size
            found[rec_id] = info
    return found


def _find(rec_id: str, user: users.User) -> dict[str, Any] | None:
    if rec_id in _active:
        return dict(_active[rec_id].info)
    return _on_disk(user).get(rec_id)


@op("computeruse_recording_list")
async def list_all(request: Request) -> dict[str, Any]:
    """Every recording: those being made, then those on disk."""
    recordings = [dict(a.info) for a in _active.values()]
    return {"recordings": recordings + list(_on_disk(_user(request)).values())}


@op("computeruse_recording_get")
async def get(request: Request) -> dict[str, Any]:
    """One recording, being made or on disk."""
    found = _find(request.arg("id", str), _user(request))
    if found is None:
        raise protocol.not_found("recording not found")
    return found


@op("computeruse_recording_delete")
async def delete(request: Request) -> dict[str, Any]:
    """Delete a finished recording's file (an active one is a 400)."""
    rec_id = request.arg("id", str)
    async with _lock:
        if rec_id in _active:
            raise protocol.bad_request("cannot delete an active recording",
                                       "RECORDING_STILL_ACTIVE")  # fmt: skip
        user = _user(request)
        found = _on_disk(user).get(rec_id)
        if found is None:
            raise protocol.not_found("recording not found")
        with recordings_dir(user) as directory, contextlib.suppress(FileNotFoundError):
            if directory is not None:
                os.unlink(found["fileName"], dir_fd=directory)
        _known.pop(rec_id, None)
    return {}


@op("computeruse_recording_read")
async def read(request: Request) -> dict[str, Any]:
    """Send a finished recording's file: a header, D frames, Z (as ``fs_read``); only
    the size it had when opened is sent."""
    rec_id = request.arg("id", str)
    if rec_id in _active:
        raise protocol.bad_request("the recording is still being made (stop it first)",
                                   "RECORDING_STILL_ACTIVE")  # fmt: skip
    user = _user(request)
    found = _on_disk(user).get(rec_id)
    if found is None:
        raise protocol.not_found("recording not found")
    with recordings_dir(user) as directory:
        if directory is None:
            raise protocol.not_found("recording not found")
        fd, size = open_recording(directory, found["fileName"], user)
    try:
        await request.send_json({"file": found["fileName"], "size": size})
        left = size
        while left > 0 and (chunk := os.read(fd, min(left, protocol.CHUNK))):
            await request.send(protocol.DATA, chunk)
            left -= len(chunk)
        if left:
            raise protocol.AgentError(500, "RECORDING_FAILED", "the recording shrank")
        await request.send(protocol.END)
    finally:
        os.close(fd)
    return {}
