"""Git in the sandbox beyond the daily loop: init, reset, restore, remotes, config
and stored credentials, run as the sandbox user with the sandbox's own ``git``.

Every name or revision comes after ``--`` or in an ``--option=value`` form, and
the server refuses ones that begin with ``-``, so none is taken for an option.
Config keys are the user's own: a key that makes git run a command
(``core.sshCommand``, ``core.fsmonitor``, ``alias.*``) runs it as the sandbox user
inside the sandbox, as ``exec`` would.
"""

from __future__ import annotations

from typing import Any

from . import protocol
from .agent import Request, op
from .git import Git, git_for

SCOPES = ("global", "local", "system")


@op("git_init")
async def init(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        args = ["init", "--quiet"]
        if request.arg("bare", bool, False):
            args.append("--bare")
        if branch := request.arg("initial_branch", str, None):
            args.append(f"--initial-branch={branch}")
        await git.run(*args, "--", git.repo, check="init", cwd=git.user.home)
    return {}


@op("git_reset")
async def reset(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        args = ["reset", "--quiet"]
        if mode := request.arg("mode", str, None):
            args.append(f"--{mode}")
        if target := request.arg("target", str, None):
            args.append(target)
        files = [str(f) for f in request.arg("files", list, None) or []]
        await git.run(*args, "--", *files, check="reset")
    return {}


@op("git_restore")
async def restore(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        args = ["restore"]
        if request.arg("staged", bool, False):
            args.append("--staged")
        if request.arg("worktree", bool, False):
            args.append("--worktree")
        if source := request.arg("source", str, None):
            args.append(f"--source={source}")
        files = [str(f) for f in request.arg("files", list)]
        await git.run(*args, "--", *files, check="restore")
    return {}


@op("git_remotes")
async def remotes(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        out = await git.run("remote", "-v", check="remotes")
    return {"remotes": parse_remotes(out)}


def parse_remotes(out: str) -> list[dict[str, str]]:
    """``git remote -v``'s fetch URLs, in order: ``[{"name", "url"}]``."""
    found: list[dict[str, str]] = []
    for line in out.splitlines():
        name, _, rest = line.partition("\t")
        url, _, kind = rest.rpartition(" ")
        if name and kind == "(fetch)":
            found.append({"name": name, "url": url})
    return found


@op("git_remote_add")
async def remote_add(request: Request) -> dict[str, Any]:
    name, url = request.arg("name"), request.arg("url")
    with git_for(request) as git:
        exists = any(r["name"] == name for r in parse_remotes(
            await git.run("remote", "-v", check="remote_add")))
        if exists and request.arg("overwrite", bool, False):
            await git.run("remote", "set-url", "--", name, url, check="remote_add")
        else:
            await git.run("remote", "add", "--", name, url, check="remote_add")
        if request.arg("fetch", bool, False):
            await git.run("fetch", "--quiet", "--", name, check="fetch")
    return {}


def _scope(request: Request, git: Git) -> tuple[list[str], str | None]:
    """The ``git config`` scope flag and the directory to run it in."""
    scope = request.arg("scope", str, None) or "global"
    if scope not in SCOPES:
        raise protocol.bad_request(f"scope must be one of {', '.join(SCOPES)}")
    if scope != "local":
        return [f"--{scope}"], git.user.home
    if not request.arg("path", str, None):
        raise protocol.bad_request("path is required for the local scope")
    return ["--local"], None


@op("git_config_get")
async def config_get(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        flags, cwd = _scope(request, git)
        if cwd is None:  # a local key needs the repository (git reads nothing otherwise)
            await git.run("rev-parse", "--git-dir", check="config")
        code, out, err = await git.call("config", *flags, "--get", "--", request.arg("key"),
                                        cwd=cwd)
    if code == 1 and not err.strip():
        return {"value": None}  # git says nothing and exits 1: the key is not set
    if code != 0:
        raise git.failure("config", err + out)
    return {"value": out.removesuffix("\n")}


@op("git_config_set")
async def config_set(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        await _set(request, git, {request.arg("key"): request.arg("value")})
    return {}


@op("git_config_user")
async def config_user(request: Request) -> dict[str, Any]:
    with git_for(request) as git:
        await _set(request, git, {"user.name": request.arg("name"),
                                  "user.email": request.arg("email")})
    return {}


async def _set(request: Request, git: Git, values: dict[str, str]) -> None:
    flags, cwd = _scope(request, git)
    for key, value in values.items():
        await git.run("config", *flags, "--replace-all", "--", key, value, check="config",
                      cwd=cwd)


@op("git_credentials")
async def credentials(request: Request) -> dict[str, Any]:
    """Store the credentials in git's credential store (``~/.git-credentials``, which
    git keeps at mode 0600) and make it the user's global credential helper."""
    username, password = request.arg("username"), request.arg("password")
    fields = {"protocol": request.arg("protocol", str, None) or "https",
              "host": request.arg("host", str, None) or "github.com",
              "username": username, "password": password}
    if any(c in v for v in fields.values() for c in "\n\r\x00"):
        raise protocol.bad_request("credentials may not contain line breaks or NUL")
    with git_for(request, askpass=False) as git:
        git.secrets = tuple(s for s in (username, password) if len(s) > 2)
        home = git.user.home
        await git.run("config", "--global", "--replace-all", "credential.helper", "store",
                      check="credentials", cwd=home)
        entry = "".join(f"{k}={v}\n" for k, v in fields.items()) + "\n"
        await git.run("-c", "credential.helper=store", "credential", "approve",
                      check="credentials", cwd=home, stdin=entry.encode())
    return {}
