"""Git in the sandbox, run as the sandbox user with the sandbox's own ``git``.

Credentials never reach argv, the URL or the repository's config: git asks a
one-shot ``GIT_ASKPASS`` helper, which reads them from its environment. Failures
become Daytona's ``GIT_*`` codes (see :mod:`.git_errors`), so the SDK raises its
precise exceptions.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from . import confine, protocol, users
from .agent import Request, op
from .git_errors import classify
from .git_status import parse_status
from .process import kill_tree

ASKPASS = """#!/bin/sh
case "$1" in
  [Uu]sername*) printf '%s\\n' "$COVE_GIT_USERNAME" ;;
  *) printf '%s\\n' "$COVE_GIT_PASSWORD" ;;
esac
"""


@dataclass
class Git:
    """The git of one request: who runs it, where, and with which credentials."""

    user: users.User
    repo: str
    env: dict[str, str]
    secrets: tuple[str, ...] = ()

    async def run(self, *args: str, check: str | None = None, cwd: str | None = None,
                  stdin: bytes | None = None) -> str:
        """``git -C repo args`` (fed ``stdin``); its stdout. With ``check`` (the
        operation's name), a failure raises the matching AgentError."""
        code, out, err = await self.call(*args, cwd=cwd, stdin=stdin)
        if check and code != 0:
            raise self.failure(check, err + out)
        return out

    def failure(self, operation: str, output: str) -> protocol.AgentError:
        """The error of ``git <operation>`` failing with ``output`` (secrets redacted)."""
        return classify(operation, self._redact(output))

    async def call(self, *args: str, cwd: str | None = None,
                   stdin: bytes | None = None) -> tuple[int, str, str]:
        """Run ``git -C repo args``: its exit code, stdout and stderr."""
        argv = ["git", *(["-C", self.repo] if cwd is None else []), *args]
        group = confine.Group()
        pipe = asyncio.subprocess.PIPE
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL if stdin is None else pipe,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                **users.spawn_kwargs(self.user, cwd or self.user.home, self.env, group))
        except FileNotFoundError:
            group.close()
            raise protocol.AgentError(500, "GIT_NOT_INSTALLED", "git is not installed") from None
        try:
            out, err = await proc.communicate(stdin)
        finally:
            if proc.returncode is None:
                kill_tree(proc.pid, group)
            group.close()
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


@contextmanager
def git_for(request: Request, path_field: str = "path", askpass: bool = True) -> Iterator[Git]:
    """A :class:`Git` for the request, with an askpass helper when it carries credentials
    (and ``askpass``)."""
    user = users.lookup(request.arg("user", str, None))
    path = request.arg(path_field, str, None)
    repo = os.path.normpath(os.path.join(user.home, path)) if path else user.home
    env = {**(request.arg("env", dict, None) or {}), "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
    username = request.arg("username", str, None) or ""
    password = request.arg("password", str, None) or ""
    if not askpass or not (username or password):
        yield Git(user, repo, env)
        return
    helper = tempfile.mkdtemp(prefix="cove-git-")
    try:
        script = os.path.join(helper, "askpass")
        with open(os.open(script, os.O_WRONLY | os.O_CREAT, 0o700), "w") as f:
            f.write(ASKPASS)
        for item in (helper, script):
            os.chown(item, user.uid, user.gid)
        env.update(GIT_ASKPASS=script, COVE_GIT_USERNAME=username or "git",
                   COVE_GIT_PASSWORD=password)
        yield Git(user, repo, env, tuple(s for s in (username, password) if len(s) > 2))
    finally:
        shutil.rmtree(helper, ignore_errors=True)


@op("git_clone")
async def clone(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        args = ["clone"]
        if request.arg("insecure_skip_tls", bool, False):
            args = ["-c", "http.sslVerify=false", "clone"]
        if branch := request.arg("branch", str, None):
            args += ["--branch", branch]
        if depth := request.arg("depth", int, None):
            args += ["--depth", str(depth)]
        await git.run(*args, "--", request.arg("url"), git.repo, check="clone", cwd=git.user.home)
        if commit := request.arg("commit_id", str, None):
            await git.run("checkout", "--detach", commit, "--", check="checkout")
    return {}


@op("git_status")
async def status(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        out = await git.run("status", "--porcelain=v2", "--branch", "-z", check="status")
    return {"status": parse_status(out)}


@op("git_add")
async def add(request: Request) -> dict[str, Any]:
    files = [str(f) for f in request.arg("files", list)] or ["."]
    with git_for(request) as git:
        await git.run("add", "--", *files, check="add")
    return {}


@op("git_commit")
async def commit(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        author, email = request.arg("author", str, None), request.arg("email", str, None)
        for role in ("AUTHOR", "COMMITTER"):
            if author:
                git.env[f"GIT_{role}_NAME"] = author
            if email:
                git.env[f"GIT_{role}_EMAIL"] = email
        extra = ["--allow-empty"] if request.arg("allow_empty", bool, False) else []
        await git.run("commit", "-m", request.arg("message"), *extra, check="commit")
        sha = await git.run("rev-parse", "HEAD", check="commit")
    return {"hash": sha.strip()}


@op("git_branches")
async def branches(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        out = await git.run("for-each-ref", "--format=%(HEAD)%(refname:short)", "refs/heads",
                            check="branches")
    lines = [line for line in out.splitlines() if line]
    current = next((line[1:] for line in lines if line.startswith("*")), "")
    return {"branches": [line[1:] for line in lines], "current": current}


@op("git_branch_create")
async def branch_create(request: Request) -> dict[str, Any]:
    """Create the branch and switch to it (as Daytona's daemon does)."""
    with git_for(request) as git:
        await git.run("checkout", "-b", request.arg("name"), check="branch")
    return {}


@op("git_branch_delete")
async def branch_delete(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        await git.run("branch", "-D", "--", request.arg("name"), check="branch_delete")
    return {}


@op("git_checkout")
async def checkout(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        await git.run("checkout", request.arg("branch"), "--", check="checkout")
    return {}


@op("git_pull")
async def pull(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        target = _remote_args(request)
        await git.run("pull", "--no-rebase", "--no-edit", *target, check="pull")
    return {}


@op("git_push")
async def push(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        branch = request.arg("branch", str, None)
        if not branch:
            branch = (await git.run("symbolic-ref", "--short", "HEAD", check="push")).strip()
        upstream = ["--set-upstream"] if request.arg("set_upstream", bool, False) else []
        remote = request.arg("remote", str, None) or "origin"
        await git.run("push", *upstream, "--", remote, branch, check="push")
    return {}


def _remote_args(request: Request) -> list[str]:
    remote, branch = request.arg("remote", str, None), request.arg("branch", str, None)
    if branch:
        return [remote or "origin", branch]
    return [remote] if remote else []
