"""Screen recordings through the official SDK (sync, async): a recording made while
typing into a window downloads as an H.264 MP4 whose frames change; recordings are
listed, read and deleted; bad input is a 400, another organization gets 404, and files
the sandbox plants where recordings live (symlinks, FIFOs) are never read."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from daytona import Daytona, DaytonaError

from tests.e2e.conftest import KEY, Server, run_ok
from tests.e2e.test_computer_use import wait_for
from tests.e2e.test_tenancy import _key

pytestmark = pytest.mark.e2e
RECORDINGS = "/home/daytona/.daytona/recordings"


def probe(path: Path) -> tuple[dict, int]:
    """The video stream's facts (ffprobe) and how many distinct frames it has."""
    assert shutil.which("ffprobe"), "ffprobe is needed on the host: run scripts/install"
    shown = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
                            "-show_entries", "stream=codec_name,width,height,nb_read_frames",
                            "-of", "json", str(path)],
                           capture_output=True, text=True, check=True)  # fmt: skip
    stream = json.loads(shown.stdout)["streams"][0]
    hashes = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "framemd5", "-"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    frames = {line.rsplit(",", 1)[-1].strip() for line in hashes.splitlines()
              if line and not line.startswith("#")}  # fmt: skip
    return stream, len(frames)


def open_terminal(sb) -> None:  # noqa: ANN001
    cu = sb.computer_use
    run_ok(sb, "DISPLAY=:0 nohup xterm >/dev/null 2>&1 &")
    term = wait_for(lambda: cu.display.get_windows().windows, "the xterm window")[0]
    cu.mouse.click(term.x + 50, term.y + 50)


def test_a_recording_of_typing(daytona: Daytona, sandboxes: list, tmp_path: Path) -> None:
    sb = daytona.create()
    sandboxes.append(sb)
    cu = sb.computer_use
    with pytest.raises(DaytonaError) as not_started:
        cu.recording.start()
    assert not_started.value.status_code == 400
    cu.start()
    open_terminal(sb)

    rec = cu.recording.start("typing-1")
    assert rec.status == "recording" and rec.end_time is None
    assert rec.file_path == f"{RECORDINGS}/{rec.file_name}"
    assert re.fullmatch(rf"{rec.id}_typing-1_\d{{8}}_\d{{6}}\.mp4", rec.file_name)
    assert [r.id for r in cu.recording.list().recordings] == [rec.id]
    ffmpeg = run_ok(sb, "ps -eo user:12,args | grep '[x]11grab'")
    assert ffmpeg.startswith("daytona") and "-t 1800 -fs 1073741824" in ffmpeg  # bounded
    cu.keyboard.type("echo recorded-typing > /tmp/typed", delay=40)
    cu.keyboard.press("enter")
    wait_for(lambda: run_ok(sb, "cat /tmp/typed 2>/dev/null").strip(), "the typed command")

    stopped = cu.recording.stop(rec.id)
    assert stopped.status == "completed" and stopped.id == rec.id
    assert stopped.duration_seconds > 0 and stopped.size_bytes > 0 and stopped.end_time
    assert "x11grab" not in run_ok(sb, "ps -eo args")
    got = cu.recording.get(rec.id)
    assert (got.status, got.size_bytes, got.file_name) == ("completed", stopped.size_bytes,
                                                           rec.file_name)  # fmt: skip
    local = tmp_path / "typing.mp4"
    cu.recording.download(rec.id, str(local))
    assert local.stat().st_size == stopped.size_bytes
    stream, distinct = probe(local)
    assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 1024, 768)
    assert int(stream["nb_read_frames"]) > 1 and distinct > 1  # the typing shows

    with pytest.raises(DaytonaError) as again:
        cu.recording.stop(rec.id)
    assert again.value.status_code == 400
    cu.recording.delete(rec.id)
    assert cu.recording.list().recordings == []
    assert run_ok(sb, f"ls -A {RECORDINGS}").strip() == ""
    for call in (lambda: cu.recording.get(rec.id), lambda: cu.recording.delete(rec.id),
                 lambda: cu.recording.stop(str(uuid.uuid4()))):  # fmt: skip
        with pytest.raises(DaytonaError) as gone:
            call()
        assert gone.value.status_code == 404


def test_stopping_the_desktop_ends_its_recordings(daytona: Daytona, sandboxes: list,
                                                  tmp_path: Path) -> None:  # fmt: skip
    sb = daytona.create()
    sandboxes.append(sb)
    cu = sb.computer_use
    cu.start()
    first, second = cu.recording.start(), cu.recording.start("two")
    assert first.file_name.startswith(f"{first.id}_session_")
    with pytest.raises(DaytonaError) as third:
        cu.recording.start()
    assert third.value.status_code == 400 and "at most 2" in str(third.value)
    with pytest.raises(DaytonaError) as active:
        cu.recording.delete(first.id)
    assert active.value.status_code == 400
    cu.stop()
    listed = {r.id: r.status for r in cu.recording.list().recordings}
    assert listed == {first.id: "completed", second.id: "completed"}
    cu.recording.download(second.id, str(tmp_path / "two.mp4"))
    assert probe(tmp_path / "two.mp4")[0]["codec_name"] == "h264"


async def test_recordings_with_the_async_sdk(async_daytona, tmp_path: Path) -> None:  # noqa: ANN001
    sb = await async_daytona.create()
    try:
        cu = sb.computer_use
        await cu.start()
        rec = await cu.recording.start("async")
        assert (await cu.recording.get(rec.id)).status == "recording"
        stopped = await cu.recording.stop(rec.id)
        assert stopped.status == "completed"
        assert [r.id for r in (await cu.recording.list()).recordings] == [rec.id]
        await cu.recording.download(rec.id, str(tmp_path / "async.mp4"))
        assert (tmp_path / "async.mp4").stat().st_size == stopped.size_bytes
        assert probe(tmp_path / "async.mp4")[0]["codec_name"] == "h264"
        await cu.recording.delete(rec.id)
        assert (await cu.recording.list()).recordings == []
        await cu.stop()
    finally:
        await sb.delete()


BAD_INPUT = [
    ("POST", "recordings/start", {"label": "../../etc/x"}),
    ("POST", "recordings/start", {"label": "x" * 65}),
    ("POST", "recordings/start", {"label": 5}),
    ("POST", "recordings/stop", {}),
    ("POST", "recordings/stop", {"id": "x" * 65}),
]


def test_bad_input_other_organizations_and_planted_files(server: Server, daytona: Daytona,
                                                         sandboxes: list) -> None:  # fmt: skip
    sb = daytona.create()
    sandboxes.append(sb)
    cu = sb.computer_use
    cu.start()
    base = f"{server.url}/toolbox/{sb.id}/computeruse"
    mine = {"Authorization": f"Bearer {KEY}"}
    for method, path, body in BAD_INPUT:
        r = httpx.request(method, f"{base}/{path}", json=body, headers=mine, timeout=30)
        assert r.status_code == 400, (path, body, r.text)
        assert r.json()["statusCode"] == 400
    assert cu.recording.list().recordings == []  # nothing half-made

    rec = cu.recording.start("mine")
    cu.recording.stop(rec.id)
    theirs = {"Authorization": f"Bearer {_key(server, 'recordings-other')}"}
    one = f"recordings/{rec.id}"
    for method, path in [("GET", "recordings"), ("POST", "recordings/start"), ("GET", one),
                         ("GET", f"{one}/download"), ("DELETE", one),
                         ("POST", "recordings/stop")]:  # fmt: skip
        r = httpx.request(method, f"{base}/{path}", json={"id": rec.id}, headers=theirs)
        assert r.status_code == 404, (path, r.text)
    assert [r.id for r in cu.recording.list().recordings] == [rec.id]

    # The sandbox swaps the file for a symlink to root's secrets, and plants a FIFO and
    # a symlink named like recordings: none is read, listed or followed.
    planted = [str(uuid.uuid4()) for _ in range(2)]
    run_ok(sb, f"cd {RECORDINGS} && mv {rec.file_name} moved.mp4 "
               f"&& ln -s /etc/shadow {rec.file_name} "
               f"&& ln -s /etc/shadow {planted[0]}_x_20260101_000000.mp4 "
               f"&& mkfifo {planted[1]}_x_20260101_000000.mp4")  # fmt: skip
    assert cu.recording.list().recordings == []
    for rec_id in (rec.id, *planted):
        r = httpx.get(f"{base}/recordings/{rec_id}/download", headers=mine, timeout=30)
        assert r.status_code == 404 and b"root:" not in r.content, r.text
    # ~/.daytona/recordings itself a symlink: recordings refuse it (400), nothing is made
    run_ok(sb, f"rm -rf {RECORDINGS} && ln -s /etc {RECORDINGS}")
    for call in (cu.recording.start, cu.recording.list):
        with pytest.raises(DaytonaError) as refused:
            call()
        assert refused.value.status_code == 400
    assert "x11grab" not in run_ok(sb, "ps -eo args")
    cu.stop()
