"""Git administration through the real agent (in process), and its pure parts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError
from starlette.testclient import TestClient

from cove.agent.git_admin import parse_remotes
from cove.agent.git_errors import classify
from cove.schemas.toolbox import UpdateEnvRequest
from cove.schemas.toolbox_git import GitAuthenticateRequest, GitConfigKey, GitName, GitUrl
from tests.unit.agent.conftest import AUTH


def test_parse_remotes_keeps_fetch_urls_in_order() -> None:
    out = ("origin\thttps://a/x.git (fetch)\norigin\thttps://a/push.git (push)\n"
           "up\t/path with space (fetch)\nup\t/path with space (push)\n")  # fmt: skip
    assert parse_remotes(out) == [{"name": "origin", "url": "https://a/x.git"},
                                  {"name": "up", "url": "/path with space"}]  # fmt: skip
    assert parse_remotes("") == []


@pytest.mark.parametrize(("operation", "output", "status", "code"), [
    ("remote_add", "error: remote origin already exists.", 409, "CONFLICT"),
    ("restore", "error: pathspec 'x' did not match any file(s) known to git", 404,
     "FILE_NOT_FOUND"),
    ("config", "fatal: --local can only be used inside a git repository", 404,
     "GIT_REPO_NOT_FOUND"),
    ("config", "error: could not lock config file /etc/gitconfig: Permission denied", 403,
     "FORBIDDEN"),
    ("reset", "fatal: Cannot do hard reset with paths.", 400, "BAD_REQUEST"),
])  # fmt: skip
def test_failures_map_to_daytona_codes(operation: str, output: str, status: int,
                                       code: str) -> None:  # fmt: skip
    error = classify(operation, output)
    assert (error.status, error.code) == (status, code)


@pytest.mark.parametrize(("kind", "good", "bad"), [
    (GitName, ["main", "feature/x", "v1.0"], ["-b", "--hard", "a b", "a\x00", ""]),
    (GitUrl, ["https://h/r.git", "file:///tmp/r", "git@h:r.git"],
     ["-oProxyCommand=x", "--upload-pack=x", "https://a\nb", "a\x00"]),
    (GitConfigKey, ["user.name", 'url.https://x/.insteadOf', 'a.sub "q".b', "core.sshCommand"],
     ["nodot", "-x.y", "--global", "a.b\n.c", "a.", ".a", "a.1b"]),
])  # fmt: skip
def test_git_values_that_could_be_options_are_refused(kind: object, good: list[str],
                                                      bad: list[str]) -> None:  # fmt: skip
    adapter = TypeAdapter(kind)
    for value in good:
        adapter.validate_python(value)
    for value in bad:
        with pytest.raises(ValidationError):
            adapter.validate_python(value)


def test_credentials_and_env_bodies_are_bounded() -> None:
    for bad in ({"password": "a\nb"}, {"username": "a\rb"}, {"host": "h/p"},
                {"host": "user@h"}, {"protocol": "HTTP"}):  # fmt: skip
        with pytest.raises(ValidationError):
            GitAuthenticateRequest.model_validate({"username": "u", "password": "p", **bad})
    for bad in ({"set": {"A=B": "x"}}, {"set": {"A": "\x00"}}, {"unset": ["A=B"]},
                {"unsetValuePrefix": ""}):  # fmt: skip
        with pytest.raises(ValidationError):
            UpdateEnvRequest.model_validate(bad)


def _git(client: TestClient, sid: str, method: str, path: str, **kwargs: object):
    return client.request(method, f"/toolbox/{sid}/git/{path}", headers=AUTH, **kwargs)


def test_init_remotes_config_through_the_agent(client: TestClient, sandbox_id: str,
                                               tmp_path: Path) -> None:  # fmt: skip
    repo = str(tmp_path / "r")
    r = _git(client, sandbox_id, "POST", "init", json={"path": repo, "initial_branch": "trunk"})
    assert r.status_code == 201
    head = subprocess.run(["git", "-C", repo, "symbolic-ref", "HEAD"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    assert head == "refs/heads/trunk\n"
    body = {"path": repo, "name": "origin", "url": "https://example.invalid/r.git"}
    assert _git(client, sandbox_id, "POST", "remotes", json=body).status_code == 201
    assert _git(client, sandbox_id, "POST", "remotes", json=body).status_code == 409
    listed = _git(client, sandbox_id, "GET", "remotes", params={"path": repo}).json()
    assert listed == {"remotes": [{"name": "origin", "url": "https://example.invalid/r.git"}]}
    local = {"path": repo, "scope": "local"}
    r = _git(client, sandbox_id, "POST", "config", json={**local, "key": "a.b", "value": "-v"})
    assert r.status_code == 200
    got = _git(client, sandbox_id, "GET", "config", params={**local, "key": "a.b"}).json()
    assert got == {"value": "-v"}
    got = _git(client, sandbox_id, "GET", "config", params={**local, "key": "a.none"}).json()
    assert got == {"value": None}
    r = _git(client, sandbox_id, "GET", "config", params={"scope": "local", "key": "a.b"})
    assert r.status_code == 400 and "path" in r.json()["message"]
