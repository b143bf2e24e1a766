"""The git API through the real agent (in process), against file:// remotes in tmp dirs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from cove.agent import git as agent_git
from cove.agent.git_status import parse_status
from tests.unit.agent.conftest import AUTH

IDENTITY = {"GIT_AUTHOR_NAME": "Seed", "GIT_AUTHOR_EMAIL": "seed@example.com",
            "GIT_COMMITTER_NAME": "Seed", "GIT_COMMITTER_EMAIL": "seed@example.com"}


def sh(*argv: str, cwd: Path | None = None) -> str:
    env = {**os.environ, **IDENTITY, "GIT_CONFIG_GLOBAL": "/dev/null"}
    return subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def remote(tmp_path: Path) -> str:
    """A bare repository with one commit on ``main``, and its file:// URL."""
    bare, seed = tmp_path / "remote.git", tmp_path / "seed"
    sh("git", "init", "-q", "--bare", "-b", "main", str(bare))
    sh("git", "clone", "-q", str(bare), str(seed))
    (seed / "README.md").write_text("hello\n")
    sh("git", "add", ".", cwd=seed)
    sh("git", "commit", "-q", "-m", "first", cwd=seed)
    sh("git", "push", "-q", "origin", "HEAD:main", cwd=seed)
    return f"file://{bare}"


def _git(client: TestClient, sid: str, method: str, path: str, **kwargs: object):
    return client.request(method, f"/toolbox/{sid}/git/{path}", headers=AUTH, **kwargs)


def _clone(client: TestClient, sid: str, url: str, path: Path, **extra: object):
    return _git(client, sid, "POST", "clone", json={"url": url, "path": str(path), **extra})


def _commit(client: TestClient, sid: str, repo: Path, message: str):
    return _git(client, sid, "POST", "commit", json={
        "path": str(repo), "message": message, "author": "Ada", "email": "ada@example.com"})


def test_clone_status_add_commit_push_pull(client: TestClient, sandbox_id: str, remote: str,
                                           tmp_path: Path) -> None:
    repo = tmp_path / "work"
    assert _clone(client, sandbox_id, remote, repo).status_code == 200
    assert (repo / "README.md").read_text() == "hello\n"
    (repo / "README.md").write_text("changed\n")
    (repo / "new.txt").write_text("new\n")
    status = _git(client, sandbox_id, "GET", "status", params={"path": str(repo)}).json()
    assert status["currentBranch"] == "main" and status["branchPublished"] is True
    assert {f["name"]: (f["staging"], f["worktree"]) for f in status["fileStatus"]} == {
        "README.md": ("Unmodified", "Modified"), "new.txt": ("Untracked", "Untracked")}
    r = _git(client, sandbox_id, "POST", "add", json={"path": str(repo), "files": ["."]})
    assert r.status_code == 200
    status = _git(client, sandbox_id, "GET", "status", params={"path": str(repo)}).json()
    assert {f["name"]: f["staging"] for f in status["fileStatus"]} == {
        "README.md": "Modified", "new.txt": "Added"}
    r = _commit(client, sandbox_id, repo, "second")
    sha = r.json()["hash"]
    assert len(sha) == 40 and sh("git", "rev-parse", "HEAD", cwd=repo).strip() == sha
    assert sh("git", "log", "-1", "--format=%an <%ae> %s", cwd=repo) == (
        "Ada <ada@example.com> second\n")
    status = _git(client, sandbox_id, "GET", "status", params={"path": str(repo)}).json()
    assert (status["ahead"], status["behind"], status["fileStatus"]) == (1, 0, [])
    assert _git(client, sandbox_id, "POST", "push", json={"path": str(repo)}).status_code == 200
    other = tmp_path / "other"
    _clone(client, sandbox_id, remote, other)
    assert (other / "new.txt").read_text() == "new\n"
    (other / "third.txt").write_text("3")
    sh("git", "add", ".", cwd=other)
    sh("git", "commit", "-q", "-m", "third", cwd=other)
    sh("git", "push", "-q", cwd=other)
    assert _git(client, sandbox_id, "POST", "pull", json={"path": str(repo)}).status_code == 200
    assert (repo / "third.txt").read_text() == "3"


def test_branches_create_checkout_delete(client: TestClient, sandbox_id: str, remote: str,
                                         tmp_path: Path) -> None:
    repo = tmp_path / "work"
    _clone(client, sandbox_id, remote, repo)
    body = {"path": str(repo), "name": "feature"}
    assert _git(client, sandbox_id, "POST", "branches", json=body).status_code == 201
    listed = _git(client, sandbox_id, "GET", "branches", params={"path": str(repo)}).json()
    assert listed == {"branches": ["feature", "main"], "current": "feature"}
    r = _git(client, sandbox_id, "POST", "checkout", json={"path": str(repo), "branch": "main"})
    assert r.status_code == 200
    assert sh("git", "branch", "--show-current", cwd=repo) == "main\n"
    assert _git(client, sandbox_id, "DELETE", "branches", json=body).status_code == 204
    listed = _git(client, sandbox_id, "GET", "branches", params={"path": str(repo)}).json()
    assert listed["branches"] == ["main"]
    (repo / "f.txt").write_text("f")
    _git(client, sandbox_id, "POST", "add", json={"path": str(repo), "files": ["f.txt"]})
    _commit(client, sandbox_id, repo, "on topic")
    r = _git(client, sandbox_id, "POST", "branches", json={"path": str(repo), "name": "topic"})
    r = _git(client, sandbox_id, "POST", "push",
             json={"path": str(repo), "branch": "topic", "set_upstream": True})
    assert r.status_code == 200
    status = _git(client, sandbox_id, "GET", "status", params={"path": str(repo)}).json()
    assert status["upstream"] == "origin/topic" and status["currentBranch"] == "topic"


def test_clone_a_branch_a_commit_and_shallow(client: TestClient, sandbox_id: str, remote: str,
                                             tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    first = sh("git", "rev-parse", "HEAD", cwd=seed).strip()
    (seed / "b.txt").write_text("b")
    sh("git", "add", ".", cwd=seed)
    sh("git", "commit", "-q", "-m", "second", cwd=seed)
    sh("git", "push", "-q", "origin", "HEAD:main", "HEAD:dev", cwd=seed)
    r = _clone(client, sandbox_id, remote, tmp_path / "at", commit_id=first)
    assert r.status_code == 200 and not (tmp_path / "at/b.txt").exists()
    status = _git(client, sandbox_id, "GET", "status", params={"path": str(tmp_path / "at")})
    assert status.json()["detached"] is True
    r = _clone(client, sandbox_id, remote, tmp_path / "dev", branch="dev", depth=1)
    assert r.status_code == 200
    assert sh("git", "rev-list", "--count", "HEAD", cwd=tmp_path / "dev") == "1\n"
    assert sh("git", "branch", "--show-current", cwd=tmp_path / "dev") == "dev\n"


@pytest.mark.parametrize("case", ["not_a_repo", "bad_url", "occupied", "no_branch", "exists",
                                  "delete_missing", "dirty", "rejected", "conflict"])
def test_failures_have_daytona_git_codes(client: TestClient, sandbox_id: str, remote: str,
                                         tmp_path: Path, case: str) -> None:
    repo = tmp_path / "work"
    _clone(client, sandbox_id, remote, repo)
    expected = {"not_a_repo": (404, "GIT_REPO_NOT_FOUND"), "bad_url": (404, "GIT_REPO_NOT_FOUND"),
                "occupied": (409, "CONFLICT"), "no_branch": (404, "GIT_BRANCH_NOT_FOUND"),
                "exists": (409, "GIT_BRANCH_EXISTS"),
                "delete_missing": (404, "GIT_BRANCH_NOT_FOUND"),
                "dirty": (409, "GIT_DIRTY_WORKTREE"), "rejected": (409, "GIT_PUSH_REJECTED"),
                "conflict": (409, "GIT_MERGE_CONFLICT")}[case]
    r = _failing_call(client, sandbox_id, remote, repo, tmp_path, case)
    assert (r.status_code, r.json()["code"]) == expected, r.text
    assert r.json()["source"] == "DAYTONA_DAEMON"


def _failing_call(client: TestClient, sid: str, remote: str, repo: Path, tmp_path: Path,
                  case: str):
    if case == "not_a_repo":
        return _git(client, sid, "GET", "status", params={"path": str(tmp_path)})
    if case == "bad_url":
        return _clone(client, sid, f"file://{tmp_path}/nothing.git", tmp_path / "x")
    if case == "occupied":
        return _clone(client, sid, remote, repo)
    if case == "no_branch":
        return _git(client, sid, "POST", "checkout", json={"path": str(repo), "branch": "nope"})
    if case in ("exists", "delete_missing"):
        method = "POST" if case == "exists" else "DELETE"
        name = "main" if case == "exists" else "nope"
        return _git(client, sid, method, "branches", json={"path": str(repo), "name": name})
    _diverge(remote, tmp_path)
    (repo / "README.md").write_text("local edit\n")
    if case == "dirty":
        return _git(client, sid, "POST", "pull", json={"path": str(repo)})
    sh("git", "commit", "-q", "-am", "local", cwd=repo)
    if case == "rejected":
        return _git(client, sid, "POST", "push", json={"path": str(repo)})
    return _git(client, sid, "POST", "pull", json={"path": str(repo)})


def _diverge(remote: str, tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    (seed / "README.md").write_text("remote edit\n")
    sh("git", "commit", "-q", "-am", "remote", cwd=seed)
    sh("git", "push", "-q", "origin", "HEAD:main", cwd=seed)


def test_credentials_stay_out_of_argv_and_config(
    client: TestClient, sandbox_id: str, remote: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spawned: list[tuple[tuple, dict]] = []
    original = agent_git.asyncio.create_subprocess_exec

    async def recording(*argv: str, **kwargs: object):
        spawned.append((argv, dict(kwargs["env"])))  # type: ignore[arg-type]
        return await original(*argv, **kwargs)

    monkeypatch.setattr(agent_git.asyncio, "create_subprocess_exec", recording)
    r = _clone(client, sandbox_id, remote, tmp_path / "c", username="bob",
               password="s3cret-token")
    assert r.status_code == 200
    argv, env = spawned[0]
    assert not any("s3cret" in arg or "bob" in arg for arg in argv)
    assert env["COVE_GIT_PASSWORD"] == "s3cret-token" and env["GIT_TERMINAL_PROMPT"] == "0"
    assert not Path(env["GIT_ASKPASS"]).exists()  # the helper is gone afterwards
    assert "s3cret" not in (tmp_path / "c/.git/config").read_text()


def test_askpass_helper_answers_from_its_environment(tmp_path: Path) -> None:
    script = tmp_path / "askpass"
    script.write_text(agent_git.ASKPASS)
    script.chmod(0o700)
    env = {"COVE_GIT_USERNAME": "bob", "COVE_GIT_PASSWORD": "pa ss"}

    def ask(prompt: str) -> str:
        return subprocess.run([str(script), prompt], env=env, capture_output=True,
                              text=True).stdout

    assert ask("Username for 'https://example.com': ") == "bob\n"
    assert ask("Password for 'https://bob@example.com': ") == "pa ss\n"


def test_status_parser_handles_renames_conflicts_and_detached_head() -> None:
    out = "\0".join([
        "# branch.oid abc", "# branch.head (detached)",
        "2 R. N... 100644 100644 100644 h1 h2 R100 new name.txt", "old name.txt",
        "u UU N... 100644 100644 100644 100644 h1 h2 h3 both.txt",
        "1 AD N... 000000 100644 000000 h1 h2 gone.txt", "? untracked.txt", ""])
    status = parse_status(out)
    assert status["currentBranch"] == "HEAD" and status["detached"] is True
    assert status["branchPublished"] is False
    assert status["fileStatus"] == [
        {"name": "new name.txt", "staging": "Renamed", "worktree": "Unmodified",
         "extra": "old name.txt"},
        {"name": "both.txt", "staging": "Updated but unmerged",
         "worktree": "Updated but unmerged", "extra": ""},
        {"name": "gone.txt", "staging": "Added", "worktree": "Deleted", "extra": ""},
        {"name": "untracked.txt", "staging": "Untracked", "worktree": "Untracked", "extra": ""}]
