"""Files and git through the official SDK (sync and async), inside real sandboxes."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from daytona import (
    AsyncDaytona,
    Daytona,
    DaytonaConfig,
    DaytonaError,
    FileDownloadRequest,
    FileUpload,
)
from daytona.common.errors import (
    DaytonaBadRequestError,
    DaytonaConflictError,
    DaytonaFileNotFoundError,
    DaytonaGitBranchExistsError,
    DaytonaGitBranchNotFoundError,
    DaytonaGitPushRejectedError,
    DaytonaGitRepoNotFoundError,
)

from cove.testing import RssWatch
from tests.e2e.conftest import Server, sandbox_processes

pytestmark = pytest.mark.e2e
HOME = "/home/daytona"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def daytona_module(server: Server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=server.api_key, api_url=server.api_url))


@pytest.fixture(scope="module")
def sb(daytona_module: Daytona):
    sandbox = daytona_module.create()
    yield sandbox
    sandbox.delete()


def sh(sb, command: str) -> str:
    r = sb.process.exec(command)
    assert r.exit_code == 0, r.result
    return r.result


def test_upload_download_round_trip(sb) -> None:
    blobs = {f"{HOME}/rt/a.bin": os.urandom(5 * MiB + 3), "rt/nested/b.txt": b"relative\n",
             "/tmp/empty": b""}
    sb.fs.upload_files([FileUpload(data, path) for path, data in blobs.items()])
    results = sb.fs.download_files([FileDownloadRequest(source=p) for p in blobs])
    for (path, data), result in zip(blobs.items(), results, strict=True):
        assert result.error is None, (path, result.error)
        assert hashlib.sha256(result.result).digest() == hashlib.sha256(data).digest()
    assert sh(sb, f"stat -c '%U %G %a' {HOME}/rt/a.bin {HOME}/rt/nested {HOME}/rt") == (
        "daytona daytona 644\ndaytona daytona 755\ndaytona daytona 755\n")
    odd = f'{HOME}/rt/naïve "quoted".txt'
    sb.fs.upload_file(b"odd", odd)
    assert b"".join(sb.fs.download_file_stream(odd)) == b"odd"
    assert sb.fs.download_file(odd) == b"odd"
    sum_inside = sh(sb, f"sha256sum {HOME}/rt/a.bin").split()[0]
    assert sum_inside == hashlib.sha256(blobs[f"{HOME}/rt/a.bin"]).hexdigest()


def test_missing_files_raise_file_not_found(sb) -> None:
    with pytest.raises(DaytonaFileNotFoundError):
        sb.fs.download_file(f"{HOME}/no-such-file")
    with pytest.raises(DaytonaFileNotFoundError):
        sb.fs.get_file_info("no-such-file")
    with pytest.raises(DaytonaFileNotFoundError):
        sb.fs.delete_file("no-such-file")
    [result] = sb.fs.download_files([FileDownloadRequest(source="/nope")])
    assert result.error and result.error_details.code == "FILE_NOT_FOUND"


def test_file_operations(sb) -> None:
    sb.fs.create_folder("ops/sub", "750")
    info = sb.fs.get_file_info("ops/sub")
    assert (info.is_dir, info.permissions, info.owner, info.path) == (
        True, "0750", "daytona", f"{HOME}/ops/sub")
    sb.fs.upload_file(b"one TODO\ntwo\nthree TODO\n", "ops/sub/notes.txt")
    sb.fs.upload_file(b"print('x')\n", "ops/main.py")
    names = sorted(f.name for f in sb.fs.list_files("ops"))
    assert names == ["main.py", "sub"]
    matches = sb.fs.find_files("ops", "TODO")
    assert [(m.file, m.line, m.content) for m in matches] == [
        ("ops/sub/notes.txt", 1, "one TODO"), ("ops/sub/notes.txt", 3, "three TODO")]
    assert sb.fs.search_files(f"{HOME}/ops", "*.txt").files == [f"{HOME}/ops/sub/notes.txt"]
    results = sb.fs.replace_in_files(["ops/sub/notes.txt", "ops/gone"], "TODO", "DONE")
    assert [r.success for r in results] == [True, False]
    assert b"three DONE" in sb.fs.download_file("ops/sub/notes.txt")
    sb.fs.move_files("ops/main.py", "ops/sub/moved.py")
    with pytest.raises(DaytonaConflictError):
        sb.fs.move_files("ops/sub/moved.py", "ops/sub/notes.txt")
    sb.fs.set_file_permissions("ops/sub/moved.py", mode="600", owner="root")
    moved = sb.fs.get_file_info("ops/sub/moved.py")
    assert (moved.permissions, moved.owner) == ("0600", "root")
    with pytest.raises(DaytonaBadRequestError):
        sb.fs.delete_file("ops")  # a directory needs recursive=True
    sb.fs.delete_file("ops", recursive=True)
    assert sh(sb, "test -e ops && echo there || echo gone") == "gone\n"


def test_paths_resolve_inside_the_sandbox(sb, server: Server) -> None:
    sh(sb, f"ln -sf /etc/shadow {HOME}/shadow-link")
    via_link = sb.fs.download_file("shadow-link")
    inside = server.runtime().exec(sb.id, ["cat", "/etc/shadow"], user="root")
    assert inside.exit_code == 0 and via_link == inside.stdout
    assert b"daytona:" in via_link
    assert via_link != Path("/etc/shadow").read_bytes()
    marker = f"escape-{uuid.uuid4().hex}"
    sb.fs.upload_file(b"stays inside", f"../../../../../tmp/{marker}")
    assert not Path(f"/tmp/{marker}").exists()
    assert sh(sb, f"cat /tmp/{marker}") == "stays inside"
    hostname = sb.fs.download_file("../../../../etc/hostname")
    assert hostname == sh(sb, "cat /etc/hostname").encode()


async def test_async_sdk_files(server: Server) -> None:
    async with AsyncDaytona(DaytonaConfig(api_key=server.api_key, api_url=server.api_url)) as dt:
        sandbox = await dt.create()
        try:
            data = os.urandom(2 * MiB)
            path = f"{HOME}/async dir/ü file.bin"  # aiohttp percent-encodes the filename
            await sandbox.fs.upload_file(data, path)
            assert await sandbox.fs.download_file(path) == data
            info = await sandbox.fs.get_file_info(path)
            assert (info.size, info.owner) == (len(data), "daytona")
            assert [f.name for f in await sandbox.fs.list_files(f"{HOME}/async dir")] == [
                "ü file.bin"]
            with pytest.raises(DaytonaFileNotFoundError):
                await sandbox.fs.download_file("/missing")
            await sandbox.process.exec("git init -q --bare -b main /tmp/r.git")
            await sandbox.git.clone("file:///tmp/r.git", "r")
            status = await sandbox.git.status("r")
            assert status.current_branch == "main" and status.file_status == []
        finally:
            await sandbox.delete()


def agent_pid(sandbox_id: str) -> int:
    """The host pid of the sandbox's toolbox agent (started by init, or a pre-started
    one handed over: ``prestart.py``)."""
    for pid, cmdline in sandbox_processes(sandbox_id):
        program = cmdline.split(b"\0")[0]
        agent = b"toolbox.agent" in cmdline or b"prestart.py" in cmdline
        if program.endswith(b"ld.so") and agent:
            return pid
    raise AssertionError("no agent process found")


@pytest.fixture
def big_files(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def _random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    block = os.urandom(4 * MiB)
    with path.open("wb") as f:
        for offset in range(0, size, len(block)):
            chunk = block[: min(len(block), size - offset)]
            chunk = offset.to_bytes(8, "big") + chunk[8:]  # no two blocks alike
            f.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * MiB):
            digest.update(block)
    return digest.hexdigest()


@pytest.mark.timeout(900)
@pytest.mark.parametrize("size_mb", [100, 1024])
def test_big_transfers_stream_with_flat_memory(sb, server: Server, big_files: Path,
                                               size_mb: int) -> None:
    assert server.proc is not None
    source, target = big_files / "source.bin", big_files / "target.bin"
    expected = _random_file(source, size_mb * MiB)
    remote = f"{HOME}/big-{size_mb}.bin"
    agent = agent_pid(sb.id)
    assert RssWatch(agent).base > 1 * MiB
    with RssWatch(server.proc.pid) as srv_up, RssWatch(agent) as agent_up:
        started = time.monotonic()
        sb.fs.upload_file(str(source), remote)
        up = time.monotonic() - started
    assert sh(sb, f"sha256sum {remote}").split()[0] == expected
    with RssWatch(server.proc.pid) as srv_down, RssWatch(agent) as agent_down:
        started = time.monotonic()
        sb.fs.download_file(remote, str(target))
        down = time.monotonic() - started
    assert _sha256(target) == expected
    print(f"\n{size_mb} MiB: upload {size_mb / up:.0f} MiB/s, download {size_mb / down:.0f} MiB/s;"
          f" server RSS +{srv_up.growth / MiB:.0f}/+{srv_down.growth / MiB:.0f} MiB,"
          f" agent RSS +{agent_up.growth / MiB:.0f}/+{agent_down.growth / MiB:.0f} MiB")
    for watch in (srv_up, srv_down, agent_up, agent_down):
        assert watch.growth < 32 * MiB, "a transfer was buffered in memory"
    sb.fs.delete_file(remote)


def _seed_remote(sb) -> str:
    """A bare repository inside the sandbox with one commit on main; its file:// URL."""
    sh(sb, "rm -rf /tmp/remote.git /tmp/seed && git init -q --bare -b main /tmp/remote.git"
           " && git clone -q /tmp/remote.git /tmp/seed && cd /tmp/seed && echo hi > README.md"
           " && git add . && git -c user.name=Seed -c user.email=s@x commit -q -m first"
           " && git push -q origin HEAD:main")
    return "file:///tmp/remote.git"


def test_git_workflow(sb) -> None:
    url = _seed_remote(sb)
    sb.git.clone(url, "repo", username="bob", password="not-stored-anywhere")
    assert "not-stored" not in sh(sb, "cat repo/.git/config")
    assert sh(sb, f"stat -c %U {HOME}/repo/README.md") == "daytona\n"
    sb.fs.upload_file(b"new\n", "repo/new.txt")
    status = sb.git.status("repo")
    assert status.current_branch == "main" and status.branch_published
    assert [(f.name, f.staging, f.worktree) for f in status.file_status] == [
        ("new.txt", "Untracked", "Untracked")]
    sb.git.add("repo", ["new.txt"])
    assert sb.git.status("repo").file_status[0].staging == "Added"
    sha = sb.git.commit("repo", "add new", "Ada", "ada@example.com").sha
    assert sh(sb, "git -C repo log -1 --format='%H %an'") == f"{sha} Ada\n"
    assert sb.git.status("repo").ahead == 1
    sb.git.push("repo")
    assert sb.git.status("repo").ahead == 0
    sh(sb, "cd /tmp/seed && git pull -q origin main && echo more > more.txt && git add . &&"
           " git -c user.name=S -c user.email=s@x commit -q -m more"
           " && git push -q origin HEAD:main")
    sb.git.pull("repo")
    assert sh(sb, "cat repo/more.txt") == "more\n"
    sb.git.create_branch("repo", "feature")
    branches = sb.git.branches("repo")
    assert sorted(branches.branches) == ["feature", "main"]
    sb.git.checkout_branch("repo", "main")
    assert sb.git.status("repo").current_branch == "main"
    sb.git.delete_branch("repo", "feature")
    assert sb.git.branches("repo").branches == ["main"]


def test_git_failures_are_typed(sb) -> None:
    url = _seed_remote(sb)
    sh(sb, "rm -rf fail-repo")
    sb.git.clone(url, "fail-repo")
    with pytest.raises(DaytonaGitBranchNotFoundError):
        sb.git.checkout_branch("fail-repo", "no-such-branch")
    with pytest.raises(DaytonaGitBranchExistsError):
        sb.git.create_branch("fail-repo", "main")
    with pytest.raises(DaytonaGitRepoNotFoundError):
        sb.git.status("/tmp")
    with pytest.raises(DaytonaGitRepoNotFoundError):
        sb.git.clone("file:///tmp/none.git", "none")
    sh(sb, "cd /tmp/seed && echo x > x && git add . && git -c user.name=S -c user.email=s@x"
           " commit -q -m x && git push -q origin HEAD:main")
    sh(sb, "cd fail-repo && echo y > y && git add . && git -c user.name=S -c user.email=s@x"
           " commit -q -m y")
    with pytest.raises(DaytonaGitPushRejectedError):
        sb.git.push("fail-repo")
    with pytest.raises(DaytonaError):
        sb.git.commit("fail-repo", "nothing to commit", "A", "a@x")


def _as_root(sb, server: Server, script: str) -> str:
    result = server.runtime().exec(sb.id, ["sh", "-c", script], user="root")
    assert result.exit_code == 0, result
    return result.stdout.decode()


def test_a_users_symlinks_lend_it_no_root_power(sb, server: Server) -> None:
    """The sandbox's user (what ``exec`` runs as) plants symlinks where the caller will
    later write, in its own home: to root's /etc/passwd, and a directory that is /etc.
    The agent may write anything, but past a link of the user it acts with no more
    power than the user: the upload, chmod/chown, mkdir, move, delete and replace are
    refused, and /etc stays root's. (Through them, the upload replaced /etc/passwd with
    a file of the user, who then made itself uid 0 for every later ``exec``.)"""
    _as_root(sb, server, "echo root-only > /etc/cove-victim")
    passwd = _as_root(sb, server, "stat -c %U:%a /etc/passwd; md5sum /etc/passwd")
    sh(sb, f"cd {HOME} && ln -sfn /etc/passwd planted.txt && ln -sfn /etc planted-dir"
           " && ln -sfn /etc/nothing-yet dangling && echo mine > own.txt"
           " && ln -sfn own.txt own-link")  # fmt: skip
    refusals = [
        lambda: sb.fs.upload_file(b"daytona:x:0:0::/root:/bin/sh\n", "planted.txt"),
        lambda: sb.fs.upload_file(b"x", "planted-dir/ld.so.preload"),
        lambda: sb.fs.upload_file(b"x", "dangling"),
        lambda: sb.fs.set_file_permissions("planted.txt", mode="666"),
        lambda: sb.fs.set_file_permissions("planted-dir/passwd", owner="daytona"),
        lambda: sb.fs.create_folder("planted-dir/cron.cove", "777"),
        lambda: sb.fs.move_files("own.txt", "planted-dir/own.txt"),
        lambda: sb.fs.move_files("planted-dir/cove-victim", "stolen"),
        lambda: sb.fs.delete_file("planted-dir/cove-victim"),
    ]
    for attempt in refusals:
        with pytest.raises(DaytonaError) as caught:
            attempt()
        assert "symbolic link of a user" in str(caught.value), caught.value
    [replaced] = sb.fs.replace_in_files([f"{HOME}/planted.txt"], "root", "daytona")
    assert not replaced.success
    assert _as_root(sb, server, "stat -c %U:%a /etc/passwd; md5sum /etc/passwd") == passwd
    assert _as_root(sb, server, "ls /etc/ld.so.preload /etc/nothing-yet /etc/cron.cove /etc/own.txt"
                                " 2>&1 | grep -c 'No such'") == "4\n"  # fmt: skip
    assert _as_root(sb, server, "stat -c %U /etc/cove-victim") == "root\n"
    assert sh(sb, "id -u; test -e stolen || echo none") == "1000\nnone\n"
    # The user's links within what it owns still work as before.
    sb.fs.upload_file(b"through my link\n", "own-link")
    assert sh(sb, f"cat {HOME}/own.txt; test -L {HOME}/own-link && echo link") == (
        "through my link\nlink\n")
    sh(sb, f"rm -f {HOME}/planted.txt {HOME}/planted-dir {HOME}/dangling {HOME}/own*")
    _as_root(sb, server, "rm /etc/cove-victim")


def test_a_fifo_of_the_user_does_not_hang_the_agent(sb) -> None:
    """A download, or a replace, of a FIFO the user made (where the caller expects a
    file) is refused at once: its open no longer waits for a writer, which held the
    agent, and with it every other call to the sandbox, until one came."""
    sh(sb, f"mkfifo {HOME}/result.json")
    with pytest.raises(DaytonaError, match="not a regular file"):
        sb.fs.download_file("result.json", 20)
    [replaced] = sb.fs.replace_in_files([f"{HOME}/result.json"], "a", "b")
    assert not replaced.success
    assert sh(sb, "echo alive; rm ~/result.json") == "alive\n"
