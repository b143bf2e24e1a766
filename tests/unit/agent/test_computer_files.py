"""The recordings directory (``cove.agent.computer_files``): what the sandbox user
plants there (symlinks, FIFOs, a symlinked directory) is never followed nor read."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cove.agent import users
from cove.agent.computer_files import listing, open_recording, recordings_dir
from cove.agent.protocol import AgentError
from tests.unit.agent.conftest import AUTH


@pytest.fixture
def user(tmp_path: Path) -> users.User:
    home = tmp_path / "home"
    home.mkdir()
    return users.User("me", os.getuid(), os.getgid(), str(home), "/bin/sh")


def _name() -> str:
    return f"{uuid.uuid4()}_x_20260101_000000.mp4"


def test_only_regular_files_of_the_user_are_listed_and_read(user: users.User,
                                                            tmp_path: Path) -> None:  # fmt: skip
    secret = tmp_path / "secret"
    secret.write_text("root's")
    with recordings_dir(user, create=True) as directory:
        assert directory is not None
        real, link, fifo = _name(), _name(), _name()
        base = Path(user.home, ".daytona", "recordings")
        (base / real).write_bytes(b"video")
        (base / link).symlink_to(secret)
        os.mkfifo(base / fifo)
        (base / "notes.txt").write_text("not a recording")
        assert [name for _, name, _ in listing(directory, user)] == [real]
        fd, size = open_recording(directory, real, user)
        assert (os.read(fd, 100), size) == (b"video", 5)
        os.close(fd)
        for planted in (link, fifo, "missing.mp4"):
            with pytest.raises(AgentError) as refused:
                open_recording(directory, planted, user)
            assert refused.value.status == 404


def test_a_symlinked_directory_is_refused(user: users.User, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Path(user.home, ".daytona").mkdir()
    Path(user.home, ".daytona", "recordings").symlink_to(elsewhere)
    for create in (False, True):
        with pytest.raises(AgentError) as refused, recordings_dir(user, create=create):
            pass
        assert refused.value.status == 400
    homeless = users.User("me", 0, 0, str(tmp_path / "nohome"), "/bin/sh")
    with recordings_dir(homeless) as directory:
        assert directory is None
    with pytest.raises(AgentError) as refused, recordings_dir(homeless, create=True):
        pass
    assert refused.value.status == 400


def test_before_start_recordings_and_the_tree_are_refused(client: TestClient,
                                                          sandbox_id: str) -> None:  # fmt: skip
    base = f"/toolbox/{sandbox_id}/computeruse"
    for method, path, body in [("POST", "recordings/start", {}), ("GET", "a11y/tree", None),
                               ("POST", "a11y/find", {}),
                               ("POST", "a11y/node/focus", {"id": ":1.1:/x"})]:  # fmt: skip
        r = client.request(method, f"{base}/{path}", json=body, headers=AUTH)
        assert r.status_code == 400 and r.json()["code"] == "COMPUTER_USE_NOT_STARTED", path
