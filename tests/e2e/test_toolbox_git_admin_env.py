"""Git administration (init, reset, restore, remotes, config, stored credentials) and
environment updates through the official SDKs (Python sync and async, TypeScript),
inside real sandboxes, and attacks on them: option injection, NUL, another
organization's key, and config keys that run commands (in the sandbox, never on
the host)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from daytona import (
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    Daytona,
    DaytonaConfig,
    SessionExecuteRequest,
)
from daytona.common.errors import (
    DaytonaBadRequestError,
    DaytonaConflictError,
    DaytonaFileNotFoundError,
    DaytonaGitRepoNotFoundError,
)

from tests.e2e.conftest import Server, run_ok

pytestmark = pytest.mark.e2e
TS = Path(__file__).resolve().parents[1] / "ts"
HOME = "/home/daytona"


@pytest.fixture(scope="module")
def client(server: Server) -> Daytona:
    return Daytona(DaytonaConfig(api_key=server.api_key, api_url=server.api_url))


@pytest.fixture(scope="module")
def sb(client: Daytona):
    sandbox = client.create()
    yield sandbox
    sandbox.delete()


@pytest.fixture(scope="module")
def other_key(server: Server) -> str:
    return server.org_key("git-env-other")


def _commit(sb, repo: str, name: str, text: str) -> None:
    sb.fs.upload_file(text.encode(), f"{repo}/{name}")
    sb.git.add(repo, [name])
    sb.git.commit(repo, f"write {name}", "Ada", "ada@example.com")


def test_init_commit_restore_reset(sb) -> None:
    sb.git.init("adm/repo", initial_branch="trunk")
    assert sb.git.status("adm/repo").current_branch == "trunk"
    _commit(sb, "adm/repo", "f.txt", "one\n")
    sb.fs.upload_file(b"changed\n", "adm/repo/f.txt")
    sb.git.restore("adm/repo", ["f.txt"])
    assert run_ok(sb, "cat adm/repo/f.txt") == "one\n"
    sb.fs.upload_file(b"staged\n", "adm/repo/f.txt")
    sb.git.add("adm/repo", ["f.txt"])
    sb.git.restore("adm/repo", ["f.txt"], staged=True)
    entry = sb.git.status("adm/repo").file_status[0]
    assert (entry.staging, entry.worktree) == ("Unmodified", "Modified")
    _commit(sb, "adm/repo", "f.txt", "two\n")
    sb.git.restore("adm/repo", ["f.txt"], source="HEAD~1")
    assert run_ok(sb, "cat adm/repo/f.txt") == "one\n"
    sb.git.reset("adm/repo", mode="hard", target="HEAD~1")
    assert run_ok(sb, "git -C adm/repo log --format=%s") == "write f.txt\n"
    _commit(sb, "adm/repo", "g.txt", "g\n")
    sb.git.reset("adm/repo", mode="soft", target="HEAD~1")
    assert sb.git.status("adm/repo").file_status[0].staging == "Added"
    sb.git.reset("adm/repo")  # mixed, to HEAD: unstaged
    assert sb.git.status("adm/repo").file_status[0].staging == "Untracked"
    sb.git.init("adm/bare.git", bare=True)
    assert run_ok(sb, "git -C adm/bare.git rev-parse --is-bare-repository") == "true\n"
    with pytest.raises(DaytonaFileNotFoundError):
        sb.git.restore("adm/repo", ["no-such-file"])
    with pytest.raises(DaytonaBadRequestError):
        sb.git.reset("adm/repo", mode="hard", files=["f.txt"])  # git refuses: not a 500
    with pytest.raises(DaytonaBadRequestError):
        sb.git.reset("adm/repo", mode="sideways")


def test_remotes(sb) -> None:
    run_ok(sb, "rm -rf /tmp/up.git /tmp/seed && git init -q --bare -b main /tmp/up.git"
               " && git clone -q /tmp/up.git /tmp/seed && cd /tmp/seed && echo hi > a"
               " && git add . && git -c user.name=S -c user.email=s@x commit -q -m first"
               " && git push -q origin HEAD:main")  # fmt: skip
    sb.git.init("rem/repo")
    assert sb.git.remotes("rem/repo").remotes == []
    sb.git.remote_add("rem/repo", "origin", "https://example.invalid/a.git")
    with pytest.raises(DaytonaConflictError):
        sb.git.remote_add("rem/repo", "origin", "https://example.invalid/b.git")
    sb.git.remote_add("rem/repo", "origin", "file:///tmp/up.git", fetch=True, overwrite=True)
    sb.git.remote_add("rem/repo", "second", "https://example.invalid/c.git")
    remotes = [(r.name, r.url) for r in sb.git.remotes("rem/repo").remotes]
    assert remotes == [("origin", "file:///tmp/up.git"),
                       ("second", "https://example.invalid/c.git")]  # fmt: skip
    assert sb.git.remote_get("rem/repo", "origin") == "file:///tmp/up.git"
    assert sb.git.remote_get("rem/repo", "none") is None
    assert "origin/main" in run_ok(sb, "git -C rem/repo branch -r")  # fetched
    with pytest.raises(DaytonaGitRepoNotFoundError):
        sb.git.remotes("/tmp")


def test_config_scopes(sb) -> None:
    sb.git.set_config("cove.greeting", "hello world")
    assert sb.git.get_config("cove.greeting") == "hello world"
    assert run_ok(sb, "git config --global --get cove.greeting") == "hello world\n"
    assert sb.git.get_config("cove.never-set") is None
    sb.git.set_config("cove.dash", "--not-an-option")  # a value is only a value
    assert sb.git.get_config("cove.dash") == "--not-an-option"
    sb.git.set_config('cove.sub "with space".key', "v")
    assert sb.git.get_config('cove.sub "with space".key') == "v"
    sb.git.configure_user("Grace", "grace@example.com")
    assert run_ok(sb, "git config --global user.name; git config --global user.email") == (
        "Grace\ngrace@example.com\n")
    sb.git.init("cfg/repo")
    sb.git.configure_user("Local", "local@example.com", scope="local", path="cfg/repo")
    assert sb.git.get_config("user.name", scope="local", path="cfg/repo") == "Local"
    assert sb.git.get_config("user.name") == "Grace"
    with pytest.raises(DaytonaBadRequestError, match="path"):
        sb.git.set_config("user.name", "x", scope="local")
    with pytest.raises(DaytonaGitRepoNotFoundError):
        sb.git.get_config("user.name", scope="local", path="/tmp")
    with pytest.raises(DaytonaBadRequestError):
        sb.git.set_config("user.name", "x", scope="worktree")
    with pytest.raises(Exception) as denied:  # noqa: PT011 - the user is not root
        sb.git.set_config("cove.system", "x", scope="system")
    assert getattr(denied.value, "status_code", None) == 403


def test_credentials_stay_in_the_sandbox(server: Server, sb) -> None:
    secret = f"tok-{uuid.uuid4().hex}"
    sb.git.dangerously_authenticate("bob", secret, host="git.example.test")
    assert run_ok(sb, "stat -c '%a %U' ~/.git-credentials") == "600 daytona\n"
    assert run_ok(sb, "cat ~/.git-credentials") == f"https://bob:{secret}@git.example.test\n"
    assert run_ok(sb, "git config --global credential.helper") == "store\n"
    ask = "printf 'protocol=https\\nhost=git.example.test\\n\\n'"
    filled = run_ok(sb, f"{ask} | git credential fill")
    assert f"password={secret}" in filled
    sb.git.dangerously_authenticate("ann", "second-token")  # github.com over https
    assert "https://ann:second-token@github.com" in run_ok(sb, "cat ~/.git-credentials")
    for bad in ({"password": "a\nprotocol=http"}, {"username": "x\x00y"},
                {"host": "evil.test/path"}, {"protocol": "-x"}):  # fmt: skip
        fields = {"username": "u", "password": "p", **bad}
        with pytest.raises(DaytonaBadRequestError):
            sb.git.dangerously_authenticate(**fields)
    assert "evil" not in run_ok(sb, "cat ~/.git-credentials")
    # nowhere of the server's own: not in its log, not in its database (only in the
    # sandbox's own disk, under sandboxes/)
    assert secret not in server.log.read_text()
    for path in Path(server.data_dir).rglob("*"):
        if "sandboxes" in path.relative_to(server.data_dir).parts[:1]:
            continue
        if path.is_file() and not path.is_symlink() and path.stat().st_size < 64 * 1024 * 1024:
            assert secret.encode() not in path.read_bytes(), path


def test_option_injection_and_nul_are_refused(server: Server, sb) -> None:
    sb.git.init("inj/repo")
    refused = [
        lambda: sb.git.remote_add("inj/repo", "origin", "--upload-pack=touch /tmp/x"),
        lambda: sb.git.remote_add("inj/repo", "-f", "https://example.invalid/a.git"),
        lambda: sb.git.reset("inj/repo", target="--hard"),
        lambda: sb.git.restore("inj/repo", ["a"], source="--worktree"),
        lambda: sb.git.init("inj/other", initial_branch="-b"),
        lambda: sb.git.set_config("--global", "x"),
        lambda: sb.git.get_config("-l"),
        lambda: sb.git.set_config("nodot", "x"),
        lambda: sb.git.set_config("cove.x", "a\x00b"),
        lambda: sb.git.init("inj/\x00repo"),
        lambda: sb.git.restore("inj/repo", ["a\x00b"]),
        lambda: sb.git.remote_add("inj/repo", "origin", "https://a\x00b"),
    ]
    for call in refused:
        with pytest.raises(DaytonaBadRequestError):
            call()
    assert sb.git.remotes("inj/repo").remotes == []
    assert run_ok(sb, "test ! -e inj/other && echo absent") == "absent\n"


def test_config_that_runs_commands_runs_them_in_the_sandbox(sb) -> None:
    """The sandbox user may make git run commands (as exec may): as that user, inside."""
    mark = f"/tmp/cove-git-hook-{uuid.uuid4().hex}"
    sb.git.init("hook/repo")
    sb.git.set_config("core.fsmonitor", f"touch {mark}; false", scope="local", path="hook/repo")
    sb.git.status("hook/repo")
    assert run_ok(sb, f"stat -c %U {mark}") == "daytona\n"
    assert not os.path.exists(mark)  # nothing ran on the host
    sb.git.set_config("core.sshCommand", f"touch {mark}-ssh; false", scope="local",
                      path="hook/repo")  # fmt: skip
    sb.git.remote_add("hook/repo", "origin", "ssh://git@example.invalid/r.git")
    with pytest.raises(Exception):  # noqa: B017, PT011 - the fetch fails, the hook ran
        sb.git.remote_add("hook/repo", "up", "ssh://git@example.invalid/r.git", fetch=True)
    assert run_ok(sb, f"stat -c %U {mark}-ssh") == "daytona\n"
    assert not os.path.exists(f"{mark}-ssh")


def test_another_organization_gets_404(server: Server, sb, other_key: str) -> None:
    base = f"{server.url}/toolbox/{sb.id}"
    calls = [("POST", "/git/init", {"path": "x"}), ("POST", "/git/reset", {"path": "x"}),
             ("POST", "/git/restore", {"path": "x", "files": ["a"]}),
             ("GET", "/git/remotes?path=x", None),
             ("POST", "/git/remotes", {"path": "x", "name": "o", "url": "https://a"}),
             ("GET", "/git/config?key=user.name", None),
             ("POST", "/git/config", {"key": "user.name", "value": "x"}),
             ("POST", "/git/config/user", {"name": "x", "email": "y"}),
             ("POST", "/git/credentials", {"username": "u", "password": "p"}),
             ("POST", "/env", {"set": {"A": "b"}})]  # fmt: skip
    headers = {"Authorization": f"Bearer {other_key}"}
    for method, path, body in calls:
        r = httpx.request(method, base + path, json=body, headers=headers, timeout=30)
        assert r.status_code == 404, (path, r.status_code, r.text)
    assert "A" not in (httpx.get(f"{base}/env", timeout=30, headers={
        "Authorization": f"Bearer {server.api_key}"}).json())  # fmt: skip


def test_update_env(server: Server, client: Daytona, sandboxes: list) -> None:
    sandbox = client.create(CreateSandboxFromSnapshotParams(env_vars={"CREATED": "at-create"}))
    sandboxes.append(sandbox)
    sandbox.process.create_session("before")
    sandbox.update_env({"ADDED": "one two", "CREATED": "replaced"})
    assert run_ok(sandbox, 'echo "$ADDED|$CREATED"') == "one two|replaced\n"
    old = sandbox.process.execute_session_command(
        "before", SessionExecuteRequest(command='echo "[$ADDED]"'))
    assert old.output.strip() == "[]"  # a running shell keeps its environment
    sandbox.process.create_session("after")
    new = sandbox.process.execute_session_command(
        "after", SessionExecuteRequest(command='echo "[$ADDED]"'))
    assert new.output.strip() == "[one two]"
    sandbox.update_env({}, unset=["CREATED"])
    assert run_ok(sandbox, 'echo "${CREATED-unset}|$ADDED"') == "unset|one two\n"
    assert sandbox.process.exec("echo $ADDED", env={"ADDED": "per-call"}).result == "per-call\n"
    r = httpx.post(f"{server.url}/toolbox/{sandbox.id}/env", timeout=30,
                   headers={"Authorization": f"Bearer {server.api_key}"},
                   json={"set": {"SECRET_X": "placeholder:1", "KEEP": "placeholder:2"}})
    assert r.status_code == 200 and r.json()["SECRET_X"] == "placeholder:1"
    r = httpx.post(f"{server.url}/toolbox/{sandbox.id}/env", timeout=30,
                   headers={"Authorization": f"Bearer {server.api_key}"},
                   json={"set": {"KEEP": "placeholder:3"}, "unsetValuePrefix": "placeholder:"})
    assert "SECRET_X" not in r.json() and r.json()["KEEP"] == "placeholder:3"
    for bad in ({"A=B": "x"}, {"A": "x\x00y"}, {"": "x"}, {"BIG": "x" * 40_000}):
        with pytest.raises(DaytonaBadRequestError):
            sandbox.update_env(bad)
    with pytest.raises(DaytonaBadRequestError):
        sandbox.update_env({f"V{i}": "x" * 1000 for i in range(200)})  # > 128 KiB in all
    assert run_ok(sandbox, 'echo "${BIG-none}"') == "none\n"
    # as with Daytona's daemon, the change lasts until the sandbox stops
    sandbox.stop()
    sandbox.start()
    assert run_ok(sandbox, 'echo "${ADDED-gone}|$CREATED"') == "gone|at-create\n"


async def test_async_sdk(server: Server) -> None:
    config = DaytonaConfig(api_key=server.api_key, api_url=server.api_url)
    async with AsyncDaytona(config) as client:
        sandbox = await client.create()
        try:
            await sandbox.git.init("as/repo", initial_branch="main")
            await sandbox.git.configure_user("Async", "a@example.com", scope="local",
                                             path="as/repo")  # fmt: skip
            assert await sandbox.git.get_config("user.name", "local", "as/repo") == "Async"
            await sandbox.git.set_config("cove.async", "yes")
            assert await sandbox.git.get_config("cove.async") == "yes"
            await sandbox.git.remote_add("as/repo", "origin", "https://example.invalid/r.git")
            remotes = (await sandbox.git.remotes("as/repo")).remotes
            assert [(r.name, r.url) for r in remotes] == [
                ("origin", "https://example.invalid/r.git")]
            await sandbox.fs.upload_file(b"x\n", "as/repo/x.txt")
            await sandbox.git.add("as/repo", ["x.txt"])
            await sandbox.git.commit("as/repo", "x", "Async", "a@example.com")
            await sandbox.fs.upload_file(b"y\n", "as/repo/x.txt")
            await sandbox.git.add("as/repo", ["x.txt"])
            await sandbox.git.restore("as/repo", ["x.txt"], staged=True)
            await sandbox.git.restore("as/repo", ["x.txt"])
            await sandbox.git.reset("as/repo", mode="hard")
            assert (await sandbox.git.status("as/repo")).file_status == []
            await sandbox.git.dangerously_authenticate("u", "async-token", host="h.test")
            await sandbox.update_env({"ASYNC_VAR": "set"})
            done = await sandbox.process.exec("echo $ASYNC_VAR; cat ~/.git-credentials")
            assert done.result == "set\nhttps://u:async-token@h.test\n"
        finally:
            await sandbox.delete()


def test_typescript_sdk(server: Server) -> None:
    node = shutil.which("node")
    if node is None or not (TS / "node_modules" / "@daytonaio" / "sdk").is_dir():
        pytest.fail("Node.js and tests/ts/node_modules are needed: run scripts/install")
    done = subprocess.run([node, "git_env_check.js", server.api_url, server.api_key], cwd=TS,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["localName"] == "TS User" and out["globalValue"] == "value with spaces"
    assert out["unset"] is None
    assert out["restored"] == "one\n" and out["reset"] == "one\n"
    assert out["remotes"] == [{"name": "origin", "url": "https://example.invalid/b.git"}]
    assert out["remoteGet"] == "https://example.invalid/b.git"
    assert out["branch"] == "trunk"
    assert out["credentials"] == "600 daytona\nhttps://ts-user:ts-token-secret@git.example.test\n"
    assert "url" in out["dashUrl"].lower() or "pattern" in out["dashUrl"].lower()
    assert out["env"] == "from-ts/gone\n"
